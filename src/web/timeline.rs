//! The attendance timeline: one row per user, a bar for each stretch
//! between a join and the leave or timeout that ended it, the window's
//! start and end marked, drawn as SVG. Pure: events in, text out, no I/O,
//! so the web view and `meetingctl report --svg` draw the same picture.
//!
//! [`Spans`] folds an instance's events (oldest first) into each user's
//! stretches; [`layout`] places them on the picture (numbers a test can
//! check); [`svg`] writes the picture, every text escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use maud::{Markup, html};

use crate::protocol::Time;
use crate::store::{Id, Millis};

/// The picture's width, in SVG units (pixels at 100 %).
pub const WIDTH: f64 = 960.0;
/// Where the bars start: left of it, the users' names.
pub const LABELS: f64 = 190.0;
/// Room right of the last bar.
pub const RIGHT: f64 = 24.0;
/// The height of one user's row.
pub const ROW: f64 = 26.0;
/// The height of a bar.
pub const BAR: f64 = 16.0;
/// Room above the first row (the time axis' labels).
pub const TOP: f64 = 40.0;
/// Room below the last row.
pub const BOTTOM: f64 = 12.0;
/// The narrowest bar drawn, so a stay of a moment still shows.
pub const MIN_BAR: f64 = 2.0;

/// The least room between a tick and the window's start or end lines.
pub const TICK_ROOM: f64 = 24.0;

/// The width the bars share.
pub const PLOT: f64 = WIDTH - LABELS - RIGHT;

/// One stretch of a user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The join.
    pub start: Millis,
    /// The leave or timeout; for a user still in, the moment drawn.
    pub end: Millis,
    /// Still in: the bar ends now.
    pub open: bool,
}

/// One user's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The user.
    pub user: Id,
    /// What the row is labelled (the user's name, or their id).
    pub label: String,
    /// The stretches, oldest first.
    pub spans: Vec<Span>,
}

/// What a timeline shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// What it is of (`M/O`), for its title.
    pub name: String,
    /// The window's start.
    pub from: Millis,
    /// The window's end.
    pub to: Millis,
    /// Now, marked while the window runs.
    pub now: Option<Millis>,
    /// The rows, in the order drawn.
    pub rows: Vec<Row>,
}

/// A user's closed stretches (join, leave), and since when they are in.
type Stays = (Vec<(Millis, Millis)>, Option<Millis>);

/// The fold of an instance's joins, leaves and timeouts into stretches.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    /// Each user's closed stretches, and since when they are in (if they are).
    users: BTreeMap<Id, Stays>,
    /// Users by their first join.
    order: Vec<Id>,
}

impl Spans {
    /// Nobody yet.
    pub fn new() -> Spans {
        Spans::default()
    }

    /// `user` joined at `at` (a join while in keeps the earlier one).
    pub fn join(&mut self, user: Id, at: Millis) {
        let entry = self.users.entry(user).or_insert_with(|| {
            self.order.push(user);
            (Vec::new(), None)
        });
        entry.1.get_or_insert(at);
    }

    /// `user` left or timed out at `at` (ignored unless they were in).
    pub fn leave(&mut self, user: Id, at: Millis) {
        if let Some((closed, since)) = self.users.get_mut(&user)
            && let Some(since) = since.take()
        {
            closed.push((since, at.max(since)));
        }
    }

    /// The users in now, by first join.
    pub fn present(&self) -> impl Iterator<Item = Id> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|u| self.users.get(u).is_some_and(|(_, since)| since.is_some()))
    }

    /// Every user who was ever in, by first join.
    pub fn users(&self) -> &[Id] {
        &self.order
    }

    /// The rows, by first join, labelled by `label`; a stretch still open
    /// ends at `until`.
    pub fn rows(&self, until: Millis, label: impl Fn(Id) -> String) -> Vec<Row> {
        self.order
            .iter()
            .map(|&user| {
                let (closed, since) = &self.users[&user];
                let mut spans: Vec<Span> = closed
                    .iter()
                    .map(|&(start, end)| Span {
                        start,
                        end,
                        open: false,
                    })
                    .collect();
                if let Some(since) = since {
                    spans.push(Span {
                        start: *since,
                        end: until.max(*since),
                        open: true,
                    });
                }
                Row {
                    user,
                    label: label(user),
                    spans,
                }
            })
            .collect()
    }
}

