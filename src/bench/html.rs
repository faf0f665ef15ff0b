//! The `--report` page: one self-contained HTML file (inline CSS and SVG, no script, no external asset) with cards, charts and tables, light and dark.

use std::fmt::Write as _;

use html_escape::encode_text as esc;

use super::chart::{self, Chart, Marker, Series, Style};
use super::record::ErrorKind;
use super::report::{is_hit, Report};
use super::slo::Verdict;

const CSS: &str = include_str!("report.css");

/// The page for `r`.
pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let title = format!("gantry bench: {} against {}", r.scenario, r.target);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\"><title>{}</title><style>{CSS}</style></head><body><main>",
        esc(&title)
    );
    header(&mut o, r);
    verdict(&mut o, r);
    cards(&mut o, r);
    for (title, legend, chart) in charts(r) {
        section(&mut o, &title, &legend, &chart::render(&chart));
    }
    if r.counts.errors.total() == 0 {
        let _ = write!(
            o,
            "<section class=\"panel quiet\"><h2>Errors</h2><p>None in {} requests.</p></section>",
            r.counts.requests
        );
    }
    tables(&mut o, r);
    let _ = writeln!(
        o,
        "<footer>gantry {} · report format {}</footer></main></body></html>",
        env!("CARGO_PKG_VERSION"),
        r.format
    );
    o
}

fn header(o: &mut String, r: &Report) {
    let started = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.started_unix_ms),
    );
    let _ = write!(
        o,
        "<header><h1><span class=\"scenario\">{}</span> {}</h1><p class=\"meta\">{} · {} loop, {} {} · {} · {:.0} s</p></header>",
        esc(&r.scenario),
        esc(&r.target),
        esc(&started),
        r.model.as_str(),
        r.connections,
        if r.model == super::plan::Model::Open { "connections" } else { "users at most" },
        esc(&r.mix),
        r.duration_s
    );
}

fn verdict(o: &mut String, r: &Report) {
    if r.slo.is_empty() {
        return;
    }
    let failed = r.slo.iter().filter(|s| s.verdict == Verdict::Fail).count();
    let checked = r
        .slo
        .iter()
        .filter(|s| s.verdict != Verdict::NotMeasured)
        .count();
    let (class, text) = if failed == 0 {
        ("pass", format!("All {checked} measured objectives held"))
    } else {
        (
            "fail",
            format!("{failed} of {checked} measured objectives failed"),
        )
    };
    let _ = write!(o, "<div class=\"verdict {class}\">{text}</div>");
}

fn card(o: &mut String, label: &str, value: String, note: &str, class: &str) {
    let _ = write!(
        o,
        "<div class=\"card {class}\"><div class=\"label\">{}</div><div class=\"value\">{}</div><div class=\"note\">{}</div></div>",
        esc(label),
        esc(&value),
        esc(note)
    );
}

fn cards(o: &mut String, r: &Report) {
    o.push_str("<div class=\"cards\">");
    card(
        o,
        "Throughput",
        format!("{:.1}", r.throughput_rps),
        "answers/s over the run",
        "",
    );
    card(
        o,
        "Peak",
        format!("{:.0}", r.peak_rps),
        "answers in the best second",
        "",
    );
    card(
        o,
        "p50",
        format!("{:.2} ms", r.latency.p50_ms),
        "median latency",
        "",
    );
    card(
        o,
        "p99",
        format!("{:.2} ms", r.latency.p99_ms),
        &format!("p99.9 {:.2} ms", r.latency.p999_ms),
        "",
    );
    let err_class = if r.counts.errors.total() > 0 {
        "bad"
    } else {
        "good"
    };
    card(
        o,
        "Errors",
        format!("{:.3} %", r.counts.error_percent),
        &format!("{} of {}", r.counts.errors.total(), r.counts.requests),
        err_class,
    );
    if let Some(hit) = r.counts.cache_hit_percent {
        card(
            o,
            "Cache hits",
            format!("{hit:.1} %"),
            "of answers with X-Cache",
            "",
        );
    }
    card(
        o,
        "In flight",
        format!("{}", r.max_in_flight),
        "most requests at once",
        "",
    );
    o.push_str("</div>");
}

