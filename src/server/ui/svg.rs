//! Pictures drawn on the server as inline SVG: no chart library, nothing to download.
//!
//! Every function here returns finished markup that a template inserts with `|safe`, so every
//! piece of text that goes into it passes through [`escape`] here and nowhere else.

use std::fmt::Write as _;

use crate::report::count;

/// Orphans' colour and missing files' colour; missing is also dashed, for readers who cannot
/// tell the colours apart.
const ORPHANS_COLOUR: &str = "#b42318";
const MISSING_COLOUR: &str = "#0b5cad";
const AXIS_COLOUR: &str = "#57606a";
const GRID_COLOUR: &str = "#d0d7de";

/// Text made safe for SVG (XML) content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Characters XML 1.0 forbids outright would make the page fail to parse.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// One scan of the trend chart. `None` for a figure the scan did not look for (an orphans-only
/// scan has no missing count): the line has a gap there instead of a false zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendPoint {
    pub scan_id: i64,
    /// What the x axis says under the point (the scan's date).
    pub label: String,
    pub orphans: Option<u64>,
    pub missing: Option<u64>,
}

/// A round step for about `ticks` intervals up to `max`: 1, 2 or 5 times a power of ten.
fn nice_step(max: u64, ticks: u64) -> u64 {
    let rough = max.div_ceil(ticks.max(1)).max(1);
    let mut power = 1u64;
    while power.saturating_mul(10) <= rough {
        power *= 10;
    }
    [1, 2, 5, 10]
        .into_iter()
        .map(|m| power.saturating_mul(m))
        .find(|&s| s >= rough)
        .unwrap_or(rough)
}

/// A coordinate to one decimal: enough for a screen, short markup.
fn c(v: f64) -> String {
    format!("{v:.1}")
}

#[allow(clippy::cast_precision_loss)] // counts shown in a chart are far below 2^52
fn f(v: u64) -> f64 {
    v as f64
}

/// Where the trend chart draws: the plot area inside its margins.
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    y_max: u64,
    n: usize,
}

impl Frame {
    fn x(&self, i: usize) -> f64 {
        if self.n <= 1 {
            f64::midpoint(self.left, self.right)
        } else {
            #[allow(clippy::cast_precision_loss)]
            let share = i as f64 / (self.n - 1) as f64;
            self.left + share * (self.right - self.left)
        }
    }

    fn y(&self, v: u64) -> f64 {
        self.bottom - f(v) / f(self.y_max.max(1)) * (self.bottom - self.top)
    }
}

