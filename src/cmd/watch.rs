//! Watching: WATCH and UNWATCH, and the line a watcher receives per entry.

use serde_json::{Value, json};

use super::{CmdError, Context, Outcome};
use crate::error::Code;
use crate::protocol::{self, Mref, format_time};
use crate::store::{FeedItem, InstanceId, StreamId};

/// # Format
/// `WATCH <mref> [AFTER <id>]` -> `{"watching":"M/O"}`, then one line per
/// entry of the instance, in its order, as it happens:
/// `{"event":{"id","meeting","order","type","user","at"}}` with `type`
/// `join`, `leave`, `timeout` (also `scheduled_end`, `processed_at`) or
/// `message` (also `text`). With `AFTER`, the entries after that id come
/// first. A watcher that falls too far behind gets
/// `{"dropped":N,"resume":"<id>"}` and is back in request mode.
pub async fn watch(ctx: &Context, mref: Mref, after: Option<String>) -> Result<Outcome, CmdError> {
    let after = after
        .map(|id| {
            id.parse::<StreamId>()
                .map_err(|e| CmdError::new(Code::BadRequest, format!("AFTER: {e}")))
        })
        .transpose()?;
    let instance = ctx.store.resolve(super::target(mref)).await?;
    let watcher = ctx.hub.subscribe(instance, after).await?;
    Ok(Outcome::Watch(
        json!({"watching": instance.to_string()}),
        watcher,
    ))
}

/// # Format
/// `UNWATCH` -> `{"unwatched":"M/O"}`, or `{"unwatched":null}` on a
/// connection that was not watching.
pub fn unwatch(instance: Option<InstanceId>) -> Value {
    json!({"unwatched": instance.map(|i| i.to_string())})
}

/// The line of one entry: `{"event":{...}}` and a newline.
pub fn render(instance: InstanceId, item: &FeedItem) -> Vec<u8> {
    let event = match item {
        FeedItem::Event(e) => {
            let mut row = json!({
                "id": e.id,
                "meeting": instance.meeting,
                "order": instance.order,
                "type": e.kind.as_str(),
                "user": e.user,
                "at": format_time(e.at),
            });
            super::events::timeout_fields(&mut row, e);
            row
        }
        FeedItem::Message(m) => json!({
            "id": m.id,
            "meeting": instance.meeting,
            "order": instance.order,
            "type": "message",
            "user": m.user,
            "at": format_time(m.at),
            "text": m.text,
        }),
    };
    protocol::event_line(&event)
}