/// A bar as placed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// The row it is on (0: the first).
    pub row: usize,
    /// Its left edge.
    pub x: f64,
    /// Its width.
    pub width: f64,
    /// Its top edge.
    pub y: f64,
    /// The stretch it draws, clipped to the window.
    pub span: Span,
}

/// A vertical line across the rows, with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Where.
    pub x: f64,
    /// What it says.
    pub label: String,
    /// `start`, `end`, `now` or `tick`.
    pub kind: &'static str,
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The picture's height.
    pub height: f64,
    /// The bars, row by row.
    pub bars: Vec<Bar>,
    /// The window's start and end, now, and the time axis' ticks.
    pub marks: Vec<Mark>,
}

/// Round to a tenth, as the picture writes numbers.
fn tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `HH:MM` of a time (UTC), with the day when the window spans days.
fn clock(ms: Millis, with_day: bool) -> String {
    let text = Time(ms).to_string();
    // 2026-11-22T10:00:00.000Z
    if with_day && text.len() >= 16 {
        format!("{} {}", &text[5..10], &text[11..16])
    } else if text.len() >= 16 {
        text[11..16].to_string()
    } else {
        text
    }
}

/// The step between the axis' ticks: the smallest of the usual ones that
/// puts at most 8 ticks on the window.
fn tick_step(length: Millis) -> Millis {
    const MINUTE: Millis = 60_000;
    const STEPS: [Millis; 13] = [
        MINUTE,
        2 * MINUTE,
        5 * MINUTE,
        10 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        60 * MINUTE,
        120 * MINUTE,
        180 * MINUTE,
        360 * MINUTE,
        720 * MINUTE,
        1440 * MINUTE,
        7 * 1440 * MINUTE,
    ];
    STEPS
        .iter()
        .copied()
        .find(|step| length / step <= 8)
        .unwrap_or(length / 8 + 1)
}

/// Place the chart: x from the window (its start at [`LABELS`], its end
/// at [`WIDTH`] - [`RIGHT`]), a row of [`ROW`] per user from [`TOP`];
/// each stretch clipped to the window, at least [`MIN_BAR`] wide.
pub fn layout(chart: &Chart) -> Layout {
    let length = (chart.to - chart.from).max(1);
    let x = |t: Millis| {
        let t = t.clamp(chart.from, chart.to);
        tenth(LABELS + (t - chart.from) as f64 * PLOT / length as f64)
    };
    let mut bars = Vec::new();
    for (row, r) in chart.rows.iter().enumerate() {
        let y = tenth(TOP + row as f64 * ROW + (ROW - BAR) / 2.0);
        for span in &r.spans {
            if span.end < chart.from || span.start > chart.to {
                continue;
            }
            let clipped = Span {
                start: span.start.max(chart.from),
                end: span.end.min(chart.to),
                open: span.open,
            };
            let left = x(clipped.start);
            let width = tenth((x(clipped.end) - left).max(MIN_BAR));
            bars.push(Bar {
                row,
                x: left,
                width,
                y,
                span: clipped,
            });
        }
    }
    let with_day = length > 20 * 3_600_000;
    let mut marks = Vec::new();
    let step = tick_step(length);
    let mut tick = (chart.from / step + 1) * step;
    let (first, last) = (x(chart.from), x(chart.to));
    while tick < chart.to {
        let at = x(tick);
        // a tick's label too close to the start's or end's line is left out
        if at - first < TICK_ROOM || last - at < TICK_ROOM {
            tick += step;
            continue;
        }
        marks.push(Mark {
            x: x(tick),
            label: clock(tick, with_day),
            kind: "tick",
        });
        tick += step;
    }
    marks.push(Mark {
        x: x(chart.from),
        label: format!("start {}", clock(chart.from, with_day)),
        kind: "start",
    });
    marks.push(Mark {
        x: x(chart.to),
        label: format!("end {}", clock(chart.to, with_day)),
        kind: "end",
    });
    if let Some(now) = chart.now.filter(|now| (chart.from..chart.to).contains(now)) {
        marks.push(Mark {
            x: x(now),
            label: "now".into(),
            kind: "now",
        });
    }
    let rows = chart.rows.len().max(1) as f64;
    Layout {
        height: tenth(TOP + rows * ROW + BOTTOM),
        bars,
        marks,
    }
}

/// A length of time as people say it: `1 h 05 min`, `12 min`, `40 s`.
pub fn duration(ms: Millis) -> String {
    let s = ms.max(0) / 1000;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, _) => format!("{m} min"),
        (h, m, _) => format!("{h} h {m:02} min"),
    }
}