fn section(o: &mut String, title: &str, legend: &[(String, u8, bool)], svg: &str) {
    let _ = write!(
        o,
        "<section class=\"panel\"><div class=\"panel-head\"><h2>{}</h2><ul class=\"legend\">",
        esc(title)
    );
    for (name, color, dashed) in legend {
        let d = if *dashed { " dashed" } else { "" };
        let _ = write!(
            o,
            "<li><span class=\"swatch b{color}{d}\"></span>{}</li>",
            esc(name)
        );
    }
    let _ = write!(o, "</ul></div>{svg}</section>");
}

type Panel = (String, Vec<(String, u8, bool)>, Chart);

fn base(r: &Report, id: &str, unit: &str) -> Chart {
    let x_max = r.timeline.len().max(1) as f64;
    let bands = r
        .stages
        .iter()
        .map(|s| (s.start_s, s.stage.label.clone()))
        .collect();
    Chart {
        id: id.into(),
        unit: unit.into(),
        x_max,
        bands,
        ..Chart::default()
    }
}

fn legend_of(c: &Chart) -> Vec<(String, u8, bool)> {
    c.series
        .iter()
        .map(|s| (s.name.clone(), s.color, s.style == Style::Dashed))
        .collect()
}

fn series(r: &Report, f: impl Fn(&super::report::Second) -> Option<f64>) -> Vec<(f64, f64)> {
    r.timeline
        .iter()
        .filter_map(|s| f(s).map(|v| (s.t as f64 + 0.5, v)))
        .collect()
}

fn charts(r: &Report) -> Vec<Panel> {
    let mut out = Vec::new();
    let mut lat = base(r, "chart-latency", "ms");
    let answered = |s: &super::report::Second| s.requests > s.errors.unsent;
    lat.series = vec![
        Series::new(
            "p50",
            1,
            Style::Line,
            series(r, |s| answered(s).then_some(s.p50_ms)),
        ),
        Series::new(
            "p90",
            2,
            Style::Line,
            series(r, |s| answered(s).then_some(s.p90_ms)),
        ),
        Series::new(
            "p99",
            3,
            Style::Line,
            series(r, |s| answered(s).then_some(s.p99_ms)),
        ),
        Series {
            scales: false,
            ..Series::new(
                "max",
                4,
                Style::Dashed,
                series(r, |s| answered(s).then_some(s.max_ms)),
            )
        },
    ];
    out.push(("Latency over time".to_string(), legend_of(&lat), lat));
    let mut tput = base(r, "chart-throughput", "req/s");
    tput.series = vec![Series::new(
        "answered",
        1,
        Style::Area,
        series(r, |s| Some(s.ok as f64)),
    )];
    if r.model == super::plan::Model::Open {
        tput.series.push(Series::new(
            "planned rate",
            5,
            Style::Dashed,
            series(r, |s| Some(s.planned)),
        ));
    } else {
        tput.series.push(Series {
            scales: false,
            ..Series::new("users", 5, Style::Dashed, series(r, |s| Some(s.planned)))
        });
    }
    out.push(("Throughput".to_string(), legend_of(&tput), tput));
    let mut err = base(r, "chart-errors", "errors/s");
    err.series = (ErrorKind::ALL.iter().enumerate())
        .map(|(i, k)| {
            Series::new(
                k.as_str(),
                i as u8 + 1,
                Style::Bar,
                series(r, |s| Some(s.errors.get(*k) as f64)),
            )
        })
        .collect();
    // Without errors an empty chart says less than one line does.
    if r.counts.errors.total() > 0 {
        out.push(("Errors".to_string(), legend_of(&err), err));
    }
    if r.counts.cache_hit_percent.is_some() {
        out.push(cache_chart(r));
    }
    if !r.observed.replicas.is_empty() || !r.observed.decisions.is_empty() {
        out.push(replica_chart(r));
    }
    out.extend(resource_charts(r));
    out
}

