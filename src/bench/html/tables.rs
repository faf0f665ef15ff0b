//! The report's tables: per-stage numbers, findings and the SLO verdicts.

use std::fmt::Write as _;

use html_escape::encode_text as esc;

use crate::bench::record::ErrorKind;
use crate::bench::report::Report;
use crate::bench::slo::Verdict;

pub(super) fn tables(o: &mut String, r: &Report) {
    o.push_str("<div class=\"grid2\">");
    let l = &r.latency;
    o.push_str("<section class=\"panel\"><h2>Latency distribution</h2><table class=\"dist\">");
    let rows = [
        ("min", l.min_ms),
        ("p50", l.p50_ms),
        ("p90", l.p90_ms),
        ("p95", l.p95_ms),
        ("p99", l.p99_ms),
        ("p99.9", l.p999_ms),
        ("max", l.max_ms),
    ];
    for (name, v) in rows {
        let w = if l.max_ms > 0.0 {
            v / l.max_ms * 100.0
        } else {
            0.0
        };
        let _ = write!(o, "<tr><th>{name}</th><td class=\"num\">{v:.2} ms</td><td class=\"bar\"><span style=\"width:{w:.1}%\"></span></td></tr>");
    }
    let _ = write!(
        o,
        "<tr><th>mean</th><td class=\"num\">{:.2} ms</td><td>± {:.2}</td></tr></table></section>",
        l.mean_ms, l.stdev_ms
    );
    o.push_str("<section class=\"panel\"><h2>Outcomes</h2><table>");
    let _ = write!(
        o,
        "<tr><th>answered 2xx/3xx</th><td class=\"num\">{}</td></tr>",
        r.counts.ok
    );
    for k in ErrorKind::ALL {
        let n = r.counts.errors.get(k);
        let class = if n > 0 {
            " class=\"num bad\""
        } else {
            " class=\"num\""
        };
        let _ = write!(o, "<tr><th>{}</th><td{class}>{n}</td></tr>", k.as_str());
    }
    for (k, n) in &r.counts.cache {
        let _ = write!(
            o,
            "<tr><th>X-Cache {}</th><td class=\"num\">{n}</td></tr>",
            esc(k)
        );
    }
    o.push_str("</table></section></div>");
    stage_table(o, r);
    findings(o, r);
    slo_table(o, r);
}

fn stage_table(o: &mut String, r: &Report) {
    let _ = write!(o, "<section class=\"panel\"><h2>Stages</h2><table class=\"wide\"><tr><th>stage</th><th>{}</th><th>batch</th><th>requests</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>errors</th><th>cache hits</th></tr>", r.model.unit());
    for s in &r.stages {
        let g = &s.stage;
        let planned = g.planned(" → ");
        let hit = s
            .counts
            .cache_hit_percent
            .map_or("–".to_string(), |h| format!("{h:.1} %"));
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"num\">{planned}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.3} %</td><td class=\"num\">{hit}</td></tr>",
            esc(&g.label),
            g.batch.map_or("–".to_string(), |b| b.to_string()),
            s.counts.requests,
            s.throughput_rps,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.counts.error_percent
        );
    }
    o.push_str("</table></section>");
}

fn findings(o: &mut String, r: &Report) {
    let text = r.summary();
    let lines: Vec<&str> = (text.lines())
        .filter(|l| {
            [
                "breaking point",
                "last good",
                "spike:",
                "target memory",
                "note:",
            ]
            .iter()
            .any(|k| l.trim_start().starts_with(k))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    o.push_str("<section class=\"panel\"><h2>Findings</h2><ul class=\"findings\">");
    for l in lines {
        let _ = write!(o, "<li>{}</li>", esc(l.trim()));
    }
    o.push_str("</ul></section>");
}

fn slo_table(o: &mut String, r: &Report) {
    if r.slo.is_empty() {
        return;
    }
    o.push_str("<section class=\"panel\"><h2>Objectives</h2><table class=\"wide\"><tr><th>objective</th><th>limit</th><th>measured</th><th>verdict</th></tr>");
    for s in &r.slo {
        let op = match s.objective.bound {
            crate::bench::slo::Bound::AtMost => "≤",
            crate::bench::slo::Bound::AtLeast => "≥",
        };
        let measured = s
            .actual
            .map_or("not measured".to_string(), |a| format!("{a:.3}"));
        let class = match s.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NotMeasured => "na",
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"num\">{op} {}</td><td class=\"num\">{measured}</td><td><span class=\"badge {class}\">{}</span></td></tr>",
            esc(&s.objective.name),
            s.objective.limit,
            s.verdict.as_str()
        );
    }
    o.push_str("</table></section>");
}
