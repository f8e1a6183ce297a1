//! A small inline SVG line chart, drawn on the server: one series across
//! the monitoring window (minutes after T0 on the x axis), an optional
//! threshold as a dashed line, and gaps where a reading was unknown. No
//! script, so it shows on any phone.

use std::fmt::Write;

const W: f64 = 600.0;
const H: f64 = 180.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 30.0;

/// One chart. `points` are (minutes after T0, value or unknown); `format`
/// writes a value for the axis labels.
pub fn line_chart(
    title: &str,
    points: &[(f64, Option<f64>)],
    threshold: Option<f64>,
    format: fn(f64) -> String,
) -> String {
    let known: Vec<f64> = points.iter().filter_map(|(_, v)| *v).collect();
    let x_max = points.iter().map(|(x, _)| *x).fold(1.0, f64::max);
    let y_max = known
        .iter()
        .copied()
        .chain(threshold)
        .fold(0.0, f64::max)
        .max(f64::EPSILON)
        * 1.15;
    let px = |x: f64| LEFT + (W - LEFT - RIGHT) * x / x_max;
    let py = |y: f64| H - BOTTOM - (H - TOP - BOTTOM) * y / y_max;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg">"##
    );
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="18" class="chart-title">{title}</text>"##
    );
    // Axes and three horizontal grid lines with labels.
    for i in 0..=2 {
        let v = y_max / 1.15 * f64::from(i) / 2.0;
        let y = py(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="axis" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            super::pages::escape(&format(v))
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" class="axis">T0</text><text x="{:.1}" y="{:.1}" class="axis" text-anchor="end">T+{}m</text>"##,
        H - 10.0,
        W - RIGHT,
        H - 10.0,
        x_max.round()
    );
    if let Some(t) = threshold {
        let y = py(t);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="threshold"/><text x="{:.1}" y="{:.1}" class="axis" text-anchor="end">critical above {}</text>"##,
            W - RIGHT,
            W - RIGHT,
            y - 4.0,
            super::pages::escape(&format(t))
        );
    }
    // The series, broken where a reading was unknown.
    let mut run: Vec<String> = Vec::new();
    let flush = |run: &mut Vec<String>, svg: &mut String| {
        if run.len() > 1 {
            let _ = write!(
                svg,
                r##"<polyline points="{}" class="series"/>"##,
                run.join(" ")
            );
        }
        run.clear();
    };
    for (x, v) in points {
        match v {
            Some(v) => run.push(format!("{:.1},{:.1}", px(*x), py(*v))),
            None => flush(&mut run, &mut svg),
        }
    }
    flush(&mut run, &mut svg);
    for (x, v) in points {
        match v {
            Some(v) => {
                let _ = write!(
                    svg,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" class="point"><title>T+{x:.0}m: {}</title></circle>"##,
                    px(*x),
                    py(*v),
                    super::pages::escape(&format(*v))
                );
            }
            None => {
                let _ = write!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" class="unknown" text-anchor="middle">?</text>"##,
                    px(*x),
                    H - BOTTOM - 4.0
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_its_points_threshold_and_gaps() {
        let svg = line_chart(
            "Error rate",
            &[
                (5.0, Some(0.01)),
                (10.0, Some(0.08)),
                (15.0, None),
                (20.0, Some(0.02)),
            ],
            Some(0.05),
            |v| format!("{:.1}%", v * 100.0),
        );
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 3);
        // Two known points before the gap make a line; one after does not.
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("critical above 5.0%"));
        assert!(svg.contains(">?</text>"));
        assert!(svg.ends_with("</svg>"));
    }
}
