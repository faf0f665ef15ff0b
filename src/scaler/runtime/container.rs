//! What a worker container is, as pure values: its labels, the filters that find it, its hardened create body, its CPU limit, and what a listing does with it.
//!
//! Every container the Docker runtime starts carries three labels:
//! `gantry.managed=true`, `gantry.deployment=<scaler.deployment>` and
//! `gantry.pool=<pool>`. [`filters`] names all three (the pool when known),
//! and [`is_ours`] checks them again before a container is stopped.
//!
//! Its name says its role ([`name`]): `gantry-<pool>-<8 hex>` serves,
//! `gantry-<pool>-warm-<8 hex>` is a warm spare. Labels cannot change after
//! creation and a name can (`docker rename` is atomic in the engine), so a
//! promotion is a rename, and a restarted scaler reads the role back from
//! the name ([`is_warm`]).
//!
//! It runs hardened whatever the image says: as `scaler.docker.user` (never
//! root), with a read-only root filesystem and a small `noexec` tmpfs on
//! `/tmp`, every capability dropped, `no-new-privileges`, the policy's
//! memory (no swap on top) and pids limits, on a user-defined network (the
//! config refuses `host`). The engine is never asked for more.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, PortBinding};

use super::{ReplicaSpec, DEPLOYMENT_LABEL, MANAGED_LABEL, POOL_LABEL};
use crate::scaler::config::DockerConfig;

/// The only writable place in a worker container (ONNX Runtime and the
/// standard library may want a temporary file); bounded, never executable.
pub const TMPFS: (&str, &str) = ("/tmp", "rw,noexec,nosuid,nodev,size=64m");

/// The name of a new container of `pool`: `gantry-<pool>-[warm-]<suffix>`.
pub fn name(pool: &str, warm: bool, suffix: u32) -> String {
    let role = if warm { "warm-" } else { "" };
    format!("gantry-{pool}-{role}{suffix:08x}")
}

/// Whether a container of `pool` named `names` (as the engine lists them,
/// with a leading `/`) is a warm spare. Exact for any pool name: a serving
/// container of pool `a-warm` is `gantry-a-warm-<hex>`, which is not
/// `gantry-a-warm-warm-<hex>`.
pub fn is_warm(names: &[String], pool: &str) -> bool {
    let prefix = format!("gantry-{pool}-warm-");
    names.iter().any(|n| {
        n.trim_start_matches('/')
            .strip_prefix(&prefix)
            .is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// The labels of a container of `pool` in `deployment`.
pub fn labels(deployment: &str, pool: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED_LABEL.into(), "true".into()),
        (DEPLOYMENT_LABEL.into(), deployment.into()),
        (POOL_LABEL.into(), pool.into()),
    ])
}

/// `label=` filter values for the containers of `deployment` (of `pool`, when given).
pub fn filters(deployment: &str, pool: Option<&str>) -> Vec<String> {
    let mut out = vec![
        format!("{MANAGED_LABEL}=true"),
        format!("{DEPLOYMENT_LABEL}={deployment}"),
    ];
    out.extend(pool.map(|p| format!("{POOL_LABEL}={p}")));
    out
}

/// Whether a container with `found` labels belongs to `pool` of `deployment`.
pub fn is_ours(found: &HashMap<String, String>, deployment: &str, pool: &str) -> bool {
    labels(deployment, pool)
        .iter()
        .all(|(k, v)| found.get(k) == Some(v))
}

/// The create body of a replica of `spec.pool`.
pub fn create_body(
    config: &DockerConfig,
    deployment: &str,
    spec: &ReplicaSpec,
) -> ContainerCreateBody {
    let port = format!("{}/tcp", config.port);
    let port_bindings = config.publish.then(|| {
        HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
        )])
    });
    let env: Vec<String> = config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let memory = (spec.memory_mib * 1024 * 1024) as i64;
    ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: config.cmd.clone(),
        env: (!env.is_empty()).then_some(env),
        user: Some(config.user.clone()),
        labels: Some(labels(deployment, &spec.pool)),
        exposed_ports: Some(vec![port]),
        host_config: Some(HostConfig {
            network_mode: Some(config.network.clone()),
            port_bindings,
            nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
            memory: Some(memory),
            memory_swap: Some(memory),
            pids_limit: Some(i64::from(spec.pids)),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(TMPFS.0.into(), TMPFS.1.into())])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Docker's CFS period when a container sets a quota without one, microseconds.
const DEFAULT_CPU_PERIOD: i64 = 100_000;

