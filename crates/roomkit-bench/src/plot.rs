//! The plot of the fan-out comparison, as a small hand-written SVG: two panels, deliveries per
//! second (linear from 0) and p99 latency (log scale, since it spans milliseconds to seconds)
//! against the number of members (log scale), roomkit and redis as two series in each, each
//! point labelled with its value, a legend above and the machine and settings below. White
//! background, so it reads the same on a light or a dark page.

use std::fmt::Write;

use serde_json::Value;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 400.0;
const PANEL_WIDTH: f64 = 420.0;
const PLOT_TOP: f64 = 86.0;
const PLOT_BOTTOM: f64 = 326.0;
const PLOT_LEFT: f64 = 76.0;
const PLOT_RIGHT: f64 = 396.0;

/// A line on the plot: its name, colour, dash pattern and marker.
struct Series {
    name: &'static str,
    key: &'static str,
    color: &'static str,
    dash: &'static str,
    square: bool,
}

const SERIES: [Series; 2] = [
    Series { name: "roomkit", key: "roomkit", color: "#c0392b", dash: "", square: false },
    Series { name: "redis pub/sub", key: "redis", color: "#2e6da4", dash: "6 4", square: true },
];

/// The SVG of `results` (the object written to `results.json`).
pub(crate) fn svg(results: &Value) -> String {
    let rows = results["rows"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{}" y="26" text-anchor="middle" font-size="16" font-weight="bold">Fan-out of {}-byte messages: roomkit vs redis pub/sub</text>
"##,
        WIDTH / 2.0,
        results["settings"]["payload_bytes"],
    );
    legend(&mut out);
    // The p99 at the highest rate the run measured.
    let rate =
        results["settings"]["rates_per_sec"].as_array().into_iter().flatten().filter_map(Value::as_u64).max();
    let rate = rate.unwrap_or(0);
    let panels = [
        Panel {
            dx: 0.0,
            title: "Throughput (higher is better)".into(),
            y_label: "deliveries per second",
            key: "/fanout_deliveries_per_sec".into(),
            log_y: false,
        },
        Panel {
            dx: PANEL_WIDTH,
            title: format!("p99 latency at {rate} msg/s (lower is better)"),
            y_label: "p99 send-to-receive (ms, log scale)",
            key: format!("/latency/{rate}/p99_ms"),
            log_y: true,
        },
    ];
    for p in &panels {
        p.draw(&mut out, &rows);
    }
    let machine = &results["machine"];
    let pinning = if results["pinning"]["applied"] == Value::Bool(true) {
        "server on one CPU, generator on another".to_owned()
    } else {
        "not pinned".to_owned()
    };
    let caption = format!(
        "{} · {} CPUs · {} · {} · cargo xtask bench",
        machine["cpu_model"].as_str().unwrap_or("unknown CPU"),
        machine["cpus"],
        pinning,
        results["date"].as_str().unwrap_or("").get(..10).unwrap_or(""),
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="#666666">{}</text>"##,
        WIDTH / 2.0,
        HEIGHT - 12.0,
        escape(&caption)
    );
    out.push_str("</svg>\n");
    out
}

fn legend(out: &mut String) {
    let mut x = WIDTH / 2.0 - 110.0;
    for s in &SERIES {
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="48" x2="{}" y2="48" stroke="{}" stroke-width="2.5" stroke-dasharray="{}"/>"##,
            x + 28.0,
            s.color,
            s.dash
        );
        marker(out, s, x + 14.0, 48.0);
        let _ = writeln!(out, r##"<text x="{}" y="52">{}</text>"##, x + 36.0, s.name);
        x += 130.0;
    }
}

fn marker(out: &mut String, s: &Series, x: f64, y: f64) {
    if s.square {
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{}"/>"##,
            x - 4.0,
            y - 4.0,
            s.color
        );
    } else {
        let _ = writeln!(out, r##"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{}"/>"##, s.color);
    }
}

/// One panel: the figure at `key` (a JSON pointer) in each system's row against the members,
/// log-scale x.
struct Panel {
    dx: f64,
    title: String,
    y_label: &'static str,
    key: String,
    log_y: bool,
}

