//! `gantry status`: pools, backends and the scaler's last decisions, read from the admin API.

use std::fmt::Write;

use crate::admin::client::{AdminClient, AdminError};
use crate::admin::{PoolView, ScalerJournal, Starts};

/// Decisions shown per pool.
const SHOWN: usize = 5;

/// Reads pools from `admin` and decisions from `scaler` (usually the same
/// admin address; a scaler that cannot be read shows no decisions) and
/// renders them as text.
pub async fn fetch(admin: &str, scaler: &str) -> Result<String, AdminError> {
    let pools = AdminClient::new(admin, None).pools().await?;
    let journal = AdminClient::new(scaler, None)
        .scaler()
        .await
        .unwrap_or_default();
    Ok(render(&pools, &journal))
}

/// The text of `gantry status`.
pub fn render(pools: &[PoolView], journal: &ScalerJournal) -> String {
    let mut out = String::new();
    for p in pools {
        let _ = writeln!(out, "pool {} ({})", p.name, p.policy);
        if p.backends.is_empty() {
            let _ = writeln!(out, "  no backends");
        }
        for b in &p.backends {
            let _ = writeln!(
                out,
                "  {:<22} {:<9} in flight {}",
                b.addr, b.state, b.inflight
            );
        }
        let pool = journal.get(&p.name);
        if let Some(l) = pool.and_then(|j| j.leader.as_ref()) {
            let _ = match (l.leading, &l.leader) {
                (true, _) => writeln!(out, "  scaler lease: leading ({})", l.me),
                (false, Some(who)) => {
                    writeln!(out, "  scaler lease: standing by ({}); {who} leads", l.me)
                }
                (false, None) => writeln!(
                    out,
                    "  scaler lease: standing by ({}); no leader seen (Redis unreachable?)",
                    l.me
                ),
            };
        }
        if let Some(starts) = pool.map(|j| &j.starts).filter(|s| s.failures_in_a_row > 0) {
            failing(&mut out, starts);
        }
        match pool.map(|j| &j.decisions).filter(|d| !d.is_empty()) {
            None => {
                let _ = writeln!(out, "  scaler: no decisions");
            }
            Some(list) => {
                let last = &list[list.len() - 1];
                let warm = match last.warm {
                    0 => String::new(),
                    n => format!(", warm spares {n}"),
                };
                let _ = writeln!(
                    out,
                    "  scaler: desired {}, current {}, ready {}{warm}; last decisions (UTC):",
                    last.to, last.from, last.ready
                );
                for e in list.iter().rev().take(SHOWN) {
                    let repeats = if e.repeats > 1 {
                        format!(" (x{})", e.repeats)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(out, "    {}  {}{repeats}", clock(e.at_unix_ms), e.message);
                }
            }
        }
    }
    out
}

/// The lines of a pool whose replicas keep failing to start.
fn failing(out: &mut String, s: &Starts) {
    let next = s.retry_at_unix_ms.map_or(String::new(), |at| {
        format!(", next try at {} UTC", clock(at))
    });
    let _ = writeln!(
        out,
        "  FAILING: {} replica start(s) failed in a row{next}",
        s.failures_in_a_row
    );
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "    last: {e}");
    }
}

/// `HH:MM:SS` of a Unix time in milliseconds, UTC.
fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::admin::{BackendState, Decision as Entry};
    use crate::admin::{BackendView, PoolJournal};

    #[test]
    fn renders_backends_and_newest_decisions_first() {
        let pools = vec![PoolView {
            name: "analysis".into(),
            policy: crate::config::Policy::P2c,
            backends: vec![BackendView {
                addr: "127.0.0.1:4000".into(),
                weight: 1,
                state: BackendState::Up,
                inflight: 2,
            }],
        }];
        let entry = |at: u64, from: u32, to: u32, msg: &str, repeats: u32| Entry {
            pool: "analysis".into(),
            at_unix_ms: at,
            from,
            to,
            ready: from,
            warm: 0,
            direction: "up".into(),
            reason: "metric".into(),
            message: msg.into(),
            repeats,
        };
        let mut j = PoolJournal {
            leader: None,
            decisions: vec![
                entry(3_600_000, 1, 2, "analysis 1 -> 2: below min 2", 1),
                entry(3_661_000, 2, 2, "analysis 2 -> 2: steady", 7),
            ],
            starts: Starts::default(),
        };
        let d = BTreeMap::from([("analysis".to_string(), j.clone())]);
        let text = render(&pools, &d);
        let want = "pool analysis (p2c)\n  127.0.0.1:4000         up        in flight 2\n  scaler: desired 2, current 2, ready 2; last decisions (UTC):\n    01:01:01  analysis 2 -> 2: steady (x7)\n    01:00:00  analysis 1 -> 2: below min 2\n";
        assert_eq!(text, want);

        let mut standby = j.clone();
        standby.leader = Some(crate::admin::Leadership {
            me: "b-2-00000002".into(),
            leading: false,
            leader: Some("a-1-00000001".into()),
        });
        let text = render(&pools, &BTreeMap::from([("analysis".to_string(), standby)]));
        assert!(
            text.contains("  scaler lease: standing by (b-2-00000002); a-1-00000001 leads\n"),
            "{text}"
        );

        let mut spares = j.clone();
        spares.decisions[1].warm = 1;
        let text = render(&pools, &BTreeMap::from([("analysis".to_string(), spares)]));
        assert!(
            text.contains("  scaler: desired 2, current 2, ready 2, warm spares 1; last"),
            "{text}"
        );

        j.starts = Starts {
            failures_in_a_row: 3,
            failures_total: 4,
            last_error: Some("exited before it was ready: exit status: 1: error: boom".into()),
            retry_at_unix_ms: Some(3_662_000),
        };
        let text = render(&pools, &BTreeMap::from([("analysis".to_string(), j)]));
        assert!(
            text.contains("  FAILING: 3 replica start(s) failed in a row, next try at 01:01:02 UTC\n    last: exited before it was ready: exit status: 1: error: boom\n"),
            "{text}"
        );
    }
}