/// The trend of orphans and missing files over `points` (oldest first) as a line chart of
/// `width` × `height` user units (it scales with the page): axes with labelled ticks, a legend,
/// `role="img"` with a `<title>` and a `<desc>` that says what it shows.
pub fn trend(points: &[TrendPoint], width: u32, height: u32) -> String {
    let (wide, high) = (f64::from(width.max(120)), f64::from(height.max(80)));
    let peak = points
        .iter()
        .flat_map(|p| [p.orphans, p.missing])
        .flatten()
        .max()
        .unwrap_or(0);
    let step = nice_step(peak, 4);
    let y_max = step * peak.div_ceil(step).max(1);
    let label_width = 8.0 * count(y_max).len() as f64 + 12.0;
    let frame = Frame {
        left: label_width.max(36.0),
        right: wide - 16.0,
        top: 32.0,
        bottom: high - 28.0,
        y_max,
        n: points.len(),
    };
    let desc = describe(points);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {wide} {high}" role="img" aria-labelledby="trend-title trend-desc"><title id="trend-title">Orphans and missing files per scan</title><desc id="trend-desc">{}</desc>"#,
        escape(&desc)
    );
    // Horizontal grid lines with their values, 0 at the bottom.
    let mut tick = 0;
    while tick <= y_max {
        let y = c(frame.y(tick));
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{GRID_COLOUR}" stroke-width="1"/><text x="{}" y="{y}" dy="4" text-anchor="end" font-size="12" fill="{AXIS_COLOUR}">{}</text>"#,
            c(frame.left),
            c(frame.right),
            c(frame.left - 6.0),
            escape(&count(tick))
        );
        tick += step;
    }
    let _ = write!(
        s,
        r#"<line class="axis-y" x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="{AXIS_COLOUR}" stroke-width="1"/><line class="axis-x" x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{AXIS_COLOUR}" stroke-width="1"/>"#,
        l = c(frame.left),
        t = c(frame.top),
        b = c(frame.bottom),
        r = c(frame.right),
    );
    if points.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="14" fill="{AXIS_COLOUR}">No complete scan yet</text></svg>"#,
            c(f64::midpoint(frame.left, frame.right)),
            c(f64::midpoint(frame.top, frame.bottom)),
        );
        return s;
    }
    // The x axis names the first and last scans, and the middle one when there is room.
    let mut ticks = vec![0, points.len() - 1];
    if points.len() >= 5 && wide >= 360.0 {
        ticks.push(points.len() / 2);
    }
    ticks.sort_unstable();
    ticks.dedup();
    for &i in &ticks {
        let anchor = match i {
            0 if points.len() > 1 => "start",
            i if i == points.len() - 1 && points.len() > 1 => "end",
            _ => "middle",
        };
        let x = c(frame.x(i));
        let _ = write!(
            s,
            r#"<line x1="{x}" y1="{b}" x2="{x}" y2="{b2}" stroke="{AXIS_COLOUR}" stroke-width="1"/><text x="{x}" y="{ty}" text-anchor="{anchor}" font-size="12" fill="{AXIS_COLOUR}">{}</text>"#,
            escape(&format!("{} (#{})", points[i].label, points[i].scan_id)),
            b = c(frame.bottom),
            b2 = c(frame.bottom + 4.0),
            ty = c(frame.bottom + 18.0),
        );
    }
    series(
        &mut s,
        &frame,
        points,
        |p| p.orphans,
        ORPHANS_COLOUR,
        None,
        "orphans",
    );
    series(
        &mut s,
        &frame,
        points,
        |p| p.missing,
        MISSING_COLOUR,
        Some("6 4"),
        "missing",
    );
    legend(&mut s, &frame);
    s.push_str("</svg>");
    s
}

/// One line: segments between the points that have the figure, and a dot on each point (so a
/// lone point shows), each dot with its figure as a tooltip.
fn series(
    s: &mut String,
    frame: &Frame,
    points: &[TrendPoint],
    value: impl Fn(&TrendPoint) -> Option<u64>,
    colour: &str,
    dash: Option<&str>,
    noun: &str,
) {
    let dash = dash.map_or(String::new(), |d| format!(r#" stroke-dasharray="{d}""#));
    let mut run: Vec<String> = Vec::new();
    let flush = |s: &mut String, run: &mut Vec<String>| {
        if run.len() > 1 {
            let _ = write!(
                s,
                r#"<polyline class="series-{noun}" fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
                run.join(" ")
            );
        }
        run.clear();
    };
    for (i, p) in points.iter().enumerate() {
        match value(p) {
            Some(v) => run.push(format!("{},{}", c(frame.x(i)), c(frame.y(v)))),
            None => flush(s, &mut run),
        }
    }
    flush(s, &mut run);
    for (i, p) in points.iter().enumerate() {
        if let Some(v) = value(p) {
            let _ = write!(
                s,
                r#"<circle cx="{}" cy="{}" r="3" fill="{colour}" data-scan="{}" data-value="{v}"><title>{}</title></circle>"#,
                c(frame.x(i)),
                c(frame.y(v)),
                p.scan_id,
                escape(&format!(
                    "Scan {} ({}): {} {noun}",
                    p.scan_id,
                    p.label,
                    count(v)
                ))
            );
        }
    }
}

fn legend(s: &mut String, frame: &Frame) {
    let y = c(frame.top - 16.0);
    let x = frame.left;
    let _ = write!(
        s,
        r#"<g class="legend" font-size="12" fill="{AXIS_COLOUR}"><line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{ORPHANS_COLOUR}" stroke-width="2"/><text x="{}" y="{y}" dy="4">Orphans</text><line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{MISSING_COLOUR}" stroke-width="2" stroke-dasharray="6 4"/><text x="{}" y="{y}" dy="4">Missing</text></g>"#,
        c(x),
        c(x + 20.0),
        c(x + 24.0),
        c(x + 90.0),
        c(x + 110.0),
        c(x + 114.0),
    );
}

/// What the chart shows, in words, for `<desc>`.
fn describe(points: &[TrendPoint]) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return "No complete scan yet.".to_string();
    };
    let figure = |v: Option<u64>, noun: &str| {
        v.map_or(format!("{noun} not checked"), |v| {
            format!("{} {noun}", count(v))
        })
    };
    let span = if points.len() == 1 {
        format!("one scan, {} ({})", first.scan_id, first.label)
    } else {
        format!(
            "the last {} complete scans, from scan {} ({}) to scan {} ({})",
            points.len(),
            first.scan_id,
            first.label,
            last.scan_id,
            last.label
        )
    };
    format!(
        "Orphans and missing files over {span}. Latest: {}, {}. The table below has every figure.",
        figure(last.orphans, "orphans"),
        figure(last.missing, "missing")
    )
}