/// The y axis: linear from 0 to a round top, or logarithmic between two powers of ten.
struct YScale {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

impl YScale {
    fn new(values: &[f64], log: bool) -> Self {
        let max = values.iter().copied().fold(0.0, f64::max);
        if log {
            let min = values.iter().copied().filter(|v| *v > 0.0).fold(f64::MAX, f64::min);
            let (min, max) = if max > 0.0 { (min, max) } else { (1.0, 10.0) };
            let (lo, hi) =
                (min.log10().floor() as i32, (max.log10().ceil() as i32).max(min.log10().floor() as i32 + 1));
            let multiples: &[f64] = if hi - lo > 4 { &[1.0] } else { &[1.0, 2.0, 5.0] };
            let ticks = (lo..=hi)
                .flat_map(|e| multiples.iter().map(move |m| m * 10f64.powi(e)))
                .filter(|v| *v <= 10f64.powi(hi) * 1.0001)
                .map(|v| (v, plain(v, v)))
                .collect();
            // Room above and below the outer decades for the points' labels.
            let pad = 0.08 * f64::from(hi - lo);
            Self { log, lo: f64::from(lo) - pad, hi: f64::from(hi) + pad, ticks }
        } else {
            let step = nice_step(if max > 0.0 { max * 1.15 / 5.0 } else { 1.0 });
            let top = (max * 1.15 / step).ceil().max(1.0) * step;
            let count = (top / step).round() as usize;
            let ticks = (0..=count).map(|i| i as f64 * step).map(|v| (v, number(v, step))).collect();
            Self { log, lo: 0.0, hi: top, ticks }
        }
    }

    fn y_of(&self, v: f64) -> f64 {
        let t = if self.log { (v.max(1e-9).log10() - self.lo) / (self.hi - self.lo) } else { v / self.hi };
        PLOT_BOTTOM - t.clamp(0.0, 1.0) * (PLOT_BOTTOM - PLOT_TOP)
    }
}

impl Panel {
    fn draw(&self, out: &mut String, rows: &[Value]) {
        let (left, right) = (self.dx + PLOT_LEFT, self.dx + PLOT_RIGHT);
        let key = self.key.as_str();
        let members: Vec<f64> =
            rows.iter().filter_map(|r| r["members"].as_f64()).filter(|m| *m > 0.0).collect();
        let (lo, hi) = members.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &m| (lo.min(m), hi.max(m)));
        let (lo, hi) = if members.is_empty() { (1.0, 10.0) } else { ((lo / 1.6).ln(), (hi * 1.6).ln()) };
        let x_of = |m: f64| left + (m.ln() - lo) / (hi - lo) * (right - left);
        let values: Vec<f64> = rows
            .iter()
            .flat_map(|r| SERIES.iter().filter_map(move |s| r[s.key].pointer(key)?.as_f64()))
            .collect();
        let y = YScale::new(&values, self.log_y);

        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"##,
            (left + right) / 2.0,
            PLOT_TOP - 12.0,
            escape(&self.title)
        );
        for (v, label) in &y.ticks {
            let at = y.y_of(*v);
            let _ = writeln!(
                out,
                r##"<line x1="{left}" y1="{at:.1}" x2="{right}" y2="{at:.1}" stroke="#e3e3e3"/><text x="{}" y="{:.1}" text-anchor="end" fill="#333333">{label}</text>"##,
                left - 6.0,
                at + 4.0,
            );
        }
        // x ticks at the measured sizes.
        for &m in &members {
            let x = x_of(m);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{PLOT_TOP}" x2="{x:.1}" y2="{PLOT_BOTTOM}" stroke="#eeeeee"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#333333">{}</text>"##,
                PLOT_BOTTOM + 16.0,
                number(m, 1.0)
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{left}" y="{PLOT_TOP}" width="{}" height="{}" fill="none" stroke="#888888"/>"##,
            right - left,
            PLOT_BOTTOM - PLOT_TOP
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#333333">members in the room (log scale)</text>"##,
            (left + right) / 2.0,
            PLOT_BOTTOM + 36.0
        );
        let (lx, ly) = (self.dx + 20.0, (PLOT_TOP + PLOT_BOTTOM) / 2.0);
        let _ = writeln!(
            out,
            r##"<text x="{lx}" y="{ly}" text-anchor="middle" fill="#333333" transform="rotate(-90 {lx} {ly})">{}</text>"##,
            escape(self.y_label)
        );
        for (i, s) in SERIES.iter().enumerate() {
            // (x, y, value, the other system's value at the same size)
            let points: Vec<(f64, f64, f64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    let v = r[s.key].pointer(key)?.as_f64()?;
                    let other = r[SERIES[1 - i].key].pointer(key).and_then(Value::as_f64).unwrap_or(0.0);
                    Some((x_of(r["members"].as_f64()?), y.y_of(v), v, other))
                })
                .collect();
            let path: Vec<String> = points.iter().map(|(x, y, ..)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5" stroke-dasharray="{}"/>"##,
                path.join(" "),
                s.color,
                s.dash
            );
            for &(x, at, v, other) in &points {
                marker(out, s, x, at);
                // The higher of the two values is labelled above its point, the other below.
                let dy = if v >= other { -9.0 } else { 17.0 };
                let _ = writeln!(
                    out,
                    r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="10.5" fill="{}">{}</text>"##,
                    at + dy,
                    s.color,
                    if self.log_y { plain(v, value_precision(v)) } else { number(v, value_precision(v)) }
                );
            }
        }
    }
}

