//! The plot: latency percentiles against achieved throughput, one point per
//! open-loop step, as a hand-written SVG (no font files or native
//! libraries needed to draw it; the viewer picks a sans-serif font).

use std::fmt::Write;
use std::time::Duration;

use crate::latency::millis;
use crate::step::{Load, StepReport};

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// The smallest of 1, 2, 5 times a power of ten at or above `value`.
pub fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let decade = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&v| v >= value * (1.0 - 1e-12))
        .unwrap_or(10.0 * decade)
}

/// Where `value` falls between `low` and `high` on a log scale, 0 to 1.
pub fn log_fraction(value: f64, low: f64, high: f64) -> f64 {
    let value = value.clamp(low, high);
    (value.ln() - low.ln()) / (high.ln() - low.ln())
}

/// Picks one percentile out of a step's report.
type Percentile = fn(&StepReport) -> Duration;

struct Frame {
    x_max: f64,
    y_low: f64,
    y_high: f64,
}

impl Frame {
    fn x(&self, rate: f64) -> f64 {
        LEFT + rate / self.x_max * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, ms: f64) -> f64 {
        HEIGHT - BOTTOM - log_fraction(ms, self.y_low, self.y_high) * (HEIGHT - TOP - BOTTOM)
    }
}

pub fn latency_svg(steps: &[StepReport], held_p99: Duration, title: &str) -> String {
    let open: Vec<&StepReport> = steps
        .iter()
        .filter(|s| matches!(s.load, Load::Open { .. }) && s.latency.count > 0)
        .collect();
    let closed: Vec<&StepReport> = steps
        .iter()
        .filter(|s| matches!(s.load, Load::Closed { .. }) && s.latency.count > 0)
        .collect();
    let all = open.iter().chain(&closed);
    let x_max = nice_ceiling(all.clone().map(|s| s.achieved_rate).fold(1.0, f64::max) * 1.05);
    let slowest = all
        .clone()
        .map(|s| millis(s.latency.p999))
        .fold(millis(held_p99), f64::max);
    let fastest = all
        .map(|s| millis(s.latency.p50))
        .fold(millis(held_p99), f64::min);
    let frame = Frame {
        x_max,
        y_low: 10f64.powf(fastest.max(0.01).log10().floor()),
        y_high: 10f64.powf(slowest.log10().ceil()),
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        escape(title)
    );
    // Axes, grid and labels.
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    for i in 0..=5 {
        let rate = x_max * f64::from(i) / 5.0;
        let x = frame.x(rate);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{rate:.0}</text>"##,
            y1 + 16.0
        );
    }
    let mut decade = frame.y_low;
    while decade <= frame.y_high * 1.0001 {
        let y = frame.y(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            format_ms(decade)
        );
        decade *= 10.0;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        x1 - x0,
        y1 - y0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">achieved throughput (completed checkouts/s)</text>"#,
        (x0 + x1) / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">latency from scheduled send to final status (ms, log)</text>"#,
        (y0 + y1) / 2.0
    );
    // The held bound.
    let bound = frame.y(millis(held_p99));
    let _ = writeln!(
        svg,
        r##"<line x1="{x0}" y1="{bound:.1}" x2="{x1}" y2="{bound:.1}" stroke="#c00" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="#c00" text-anchor="end">p99 bound {}</text>"##,
        x1 - 4.0,
        bound - 4.0,
        format_ms(millis(held_p99))
    );

    let series: [(&str, &str, Percentile); 4] = [
        ("p50", "#1f77b4", |s| s.latency.p50),
        ("p90", "#2ca02c", |s| s.latency.p90),
        ("p99", "#ff7f0e", |s| s.latency.p99),
        ("p99.9", "#9467bd", |s| s.latency.p999),
    ];
    for (index, (name, colour, value)) in series.iter().enumerate() {
        let points: Vec<String> = open
            .iter()
            .map(|s| {
                format!(
                    "{:.1},{:.1}",
                    frame.x(s.achieved_rate),
                    frame.y(millis(value(s)))
                )
            })
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                svg,
                r#"<polyline class="open-loop" points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                points.join(" ")
            );
            for point in &points {
                let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
            }
        }
        let legend_y = y0 + 14.0 + index as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">open loop {name}</text>"#,
            x1 + 12.0,
            x1 + 32.0,
            x1 + 38.0,
            legend_y + 4.0
        );
    }
    for step in &closed {
        let Load::Closed { concurrency } = step.load else {
            continue;
        };
        let x = frame.x(step.achieved_rate);
        for (value, shape) in [(step.latency.p50, "p50"), (step.latency.p99, "p99")] {
            let y = frame.y(millis(value));
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="7" height="7" fill="none" stroke="#000"/><text x="{:.1}" y="{:.1}" font-size="10">closed c={concurrency} {shape}</text>"##,
                x - 3.5,
                y - 3.5,
                x + 6.0,
                y + 3.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::latency::LatencySummary;
    use crate::service_usage::StepUsage;

    fn step(load: Load, achieved: f64, p50_ms: u64, p999_ms: u64) -> StepReport {
        StepReport {
            load,
            offered: 100,
            completed: 100,
            errors: 0,
            achieved_rate: achieved,
            latency: LatencySummary {
                count: 100,
                p50: Duration::from_millis(p50_ms),
                p90: Duration::from_millis(p50_ms * 2),
                p99: Duration::from_millis(p50_ms * 3),
                p999: Duration::from_millis(p999_ms),
                max: Duration::from_millis(p999_ms),
            },
            usage: StepUsage::default(),
            verdict: None,
            outcomes: BTreeMap::new(),
            first_error: None,
        }
    }

    #[test]
    fn nice_ceilings_are_one_two_five_steps() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert_eq!(nice_ceiling(501.0), 1000.0);
    }

    #[test]
    fn a_log_scale_puts_ten_halfway_between_one_and_a_hundred() {
        assert!((log_fraction(10.0, 1.0, 100.0) - 0.5).abs() < 1e-12);
        assert_eq!(log_fraction(0.5, 1.0, 100.0), 0.0);
        assert_eq!(log_fraction(1e6, 1.0, 100.0), 1.0);
    }

    #[test]
    fn four_percentile_lines_through_the_open_steps_and_the_closed_points() {
        let steps = [
            step(Load::Closed { concurrency: 32 }, 190.0, 160, 400),
            step(Load::Open { rate: 50.0 }, 50.0, 12, 40),
            step(Load::Open { rate: 100.0 }, 99.0, 14, 60),
            step(Load::Open { rate: 200.0 }, 150.0, 300, 2500),
        ];
        let svg = latency_svg(&steps, Duration::from_millis(100), "a & b");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="open-loop""#).count(), 4);
        // Three points on each line; two markers for the closed run.
        assert_eq!(svg.matches("<circle").count(), 12);
        assert_eq!(svg.matches("closed c=32").count(), 2);
        assert!(svg.contains("p99 bound 100 ms"));
        assert!(svg.contains("a &amp; b"));
        // 1 ms to 10 s: the slowest p99.9 (2.5 s) fits.
        assert!(svg.contains(">10 s<"), "{svg}");
    }
}