/// A number as the picture writes it.
fn n(value: f64) -> String {
    let mut text = String::new();
    let _ = write!(text, "{}", tenth(value));
    text
}

/// The longest label drawn, in characters.
const LABEL_CHARS: usize = 26;

fn short(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        label.to_string()
    } else {
        let mut cut: String = label.chars().take(LABEL_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// The chart as an `<svg>` element (valid alone as an SVG file, and
/// inline in HTML). Every text is escaped; colours are attributes, so it
/// needs no stylesheet. Each bar carries its stretch in `data-user`,
/// `data-start` and `data-end` (RFC 3339), and says it in its title.
pub fn svg(chart: &Chart) -> Markup {
    let layout = layout(chart);
    let bottom = layout.height - BOTTOM;
    let with_day = chart.to - chart.from > 20 * 3_600_000;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img"
            width=(n(WIDTH)) height=(n(layout.height))
            viewBox={ "0 0 " (n(WIDTH)) " " (n(layout.height)) }
            font-family="sans-serif" font-size="12"
            data-from=(Time(chart.from).to_string()) data-to=(Time(chart.to).to_string()) {
            title { "Attendance of " (chart.name) }
            rect x="0" y="0" width=(n(WIDTH)) height=(n(layout.height)) fill="#ffffff" {}
            @for (i, _) in chart.rows.iter().enumerate() {
                @if i % 2 == 1 {
                    rect x="0" y=(n(TOP + i as f64 * ROW)) width=(n(WIDTH)) height=(n(ROW))
                        fill="#f4f6f9" {}
                }
            }
            @for mark in &layout.marks {
                @match mark.kind {
                    "tick" => {
                        line class="tick" x1=(n(mark.x)) x2=(n(mark.x)) y1=(n(TOP - 6.0)) y2=(n(bottom))
                            stroke="#e1e5eb" stroke-width="1" {}
                        text x=(n(mark.x)) y=(n(TOP - 10.0)) text-anchor="middle" fill="#7a8594" { (mark.label) }
                    }
                    kind => {
                        @let colour = if kind == "now" { "#d9822b" } else { "#3a4a5e" };
                        @let anchor = match kind { "start" => "start", "end" => "end", _ => "middle" };
                        line class=(kind) x1=(n(mark.x)) x2=(n(mark.x)) y1=(n(TOP - 6.0)) y2=(n(bottom))
                            stroke=(colour) stroke-width="1.5"
                            stroke-dasharray=[(kind == "now").then_some("4 3")] {}
                        text class={ (kind) "-label" } x=(n(mark.x)) y=(n(TOP - 26.0)) text-anchor=(anchor)
                            fill=(colour) font-weight="bold" { (mark.label) }
                    }
                }
            }
            @for (i, row) in chart.rows.iter().enumerate() {
                text class="who" x="8" y=(n(TOP + i as f64 * ROW + ROW / 2.0 + 4.0)) fill="#1f2a37" {
                    title { (row.label) }
                    (short(&row.label))
                }
            }
            @if chart.rows.is_empty() {
                text x=(n(LABELS)) y=(n(TOP + ROW / 2.0 + 4.0)) fill="#7a8594" { "Nobody has joined." }
            }
            @for bar in &layout.bars {
                @let row = &chart.rows[bar.row];
                rect class=(if bar.span.open { "bar open" } else { "bar" })
                    x=(n(bar.x)) y=(n(bar.y)) width=(n(bar.width)) height=(n(BAR)) rx="3"
                    fill=(if bar.span.open { "#5fa36a" } else { "#4f7cac" })
                    data-user=(row.user)
                    data-start=(Time(bar.span.start).to_string())
                    data-end=(Time(bar.span.end).to_string()) {
                    title {
                        (row.label) ": " (clock(bar.span.start, with_day)) "–"
                        @if bar.span.open { "now" } @else { (clock(bar.span.end, with_day)) }
                        " (" (duration(bar.span.end - bar.span.start)) ")"
                    }
                }
            }
        }
    }
}

/// The chart as a standalone SVG file.
pub fn svg_file(chart: &Chart) -> String {
    let mut text = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    text.push_str(&svg(chart).into_string());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: Millis = 1_800_000_000_000;
    const HOUR: Millis = 3_600_000;
    const MIN: Millis = 60_000;

    fn chart(spans: &Spans, now: Option<Millis>) -> Chart {
        Chart {
            name: "7/1".into(),
            from: FROM,
            to: FROM + HOUR,
            now,
            rows: spans.rows(now.unwrap_or(FROM + HOUR), |u| format!("user {u}")),
        }
    }

    #[test]
    fn bars_sit_where_the_stretches_are() {
        let mut spans = Spans::new();
        // user 2 first: rows go by first join
        spans.join(2, FROM + 15 * MIN);
        spans.leave(2, FROM + 30 * MIN);
        spans.join(1, FROM + 30 * MIN);
        spans.leave(1, FROM + 45 * MIN);
        spans.join(2, FROM + 45 * MIN);
        // a timeout at the end closes user 2's second stretch
        spans.leave(2, FROM + HOUR);
        let layout = layout(&chart(&spans, None));
        let quarter = PLOT / 4.0;
        let placed: Vec<(usize, f64, f64)> =
            layout.bars.iter().map(|b| (b.row, b.x, b.width)).collect();
        assert_eq!(
            placed,
            vec![
                (0, LABELS + quarter, quarter),
                (0, LABELS + 3.0 * quarter, quarter),
                (1, LABELS + 2.0 * quarter, quarter),
            ]
        );
        assert_eq!(layout.bars[0].y, TOP + (ROW - BAR) / 2.0);
        assert_eq!(layout.bars[2].y, TOP + ROW + (ROW - BAR) / 2.0);
        assert_eq!(layout.height, TOP + 2.0 * ROW + BOTTOM);
        let start = layout
            .marks
            .iter()
            .find(|m| m.kind == "start")
            .expect("start");
        let end = layout.marks.iter().find(|m| m.kind == "end").expect("end");
        assert_eq!((start.x, end.x), (LABELS, WIDTH - RIGHT));
        // 10-minute ticks inside the window
        let ticks: Vec<f64> = layout
            .marks
            .iter()
            .filter(|m| m.kind == "tick")
            .map(|m| m.x)
            .collect();
        assert_eq!(ticks.len(), 5, "{ticks:?}");
        assert_eq!(ticks[0], tenth(LABELS + PLOT / 6.0));
    }

    #[test]
    fn an_open_stretch_ends_now_and_strays_are_clipped() {
        let mut spans = Spans::new();
        spans.join(5, FROM + 6 * MIN);
        spans.leave(9, FROM + 7 * MIN); // never joined: nothing
        spans.join(6, FROM + 50 * MIN);
        spans.leave(6, FROM + 70 * MIN); // a timeout processed late
        spans.join(8, FROM + 20 * MIN);
        spans.leave(8, FROM + 20 * MIN); // in and out at once
        let now = FROM + 12 * MIN;
        let layout = layout(&chart(&spans, Some(now)));
        let tenth_of_plot = PLOT / 10.0;
        let open = layout.bars[0];
        assert!(open.span.open);
        assert_eq!(open.x, LABELS + tenth_of_plot);
        assert_eq!(open.width, tenth(tenth_of_plot));
        let late = layout.bars[1];
        assert_eq!(late.span.end, FROM + HOUR);
        assert_eq!(late.x + late.width, WIDTH - RIGHT);
        assert_eq!(layout.bars[2].width, MIN_BAR);
        assert_eq!(layout.bars.len(), 3);
        let marked = layout.marks.iter().find(|m| m.kind == "now").expect("now");
        assert_eq!(marked.x, tenth(LABELS + PLOT / 5.0));
        assert_eq!(spans.present().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn the_picture_writes_the_layout_and_escapes_every_text() {
        let mut spans = Spans::new();
        spans.join(1, FROM);
        spans.leave(1, FROM + 30 * MIN);
        let mut chart = chart(&spans, None);
        chart.rows[0].label = "<script>alert(1)</script> & \"Bob\"".into();
        chart.name = "<b>".into();
        let text = svg_file(&chart);
        assert!(text.starts_with("<?xml"), "{text}");
        assert!(!text.contains("<script>"), "{text}");
        assert!(!text.contains("<b>"), "{text}");
        assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Bob&quot;"));
        let bar = format!(
            "x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"",
            n(LABELS),
            n(TOP + 5.0),
            n(PLOT / 2.0),
            n(BAR)
        );
        assert!(text.contains(&bar), "{bar} in {text}");
        assert!(
            text.contains("data-start=\"2027-01-15T08:00:00.000Z\""),
            "{text}"
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(40_000), "40 s");
        assert_eq!(duration(12 * MIN + 5_000), "12 min");
        assert_eq!(duration(65 * MIN), "1 h 05 min");
    }
}