fn cache_chart(r: &Report) -> Panel {
    let mut c = base(r, "chart-cache", "% of answers");
    c.y_max = Some(100.0);
    let tiers: Vec<&String> = r.counts.cache.keys().collect();
    let share = |s: &super::report::Second, k: &str| {
        let total: u64 = s.cache.values().sum();
        (total > 0).then(|| s.cache.get(k).copied().unwrap_or(0) as f64 * 100.0 / total as f64)
    };
    c.series = (tiers.iter().enumerate())
        .map(|(i, k)| {
            let color = if is_hit(k) {
                (i % 3) as u8 + 1
            } else {
                6 - (i % 2) as u8
            };
            Series::new(k, color, Style::Bar, series(r, |s| share(s, k)))
        })
        .collect();
    ("Cache (X-Cache per second)".to_string(), legend_of(&c), c)
}

fn replica_chart(r: &Report) -> Panel {
    let mut c = base(r, "chart-replicas", "replicas");
    let pools: std::collections::BTreeSet<&str> = r
        .observed
        .replicas
        .iter()
        .map(|x| x.pool.as_str())
        .collect();
    for (i, pool) in pools.iter().enumerate().take(2) {
        let pts = |f: fn(&super::observe::Replicas) -> u32| {
            (r.observed.replicas.iter())
                .filter(|x| x.pool == *pool)
                .map(|x| (x.t, f64::from(f(x))))
                .collect::<Vec<_>>()
        };
        let offset = i as u8 * 3;
        c.series.push(Series::new(
            &format!("{pool} desired"),
            1 + offset,
            Style::Step,
            pts(|x| x.desired),
        ));
        c.series.push(Series::new(
            &format!("{pool} current"),
            2 + offset,
            Style::Step,
            pts(|x| x.current),
        ));
        c.series.push(Series::new(
            &format!("{pool} ready"),
            3 + offset,
            Style::Dashed,
            pts(|x| x.ready),
        ));
    }
    c.markers = (r.observed.decisions.iter())
        .map(|d| Marker {
            x: d.t,
            up: d.direction == "up",
            label: format!(
                "{} {} {} -> {}: {}",
                d.pool, d.direction, d.from, d.to, d.message
            ),
        })
        .collect();
    let mut legend = legend_of(&c);
    if !c.markers.is_empty() {
        legend.push(("scaling decision".to_string(), 4, false));
    }
    ("Replicas and scaling decisions".to_string(), legend, c)
}

fn resource_charts(r: &Report) -> Vec<Panel> {
    let res = &r.observed.resources;
    let mut out = Vec::new();
    let cpu: Vec<(f64, f64)> = res
        .iter()
        .filter_map(|s| s.process_cpu_percent.map(|v| (s.t, v)))
        .collect();
    let host: Vec<(f64, f64)> = res
        .iter()
        .filter_map(|s| s.host_cpu_percent.map(|v| (s.t, v)))
        .collect();
    if !cpu.is_empty() || !host.is_empty() {
        let mut c = base(r, "chart-cpu", "CPU %");
        c.series = vec![
            Series::new("target process (% of one core)", 1, Style::Line, cpu),
            Series::new("host (% of all cores)", 2, Style::Dashed, host),
        ];
        out.push(("Target CPU".to_string(), legend_of(&c), c));
    }
    let rss: Vec<(f64, f64)> = res
        .iter()
        .filter_map(|s| s.process_rss_bytes.map(|v| (s.t, v / 1048576.0)))
        .collect();
    if !rss.is_empty() {
        let mut c = base(r, "chart-memory", "MiB");
        c.series = vec![Series::new("target resident memory", 3, Style::Area, rss)];
        out.push(("Target memory".to_string(), legend_of(&c), c));
    }
    out
}

fn tables(o: &mut String, r: &Report) {
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
        let planned = if g.from == g.to {
            format!("{:.0}", g.to)
        } else {
            format!("{:.0} → {:.0}", g.from, g.to)
        };
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
            super::slo::Bound::AtMost => "≤",
            super::slo::Bound::AtLeast => "≥",
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
