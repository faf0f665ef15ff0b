//! Inline SVG time-series charts for the HTML report: lines, areas, stacked bars, stage bands and event markers.
//!
//! Colours are CSS classes (`s1`..`s6`) resolved by the page's stylesheet, so
//! one chart serves the light and the dark theme; legends and titles are
//! HTML around it. Written here rather than with a plotting crate because
//! those bake colours into the SVG, which a `prefers-color-scheme` page cannot
//! restyle.

use std::fmt::Write as _;

use html_escape::encode_text as esc;

/// Drawing area in SVG units.
const W: f64 = 960.0;
const H: f64 = 240.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 26.0;
/// Above this many points a series is thinned to the largest value per bucket.
const MAX_POINTS: usize = 1200;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// A line.
    Line,
    /// A thin dashed line.
    Dashed,
    /// A line with a translucent fill down to zero.
    Area,
    /// A step line (a value holds until the next point).
    Step,
    /// Bars stacked on the bars of earlier `Bar` series at the same x.
    Bar,
}

/// One series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Colour slot, 1..=6.
    pub color: u8,
    /// How it is drawn.
    pub style: Style,
    /// (x seconds, y) points, x ascending.
    pub points: Vec<(f64, f64)>,
    /// Whether it sets the y scale (a `max` line may run off the top instead).
    pub scales: bool,
}

impl Series {
    /// A series that sets the scale.
    pub fn new(name: &str, color: u8, style: Style, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.to_string(),
            color,
            style,
            points,
            scales: true,
        }
    }
}

/// A vertical event marker (a scaling decision).
#[derive(Debug, Clone)]
pub struct Marker {
    /// When, seconds.
    pub x: f64,
    /// Hover text.
    pub label: String,
    /// Up (triangle up) or down.
    pub up: bool,
}

/// A chart.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// `id` of the `<svg>` (tests and links find charts by it).
    pub id: String,
    /// Unit of the y axis (`ms`, `req/s`, `%`).
    pub unit: String,
    /// Right end of the x axis, seconds.
    pub x_max: f64,
    /// Series, drawn in order.
    pub series: Vec<Series>,
    /// Stage boundaries: (start seconds, label).
    pub bands: Vec<(f64, String)>,
    /// Event markers.
    pub markers: Vec<Marker>,
    /// Fixed top of the y axis (100 for percentages).
    pub y_max: Option<f64>,
}

/// 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
pub fn nice(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|v| *v >= raw * 0.999)
        .unwrap_or(10.0 * p)
}

