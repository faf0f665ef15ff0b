//! The report's charts: latency, throughput, errors, cache ratio, replicas with decision markers, and the target's resources, each a panel of series over the run's seconds.

use crate::bench::chart::{Chart, Marker, Series, Style};
use crate::bench::record::ErrorKind;
use crate::bench::report::{is_hit, Report, Second};

pub(super) type Panel = (String, Vec<(String, u8, bool)>, Chart);

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

fn series(r: &Report, f: impl Fn(&Second) -> Option<f64>) -> Vec<(f64, f64)> {
    r.timeline
        .iter()
        .filter_map(|s| f(s).map(|v| (s.t as f64 + 0.5, v)))
        .collect()
}

pub(super) fn charts(r: &Report) -> Vec<Panel> {
    let mut out = Vec::new();
    let mut lat = base(r, "chart-latency", "ms");
    let answered = |s: &Second| s.requests > s.errors.unsent;
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
    if r.model == crate::bench::plan::Model::Open {
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
    let share = |s: &Second, k: &str| {
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
        let pts = |f: fn(&crate::bench::observe::Replicas) -> u32| {
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