/// The cores a container may use, from its inspected host config: `NanoCpus`
/// (`--cpus`), else `CpuQuota` / `CpuPeriod`; `None` when unlimited. Read
/// from the engine, so an adopted container's CPU % is of its own limit.
pub fn cpu_limit(host: Option<&HostConfig>) -> Option<f64> {
    let host = host?;
    if let Some(n) = host.nano_cpus.filter(|n| *n > 0) {
        return Some(n as f64 / 1e9);
    }
    let quota = host.cpu_quota.filter(|q| *q > 0)?;
    let period = host
        .cpu_period
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_CPU_PERIOD);
    Some(quota as f64 / period as f64)
}

/// What listing a pool does with one of its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Running: a replica.
    Replica,
    /// Exited, dead, or created and never started (a start cut short): removed.
    Remove,
    /// On its way somewhere (restarting, paused, being removed): left alone.
    Skip,
}

/// What a listing does with a container in `state`. A container is only in
/// `created` between the two calls of the runtime's own start, which runs on
/// the same loop as the listing of its pool; any other is left over.
pub fn listed(state: Option<ContainerSummaryStateEnum>) -> Listed {
    use ContainerSummaryStateEnum as S;
    match state {
        Some(S::RUNNING) => Listed::Replica,
        Some(S::EXITED | S::DEAD | S::CREATED) => Listed::Remove,
        _ => Listed::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_limit_comes_from_nano_cpus_or_the_quota() {
        let check = |nano, quota, period, want: Option<f64>| {
            let host = HostConfig {
                nano_cpus: nano,
                cpu_quota: quota,
                cpu_period: period,
                ..Default::default()
            };
            assert_eq!(
                cpu_limit(Some(&host)),
                want,
                "{nano:?} {quota:?} {period:?}"
            );
        };
        check(Some(1_500_000_000), None, None, Some(1.5));
        check(Some(0), Some(50_000), None, Some(0.5));
        check(None, Some(200_000), Some(50_000), Some(4.0));
        check(None, Some(-1), None, None);
        check(None, None, None, None);
        assert_eq!(cpu_limit(None), None);
    }

    #[test]
    fn exited_dead_and_never_started_containers_are_removed() {
        use ContainerSummaryStateEnum as S;
        let check = |state, want| assert_eq!(listed(state), want, "{state:?}");
        check(Some(S::RUNNING), Listed::Replica);
        check(Some(S::EXITED), Listed::Remove);
        check(Some(S::DEAD), Listed::Remove);
        check(Some(S::CREATED), Listed::Remove);
        check(Some(S::RESTARTING), Listed::Skip);
        check(Some(S::PAUSED), Listed::Skip);
        check(Some(S::REMOVING), Listed::Skip);
        check(None, Listed::Skip);
    }

    fn spec() -> ReplicaSpec {
        ReplicaSpec {
            pool: "analysis".into(),
            warm: false,
            cpus: Some(1.5),
            memory_mib: 512,
            pids: 100,
            model: None,
        }
    }

    #[test]
    fn containers_are_hardened_and_limited() {
        let body = create_body(&DockerConfig::default(), "prod", &spec());
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        let host = body.host_config.unwrap();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.pids_limit, Some(100));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.memory_swap, host.memory, "no swap on top");
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("gantry"));
        assert!(host.privileged.is_none() && host.cap_add.is_none());
    }

    #[test]
    fn the_name_says_whether_a_container_is_a_warm_spare() {
        let names = |n: String| vec![format!("/{n}")];
        assert_eq!(
            name("analysis", true, 0xab),
            "gantry-analysis-warm-000000ab"
        );
        assert!(is_warm(&names(name("analysis", true, 7)), "analysis"));
        assert!(!is_warm(&names(name("analysis", false, 7)), "analysis"));
        // A pool whose name ends in -warm: its serving containers are not spares.
        assert!(!is_warm(&names(name("a-warm", false, 7)), "a-warm"));
        assert!(is_warm(&names(name("a-warm", true, 7)), "a-warm"));
        assert!(!is_warm(
            &names("gantry-analysis-warm-nothex!".into()),
            "analysis"
        ));
        assert!(!is_warm(&[], "analysis"));
    }

    #[test]
    fn only_all_three_labels_make_a_container_ours() {
        let mine = labels("prod", "analysis");
        assert!(is_ours(&mine, "prod", "analysis"));
        assert!(!is_ours(&mine, "staging", "analysis"));
        assert!(!is_ours(&mine, "prod", "other"));
        let mut old = mine.clone();
        old.remove(DEPLOYMENT_LABEL);
        assert!(!is_ours(&old, "prod", "analysis"), "no deployment label");
        assert_eq!(
            filters("prod", Some("analysis")),
            [
                "gantry.managed=true",
                "gantry.deployment=prod",
                "gantry.pool=analysis"
            ]
        );
    }
}