fn fmt_num(v: f64) -> String {
    if v >= 1000.0 && v % 1000.0 == 0.0 {
        format!("{}k", v / 1000.0)
    } else {
        // Up to two decimals, trailing zeros dropped (0.25, 0.5, 12.5, 40).
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn fmt_time(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 60 {
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Keeps at most [`MAX_POINTS`]: the largest y of each bucket, so peaks stay.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let per = points.len().div_ceil(MAX_POINTS);
    (points.chunks(per))
        .map(|c| {
            c.iter()
                .copied()
                .fold((c[0].0, f64::MIN), |(x, y), p| (x, y.max(p.1)))
        })
        .collect()
}

struct Scale {
    x_max: f64,
    y_max: f64,
    y_step: f64,
}

impl Scale {
    fn x(&self, v: f64) -> f64 {
        LEFT + (v / self.x_max).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        H - BOTTOM - (v / self.y_max).clamp(0.0, 1.02) * (H - TOP - BOTTOM)
    }
}

/// The chart as an `<svg>` element.
pub fn render(c: &Chart) -> String {
    let series: Vec<Series> = c
        .series
        .iter()
        .map(|s| Series {
            points: thin(&s.points),
            ..s.clone()
        })
        .collect();
    let stacked = stack(&series);
    let top = series
        .iter()
        .filter(|s| s.scales && s.style != Style::Bar)
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(stacked.iter().map(|(_, _, top, _)| *top))
        .fold(0.0, f64::max);
    let (y_max, y_step) = match c.y_max {
        Some(m) => (m, m / 4.0),
        None => {
            // Gridlines at a round step, about five of them, with room above the top value.
            let step = nice(top * 1.08 / 5.0);
            (step * (top * 1.08 / step).ceil().max(1.0), step)
        }
    };
    let sc = Scale {
        x_max: c.x_max.max(1.0),
        y_max,
        y_step,
    };
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg id="{}" class="chart" viewBox="0 0 {W} {H}" role="img" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">"#,
        esc(&c.id)
    );
    let _ = write!(
        o,
        r#"<clipPath id="{}-clip"><rect x="{LEFT}" y="{TOP}" width="{}" height="{}"/></clipPath>"#,
        esc(&c.id),
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    axes(&mut o, &sc, &c.unit);
    bands(&mut o, &sc, &c.bands);
    let _ = write!(o, r#"<g clip-path="url(#{}-clip)">"#, esc(&c.id));
    let bar_w = ((W - LEFT - RIGHT) / sc.x_max * 0.8).clamp(0.6, 18.0);
    for (x, bottom, top, color) in &stacked {
        let _ = write!(
            o,
            r#"<rect class="f{color}" x="{:.1}" y="{:.1}" width="{bar_w:.1}" height="{:.1}"/>"#,
            sc.x(*x) + 0.5,
            sc.y(*top),
            (sc.y(*bottom) - sc.y(*top)).max(0.5)
        );
    }
    for s in series.iter().filter(|s| s.style != Style::Bar) {
        draw(&mut o, &sc, s);
    }
    o.push_str("</g>");
    markers(&mut o, &sc, &c.markers);
    o.push_str("</svg>");
    o
}

/// Bars as (x, bottom, top, colour), stacked per x in series order.
fn stack(series: &[Series]) -> Vec<(f64, f64, f64, u8)> {
    let mut base: std::collections::BTreeMap<u64, f64> = Default::default();
    let mut out = Vec::new();
    for s in series.iter().filter(|s| s.style == Style::Bar) {
        for (x, y) in s.points.iter().filter(|p| p.1 > 0.0) {
            let b = base.entry(x.to_bits()).or_insert(0.0);
            out.push((*x, *b, *b + y, s.color));
            *b += y;
        }
    }
    out
}

fn axes(o: &mut String, sc: &Scale, unit: &str) {
    let ticks = (sc.y_max / sc.y_step).round() as u32;
    for i in 0..=ticks {
        let v = sc.y_step * f64::from(i);
        let y = sc.y(v);
        let _ = write!(
            o,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/>"#,
            W - RIGHT
        );
        let _ = write!(
            o,
            r#"<text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        o,
        r#"<text class="unit" x="{}" y="{}" text-anchor="end">{}</text>"#,
        LEFT - 6.0,
        TOP - 12.0,
        esc(unit)
    );
    // Whole seconds, then whole minutes and hours: about eight labels.
    const STEPS: [f64; 14] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
    ];
    let step = STEPS
        .iter()
        .copied()
        .find(|s| *s >= sc.x_max / 8.0)
        .unwrap_or_else(|| nice(sc.x_max / 8.0));
    let mut t = 0.0;
    while t <= sc.x_max + 1e-9 {
        let x = sc.x(t);
        let _ = write!(
            o,
            r#"<text class="tick" x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - 8.0,
            fmt_time(t)
        );
        t += step;
    }
    let _ = write!(
        o,
        r#"<line class="axis" x1="{LEFT}" x2="{}" y1="{}" y2="{}"/>"#,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
}

fn bands(o: &mut String, sc: &Scale, bands: &[(f64, String)]) {
    for (i, (start, label)) in bands.iter().enumerate() {
        let x = sc.x(*start);
        if i > 0 {
            let _ = write!(
                o,
                r#"<line class="band" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}"/>"#,
                H - BOTTOM
            );
        }
        let _ = write!(
            o,
            r#"<text class="band-label" x="{:.1}" y="{}">{}</text>"#,
            x + 4.0,
            TOP - 4.0,
            esc(label)
        );
    }
}

fn draw(o: &mut String, sc: &Scale, s: &Series) {
    if s.points.is_empty() {
        return;
    }
    let mut d = String::new();
    let mut prev_y = None;
    for (i, (x, y)) in s.points.iter().enumerate() {
        let (px, py) = (sc.x(*x), sc.y(*y));
        if i == 0 {
            let _ = write!(d, "M{px:.1},{py:.1}");
        } else if s.style == Style::Step {
            let _ = write!(d, "L{px:.1},{:.1}L{px:.1},{py:.1}", prev_y.unwrap_or(py));
        } else {
            let _ = write!(d, "L{px:.1},{py:.1}");
        }
        prev_y = Some(py);
    }
    if s.style == Style::Area {
        let (x0, x1) = (sc.x(s.points[0].0), sc.x(s.points[s.points.len() - 1].0));
        let base = sc.y(0.0);
        let _ = write!(
            o,
            r#"<path class="f{} area" d="{d}L{x1:.1},{base:.1}L{x0:.1},{base:.1}Z"/>"#,
            s.color
        );
    }
    let dash = if s.style == Style::Dashed {
        " dashed"
    } else {
        ""
    };
    let _ = write!(
        o,
        r#"<path class="s{} line{dash}" d="{d}"><title>{}</title></path>"#,
        s.color,
        esc(&s.name)
    );
}

fn markers(o: &mut String, sc: &Scale, markers: &[Marker]) {
    for m in markers {
        let x = sc.x(m.x);
        let (tip, base, class) = if m.up {
            (TOP - 10.0, TOP, "up")
        } else {
            (TOP, TOP - 10.0, "down")
        };
        let _ = write!(
            o,
            r#"<g class="marker {class}"><line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}"/><path d="M{:.1},{base}L{:.1},{base}L{x:.1},{tip}Z"/><title>{}</title></g>"#,
            H - BOTTOM,
            x - 6.0,
            x + 6.0,
            esc(&m.label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_round_up_to_1_2_2_5_5() {
        let cases = [
            (0.0, 1.0),
            (0.7, 1.0),
            (1.3, 2.0),
            (2.2, 2.5),
            (3.0, 5.0),
            (7.0, 10.0),
            (420.0, 500.0),
            (2000.0, 2000.0),
        ];
        for (raw, want) in cases {
            assert_eq!(nice(raw), want, "{raw}");
        }
    }

    #[test]
    fn long_series_are_thinned_keeping_peaks() {
        let mut points: Vec<(f64, f64)> = (0..5000).map(|i| (f64::from(i), 1.0)).collect();
        points[2500].1 = 99.0;
        let t = thin(&points);
        assert!(t.len() <= MAX_POINTS);
        assert!(t.iter().any(|p| p.1 == 99.0));
    }

    #[test]
    fn a_chart_is_one_svg_with_its_series_and_markers() {
        let c = Chart {
            id: "lat".into(),
            unit: "ms".into(),
            x_max: 10.0,
            series: vec![Series::new(
                "p99 <b>",
                1,
                Style::Line,
                vec![(0.0, 1.0), (5.0, 3.0)],
            )],
            markers: vec![Marker {
                x: 2.0,
                label: "up 1 -> 2".into(),
                up: true,
            }],
            ..Chart::default()
        };
        let svg = render(&c);
        assert!(svg.starts_with("<svg id=\"lat\"") && svg.ends_with("</svg>"));
        assert!(svg.contains("<title>p99 &lt;b&gt;</title>"));
        assert!(svg.contains("marker up"));
    }
}
