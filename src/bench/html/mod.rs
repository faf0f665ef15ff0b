//! The `--report` page: one self-contained HTML file (inline CSS and SVG, no script, no external asset) with cards, charts and tables, light and dark.

use std::fmt::Write as _;

use html_escape::encode_text as esc;

use super::chart;
use super::report::Report;
use super::slo::Verdict;

mod panels;
mod tables;

use panels::charts;
use tables::tables;

const CSS: &str = include_str!("../report.css");

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
