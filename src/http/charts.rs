//! Inline SVG charts, rendered on the server: readable without JavaScript
//! and nothing fetched from elsewhere. A line chart of the history's series,
//! and a strip of a job's last runs.

use std::fmt::Write as _;

use super::html::esc;
use super::views::Run;

const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 90.0;
/// Room for the axis labels on the left.
const LEFT: f64 = 44.0;
const COLORS: [&str; 8] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
/// Series drawn in one chart, at most (the rest are named as left out).
const SERIES_DRAWN: usize = 8;

/// One line: its name and a value per sample (`None`: no reading then).
pub struct Series {
    pub name: String,
    pub points: Vec<Option<f64>>,
}

/// A line chart of `series` over `span_s` seconds, scaled to the largest
/// value; "collecting" until two samples are in.
pub fn line(title: &str, unit: &str, span_s: u64, series: &[Series]) -> String {
    let samples = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    let id = title.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    if samples < 2 {
        return format!(
            "<figure class=chart id=\"chart-{id}\"><figcaption>{}: collecting (a sample every 10 s)</figcaption></figure>",
            esc(title)
        );
    }
    let values = || series.iter().flat_map(|s| s.points.iter().flatten().copied());
    let max = values().fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let plot = WIDTH - LEFT;
    let step = plot / (samples - 1) as f64;
    let mut svg = format!(
        "<figure class=chart id=\"chart-{id}\"><svg role=img aria-label=\"{}\" width={WIDTH} height={} viewBox=\"0 0 {WIDTH} {}\">",
        esc(title),
        HEIGHT + 4.0,
        HEIGHT + 4.0
    );
    let _ = write!(
        svg,
        "<line x1={LEFT} y1={HEIGHT} x2={WIDTH} y2={HEIGHT} stroke=\"#bbb\"/>\
         <text x=0 y=10 font-size=10 fill=\"#555\">{}</text><text x=0 y={HEIGHT} font-size=10 fill=\"#555\">0</text>",
        number(max)
    );
    for (i, s) in series.iter().take(SERIES_DRAWN).enumerate() {
        // Samples before this series had any are left blank (a new partition).
        let offset = samples - s.points.len();
        let points: Vec<String> = s
            .points
            .iter()
            .enumerate()
            .filter_map(|(j, v)| {
                let v = (*v)?;
                Some(format!("{:.1},{:.1}", LEFT + (offset + j) as f64 * step, HEIGHT - v / top * (HEIGHT - 6.0)))
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline class=series data-series=\"{}\" fill=none stroke=\"{}\" stroke-width=1.5 points=\"{}\"/>",
            esc(&s.name),
            COLORS[i % COLORS.len()],
            points.join(" ")
        );
    }
    svg.push_str("</svg><figcaption>");
    let _ = write!(svg, "<b>{}</b> ({}), last {}:", esc(title), esc(unit), span(span_s));
    for (i, s) in series.iter().take(SERIES_DRAWN).enumerate() {
        let now = s.points.last().copied().flatten().map_or("—".to_string(), number);
        let _ = write!(svg, " <span style=\"color:{}\">■</span> {} {now}", COLORS[i % COLORS.len()], esc(&s.name));
    }
    if series.len() > SERIES_DRAWN {
        let _ = write!(svg, " (and {} more, in /api/history)", series.len() - SERIES_DRAWN);
    }
    svg.push_str("</figcaption></figure>");
    svg
}

fn number(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn span(secs: u64) -> String {
    if secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// A job's runs, oldest first, as bars: the height its duration (against
/// the longest), the colour its outcome.
pub fn runs(runs: &[Run]) -> String {
    if runs.is_empty() {
        return "<span class=muted>no runs yet</span>".into();
    }
    let (w, h, bar) = (122.0, 20.0, 6.0);
    let longest = runs.iter().filter_map(|r| r.duration_ms).max().unwrap_or(1).max(1) as f64;
    let mut svg = format!("<svg class=runs role=img aria-label=\"last {} runs\" width={w} height={h}>", runs.len());
    for (i, r) in runs.iter().enumerate() {
        let tall = r.duration_ms.map_or(h, |d| (d as f64 / longest * (h - 3.0)).max(0.0) + 3.0);
        let color = match r.outcome.as_str() {
            "ok" => "#16a34a",
            "failed" => "#dc2626",
            "running" => "#2563eb",
            _ => "#9ca3af",
        };
        let took = r.duration_ms.map_or("running".into(), |d| format!("{d} ms"));
        let _ = write!(
            svg,
            "<rect class=\"run {}\" x={} y={:.1} width={bar} height={tall:.1} fill=\"{color}\"><title>{} {}: {took}</title></rect>",
            esc(&r.outcome),
            i as f64 * bar,
            h - tall,
            esc(&r.started_at),
            esc(&r.outcome)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_scale_to_the_peak_and_start_where_their_series_starts() {
        let a = Series { name: "a".into(), points: vec![Some(0.0), Some(50.0), Some(100.0)] };
        let b = Series { name: "<b>".into(), points: vec![Some(100.0)] };
        let svg = line("Records", "per s", 30, &[a, b]);
        assert!(svg.contains(&format!("points=\"{LEFT:.1},90.0 262.0,48.0 480.0,6.0\"")), "{svg}");
        assert!(
            svg.contains(
                "data-series=\"&lt;b&gt;\" fill=none stroke=\"#dc2626\" stroke-width=1.5 points=\"480.0,6.0\""
            ),
            "{svg}"
        );
        assert!(svg.contains("a 100"), "{svg}");
        let one = Series { name: "a".into(), points: vec![Some(1.0)] };
        assert!(line("Records", "per s", 10, &[one]).contains("collecting"));
    }

    #[test]
    fn runs_are_coloured_by_outcome() {
        let run =
            |outcome: &str, ms| Run { started_at: "t".into(), outcome: outcome.into(), duration_ms: ms, detail: None };
        let svg = runs(&[run("ok", Some(10)), run("failed", Some(20)), run("skipped", None)]);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("class=\"run failed\" x=6 y=0.0"), "{svg}");
        assert!(svg.contains("fill=\"#16a34a\""), "{svg}");
    }
}