/// An account's API budget: calls spent in the current window against the limit, and the
/// shares at which runs warn and stop.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetBar {
    /// Who the budget belongs to, in words (the cloud name, never a key or secret).
    pub label: String,
    pub used: u64,
    pub limit: u64,
    /// Shares of `limit` (0.8 = 80 %).
    pub warn_at: f64,
    pub stop_at: f64,
}

impl BudgetBar {
    /// Used share as a percentage, one decimal.
    pub fn percent(&self) -> String {
        format!(
            "{:.1}",
            crate::domain::budget::share(self.used, self.limit) * 100.0
        )
    }

    /// The figures in words: "123 of 500 calls (24.6%)".
    pub fn words(&self) -> String {
        format!(
            "{} of {} calls ({}%)",
            count(self.used),
            count(self.limit),
            self.percent()
        )
    }
}

/// A horizontal bar of `width` × `height` user units: the used share filled (green, amber past
/// `warn_at`, red past `stop_at`), a mark at each threshold, the figures in text beneath.
pub fn budget_bar(bar: &BudgetBar, width: u32, height: u32) -> String {
    let (w, h) = (f64::from(width.max(120)), f64::from(height.max(48)));
    let (left, right) = (1.0, w - 1.0);
    let (top, bar_h) = (14.0, h - 34.0);
    let share = crate::domain::budget::share(bar.used, bar.limit);
    let fill = if share >= bar.stop_at {
        "#b42318"
    } else if share >= bar.warn_at {
        "#9a6700"
    } else {
        "#1a7f37"
    };
    let at = |share: f64| left + share.clamp(0.0, 1.0) * (right - left);
    let words = format!("{}: {}", bar.label, bar.words());
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="bar" viewBox="0 0 {w} {h}" role="img" aria-label="{}" data-used="{}" data-limit="{}"><title>{}</title>"#,
        escape(&words),
        bar.used,
        bar.limit,
        escape(&words)
    );
    let _ = write!(
        s,
        r##"<rect x="{l}" y="{t}" width="{bw}" height="{bh}" fill="#f6f8fa" stroke="{GRID_COLOUR}"/><rect class="used" x="{l}" y="{t}" width="{uw}" height="{bh}" fill="{fill}"/>"##,
        l = c(left),
        t = c(top),
        bw = c(right - left),
        bh = c(bar_h),
        uw = c(at(share) - left),
    );
    for (name, mark) in [("warn", bar.warn_at), ("stop", bar.stop_at)] {
        let x = c(at(mark));
        // Labels end at their mark (start, near the left edge), so the usual 80 % and 95 % do not
        // run into each other.
        let anchor = if mark < 0.2 { "start" } else { "end" };
        let _ = write!(
            s,
            r#"<line class="mark-{name}" x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{AXIS_COLOUR}" stroke-width="2"/><text x="{x}" y="10" text-anchor="{anchor}" font-size="11" fill="{AXIS_COLOUR}">{name} {}%</text>"#,
            c(top - 2.0),
            c(top + bar_h + 2.0),
            escape(&format!("{:.0}", mark * 100.0)),
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" font-size="13" fill="{AXIS_COLOUR}">{}</text></svg>"#,
        c(left),
        c(h - 4.0),
        escape(&bar.words())
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: i64, orphans: Option<u64>, missing: Option<u64>) -> TrendPoint {
        TrendPoint {
            scan_id: id,
            label: format!("2025-09-{id:02}"),
            orphans,
            missing,
        }
    }

    /// The (x, y) of the dots of one series, in order.
    fn dots(svg: &str, colour: &str) -> Vec<(f64, f64)> {
        svg.split("<circle ")
            .skip(1)
            .filter(|d| d.contains(&format!(r#"fill="{colour}""#)))
            .map(|d| {
                let attr = |name: &str| -> f64 {
                    let from = d.find(&format!(r#"{name}=""#)).expect("attribute") + name.len() + 2;
                    d[from..from + d[from..].find('"').expect("end")]
                        .parse()
                        .expect("number")
                };
                (attr("cx"), attr("cy"))
            })
            .collect()
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{1}b"), "a\u{FFFD}b");
    }

    #[test]
    fn nice_steps_are_one_two_five() {
        assert_eq!(nice_step(0, 4), 1);
        assert_eq!(nice_step(3, 4), 1);
        assert_eq!(nice_step(7, 4), 2);
        assert_eq!(nice_step(17, 4), 5);
        assert_eq!(nice_step(40, 4), 10);
        assert_eq!(nice_step(1234, 4), 500);
    }

    #[test]
    fn values_map_to_coordinates() {
        let pts = [
            point(1, Some(0), Some(10)),
            point(2, Some(20), Some(5)),
            point(3, Some(40), Some(0)),
        ];
        let svg = trend(&pts, 600, 240);
        // The axis runs to 40 (step 10); y = bottom − v / 40 × (bottom − top).
        let (top, bottom) = (32.0, 240.0 - 28.0);
        let y = |v: f64| bottom - v / 40.0 * (bottom - top);
        let o = dots(&svg, ORPHANS_COLOUR);
        assert_eq!(o.len(), 3);
        assert!((o[0].1 - y(0.0)).abs() < 0.06, "{o:?}");
        assert!((o[1].1 - y(20.0)).abs() < 0.06, "{o:?}");
        assert!((o[2].1 - y(40.0)).abs() < 0.06, "{o:?}");
        // Evenly spaced, oldest at the left, newest at the right edge of the plot.
        assert!((o[1].0 - o[0].0 - (o[2].0 - o[1].0)).abs() < 0.2);
        assert!((o[2].0 - (600.0 - 16.0)).abs() < 0.06);
        let m = dots(&svg, MISSING_COLOUR);
        assert!((m[0].1 - y(10.0)).abs() < 0.06, "{m:?}");
        assert!((m[0].0 - o[0].0).abs() < 0.01);
        // Ticks are labelled with separators up to the top of the axis.
        for t in ["0", "10", "20", "30", "40"] {
            assert!(svg.contains(&format!(">{t}</text>")), "tick {t}");
        }
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains("<title id=\"trend-title\">"));
        assert!(svg.contains("<desc id=\"trend-desc\">"));
        assert!(svg.contains(">Orphans</text>") && svg.contains(">Missing</text>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("from scan 1 (2025-09-01) to scan 3 (2025-09-03)"));
        assert!(svg.contains(">2025-09-01 (#1)</text>") && svg.contains(">2025-09-03 (#3)</text>"));
    }

    #[test]
    fn large_figures_get_separators_on_the_axis() {
        let svg = trend(&[point(1, Some(12_000), Some(0))], 600, 240);
        assert!(svg.contains(">10,000</text>"), "{svg}");
        assert!(svg.contains("12,000 orphans"));
    }

    #[test]
    fn an_unchecked_figure_breaks_the_line() {
        let pts = [
            point(1, Some(1), Some(1)),
            point(2, Some(2), None),
            point(3, Some(3), Some(3)),
        ];
        let svg = trend(&pts, 600, 240);
        // Orphans: one line through three dots; missing: two lone dots, no line.
        assert_eq!(svg.matches("series-orphans").count(), 1);
        assert_eq!(svg.matches("series-missing").count(), 0);
        assert_eq!(dots(&svg, MISSING_COLOUR).len(), 2);
    }

    #[test]
    fn empty_and_single_point_inputs_draw() {
        let empty = trend(&[], 600, 240);
        assert!(empty.starts_with("<svg") && empty.ends_with("</svg>"));
        assert!(empty.contains("No complete scan yet"));
        assert!(!empty.contains("<circle"));

        let one = trend(&[point(7, Some(5), Some(0))], 600, 240);
        let o = dots(&one, ORPHANS_COLOUR);
        assert_eq!(o.len(), 1);
        // A lone point sits in the middle of the plot, with no line to draw.
        assert!((o[0].0 - f64::midpoint(one_left(&one), 600.0 - 16.0)).abs() < 0.1);
        assert!(!one.contains("<polyline"));
        assert!(one.contains("one scan, 7 (2025-09-07)"));
        assert!(!one.contains("NaN") && !one.contains("inf"));
    }

    /// The plot's left edge: where the x axis starts.
    fn one_left(svg: &str) -> f64 {
        let axis = svg.split(r#"class="axis-x" x1=""#).nth(1).expect("axis");
        axis[..axis.find('"').expect("end")]
            .parse()
            .expect("number")
    }

    #[test]
    fn trend_text_is_escaped() {
        let mut p = point(1, Some(1), Some(2));
        p.label = "<script>alert('x')</script>&".into();
        let svg = trend(&[p], 600, 240);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"));
    }

    fn bar(used: u64, limit: u64) -> BudgetBar {
        BudgetBar {
            label: "cloud <demo> & \"co\"".into(),
            used,
            limit,
            warn_at: 0.8,
            stop_at: 0.95,
        }
    }

    fn width_of_used(svg: &str) -> f64 {
        let r = svg
            .split(r#"<rect class="used""#)
            .nth(1)
            .expect("used rect");
        let from = r.find("width=\"").expect("width") + 7;
        r[from..from + r[from..].find('"').expect("end")]
            .parse()
            .expect("number")
    }

    #[test]
    fn budget_bar_maps_used_over_limit() {
        let svg = budget_bar(&bar(250, 500), 402, 60);
        assert!(svg.contains(r#"data-used="250" data-limit="500""#));
        // Half of the 400 units between the 1-unit margins.
        assert!((width_of_used(&svg) - 200.0).abs() < 0.06, "{svg}");
        assert!(svg.contains("#1a7f37"));
        assert!(svg.contains(">250 of 500 calls (50.0%)</text>"));
        assert!(svg.contains(">warn 80%</text>") && svg.contains(">stop 95%</text>"));
        // The marks sit at their shares.
        assert!(svg.contains(r#"class="mark-warn" x1="321.0""#), "{svg}");
        assert!(svg.contains(r#"class="mark-stop" x1="381.0""#), "{svg}");
    }

    #[test]
    fn budget_bar_colours_and_clamps() {
        assert!(budget_bar(&bar(410, 500), 402, 60).contains("#9a6700"));
        let over = budget_bar(&bar(900, 500), 402, 60);
        assert!(over.contains("#b42318"));
        assert!((width_of_used(&over) - 400.0).abs() < 0.06);
        assert!(over.contains("1,800.0%") || over.contains("180.0%"));
        let none = budget_bar(&bar(0, 0), 402, 60);
        assert!(!none.contains("NaN"));
    }

    #[test]
    fn budget_bar_text_is_escaped() {
        let svg = budget_bar(&bar(1, 500), 402, 60);
        assert!(svg.contains("cloud &lt;demo&gt; &amp; &quot;co&quot;"));
        assert!(!svg.contains("<demo>"));
    }
}
