//! Watching: WATCH and UNWATCH, and the line a watcher receives per entry.

use serde_json::{Value, json};

use super::{CmdError, Context, Json, Outcome};
use crate::error::Code;
use crate::protocol::{self, Mref, Time};
use crate::store::{EventKind, FeedItem, StreamId, Topic, Transition};
use crate::watch::Watched;

/// # Format
/// `WATCH <mref> [AFTER <id>]` -> `{"watching":"M/O","resume":"<id>"}`
/// (`resume`: where the watch starts, the id a resume starts after if
/// the connection drops before the first entry), then one line per
/// entry of the instance, in its order, as it happens:
/// `{"event":{"id","meeting","order","type","user","at"}}` with `type`
/// `join`, `leave`, `timeout` (also `scheduled_end`, `processed_at`) or
/// `message` (also `text`). With `AFTER`, the entries after that id come
/// first. A watcher that falls too far behind gets
/// `{"dropped":N,"resume":"<id>"}` and is back in request mode. When the
/// daemon stops, a watcher gets `{"closing":"shutdown","resume":"<id>"}`
/// before its connection closes.
pub async fn watch(ctx: &Context, mref: Mref, after: Option<String>) -> Result<Outcome, CmdError> {
    let after = after
        .map(|id| {
            id.parse::<StreamId>()
                .map_err(|e| CmdError::new(Code::BadRequest, format!("AFTER: {e}")))
        })
        .transpose()?;
    let instance = ctx.store.resolve(super::target(mref)).await?;
    let watcher = ctx.hub.subscribe(instance, after).await?;
    let resume = watcher.position().unwrap_or_default().to_string();
    Ok(Outcome::Watch(
        Json::of(&json!({"watching": instance.to_string(), "resume": resume})),
        watcher,
    ))
}

/// A line of what runs as WATCH ACTIVE begins.
#[derive(serde::Serialize)]
struct RunningLine {
    #[serde(rename = "type")]
    kind: &'static str,
    meeting: u64,
    order: u64,
    from: Time,
    to: Time,
}

/// # Format
/// `WATCH ACTIVE` -> `{"watching":"active","running":N}`, then N lines
/// `{"event":{"type":"running","meeting","order","from","to"}}` (what runs
/// by the clock now, by partition then meeting), then a line per start and
/// end of any instance of the store as the store applies it:
/// `{"event":{"id","type":"start"|"end","meeting","order","at","from","to"}}`
/// (an end also has `reason`), in each partition's order. It does not
/// resume: a watcher dropped, or after a reconnect, watches again and
/// starts from what runs then.
pub async fn watch_active(ctx: &Context) -> Result<Outcome, CmdError> {
    let running = ctx.store.running_now().await?;
    let mut lead = Vec::new();
    let mut after = Vec::with_capacity(running.len());
    for (partition, read) in &running {
        for row in &read.rows {
            let line = Json::of(&RunningLine {
                kind: "running",
                meeting: row.instance.id.meeting,
                order: row.instance.id.order,
                from: Time(row.instance.from),
                to: Time(row.instance.to),
            });
            lead.push(protocol::event_line(line.as_bytes()));
        }
        after.push((*partition, read.seen));
    }
    let count = lead.len();
    let watcher = ctx.hub.watch_active(lead, after).await?;
    Ok(Outcome::Watch(
        Json::of(&json!({"watching": "active", "running": count})),
        watcher,
    ))
}

/// # Format
/// `UNWATCH` -> `{"unwatched":"M/O"}` (`"active"` after WATCH ACTIVE), or
/// `{"unwatched":null}` on a connection that was not watching.
pub fn unwatch(watched: Option<Watched>) -> Value {
    json!({"unwatched": watched.map(|w| w.to_string())})
}

/// A start or an end as WATCH ACTIVE shows it.
#[derive(serde::Serialize)]
struct TransitionLine<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    meeting: u64,
    order: u64,
    at: Time,
    from: Time,
    to: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl<'a> TransitionLine<'a> {
    fn of(t: &'a Transition) -> TransitionLine<'a> {
        TransitionLine {
            id: &t.id,
            kind: if t.kind == EventKind::Start {
                "start"
            } else {
                "end"
            },
            meeting: t.instance.meeting,
            order: t.instance.order,
            at: Time(t.at),
            from: Time(t.from),
            to: Time(t.to),
            reason: t.reason.map(|r| r.as_str()),
        }
    }
}

/// A message as a watcher receives it.
#[derive(serde::Serialize)]
struct WatchedMessage<'a> {
    id: &'a str,
    meeting: u64,
    order: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    user: u64,
    at: Time,
    text: &'a str,
}

/// An event as a watcher receives it: the event's row with its instance.
#[derive(serde::Serialize)]
struct WatchedEvent<'a> {
    meeting: u64,
    order: u64,
    #[serde(flatten)]
    event: super::events::EventRow<'a>,
}

/// The line of one entry: `{"event":{...}}` and a newline.
pub fn render(topic: Topic, item: &FeedItem) -> Vec<u8> {
    let instance = match (topic, item) {
        (_, FeedItem::Transition(t)) => {
            return protocol::event_line(Json::of(&TransitionLine::of(t)).as_bytes());
        }
        (Topic::Instance(instance), _) => instance,
        // a partition's log holds transitions only
        (Topic::Partition(_), _) => return Vec::new(),
    };
    let body = match item {
        FeedItem::Event(e) => Json::of(&WatchedEvent {
            meeting: instance.meeting,
            order: instance.order,
            event: super::events::EventRow::of(e),
        }),
        FeedItem::Message(m) => Json::of(&WatchedMessage {
            id: &m.id,
            meeting: instance.meeting,
            order: instance.order,
            kind: "message",
            user: m.user,
            at: Time(m.at),
            text: &m.text,
        }),
        FeedItem::Transition(_) => return Vec::new(),
    };
    protocol::event_line(body.as_bytes())
}
