//! The event log: EVENTS.

use serde_json::{Value, json};

use super::{CmdResult, Context, page_size, target};
use crate::protocol::{Mref, format_time};
use crate::store::Event;

/// An event as replies show it.
fn event_json(event: &Event) -> Value {
    let mut row = json!({
        "id": event.id,
        "user": event.user,
        "type": event.kind.as_str(),
        "code": event.kind.code(),
        "at": format_time(event.at),
    });
    timeout_fields(&mut row, event);
    row
}

/// A timeout's `scheduled_end` and `processed_at`, added to its row.
pub(super) fn timeout_fields(row: &mut Value, event: &Event) {
    if let Some(end) = event.scheduled_end {
        row["scheduled_end"] = json!(format_time(end));
    }
    if let Some(processed) = event.processed_at {
        row["processed_at"] = json!(format_time(processed));
    }
}

/// # Format
/// `EVENTS <mref> [AFTER <id>] [LIMIT <n>]` ->
/// `{"events":[{"id","user","type","code","at"}...],"next":<id or null>}`;
/// a timeout also has `scheduled_end` and `processed_at`.
pub async fn events(
    ctx: &Context,
    mref: Mref,
    after: Option<&str>,
    limit: Option<u64>,
) -> CmdResult {
    let limit = page_size(ctx, limit)?;
    let (_, page) = ctx.store.events(target(mref), after, limit).await?;
    let events: Vec<Value> = page.items.iter().map(event_json).collect();
    Ok(json!({"events": events, "next": page.next}))
}