/// The step a point's label is rounded to: three significant digits.
fn value_precision(v: f64) -> f64 {
    if v <= 0.0 {
        1.0
    } else {
        10f64.powf(v.log10().floor() - 2.0)
    }
}

/// A round step (1, 2 or 5 times a power of ten) near `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A tick label: `1.5M`, `200k`, `1k`, `0.25`; as precise as `step` needs.
fn number(v: f64, step: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if v >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if v >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if step >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        trim(format!("{v:.decimals$}"))
    }
}

/// A latency label: no `k`, however large.
fn plain(v: f64, step: f64) -> String {
    if v >= 1e3 {
        format!("{v:.0}")
    } else {
        number(v, step)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_labels_are_round() {
        let close = |a: f64, b: f64| (a - b).abs() < b * 1e-9;
        assert!(close(nice_step(0.7e6), 1e6));
        assert!(close(nice_step(1.3), 2.0));
        assert!(close(nice_step(0.04), 0.05));
        assert_eq!(number(1.5e6, 5e5), "1.5M");
        assert_eq!(number(5000.0, 1.0), "5k");
        assert_eq!(number(100.0, 1.0), "100");
        assert_eq!(number(0.25, 0.05), "0.25");
        assert_eq!(plain(2000.0, 1.0), "2000");
        assert_eq!(plain(0.5, 0.5), "0.5");
    }

    #[test]
    fn draws_both_series_in_both_panels() {
        let row = |m: u64, d: f64, p: f64| {
            serde_json::json!({"members": m,
                "roomkit": {"fanout_deliveries_per_sec": d, "latency": {"1000": {"p99_ms": p}}},
                "redis": {"fanout_deliveries_per_sec": d * 2.0, "latency": {"1000": {"p99_ms": p / 2.0}}}})
        };
        let results = serde_json::json!({
            "settings": {"payload_bytes": 100, "rates_per_sec": [100, 1000]},
            "machine": {"cpus": 2, "cpu_model": "A & B"},
            "date": "2026-01-01T00:00:00Z",
            "rows": [row(100, 1e6, 2.0), row(1000, 2e6, 7.0)],
        });
        let svg = svg(&results);
        assert_eq!(svg.matches("<polyline").count(), 4);
        // roomkit's points (circles; one more in the legend), each labelled with its value:
        // the p99s at the highest rate among them.
        assert_eq!(svg.matches("<circle").count(), 1 + 4);
        assert!(svg.contains(">7<") && svg.contains(">3.5<"));
        assert!(svg.contains("p99 latency at 1000 msg/s"));
        assert!(svg.contains("A &amp; B"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
