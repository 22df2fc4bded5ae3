//! Watching: WATCH and UNWATCH, and the line a watcher receives per entry.

use serde_json::{Value, json};

use super::{CmdError, Context, Json, Outcome};
use crate::error::Code;
use crate::protocol::{self, Mref, Time};
use crate::store::{FeedItem, InstanceId, StreamId};

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
    let resume = watcher.position().to_string();
    Ok(Outcome::Watch(
        Json::of(&json!({"watching": instance.to_string(), "resume": resume})),
        watcher,
    ))
}

/// # Format
/// `UNWATCH` -> `{"unwatched":"M/O"}`, or `{"unwatched":null}` on a
/// connection that was not watching.
pub fn unwatch(instance: Option<InstanceId>) -> Value {
    json!({"unwatched": instance.map(|i| i.to_string())})
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
pub fn render(instance: InstanceId, item: &FeedItem) -> Vec<u8> {
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
    };
    protocol::event_line(body.as_bytes())
}
