//! The event log: EVENTS.

use serde::Serialize;

use super::{Context, Plan, call, ok, page_size, target};
use crate::protocol::{Mref, Time};
use crate::store::Event;

/// An event as replies show it; a timeout also has `scheduled_end` and
/// `processed_at`; a start (user `null`) `processed_at`, an end (user
/// `null`) `scheduled_end`, `processed_at` and `reason`.
#[derive(Serialize)]
pub(super) struct EventRow<'a> {
    id: &'a str,
    /// `null` for the instance's start and end.
    user: Option<u64>,
    #[serde(rename = "type")]
    kind: &'static str,
    code: u8,
    at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_end: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processed_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl<'a> EventRow<'a> {
    pub(super) fn of(event: &'a Event) -> EventRow<'a> {
        EventRow {
            id: &event.id,
            user: event.user,
            kind: event.kind.as_str(),
            code: event.kind.code(),
            at: Time(event.at),
            scheduled_end: event.scheduled_end.map(Time),
            processed_at: event.processed_at.map(Time),
            reason: event.reason.map(|r| r.as_str()),
        }
    }
}

/// EVENTS' reply.
#[derive(Serialize)]
struct EventsReply<'a> {
    events: Vec<EventRow<'a>>,
    next: Option<&'a str>,
}

/// # Format
/// `EVENTS <mref> [AFTER <id>] [LIMIT <n>]` ->
/// `{"events":[{"id","user","type","code","at"}...],"next":<id or null>}`;
/// a timeout also has `scheduled_end` and `processed_at`. A page stops
/// before it would pass the reply limit (`next` set).
pub fn events(ctx: &Context, mref: Mref, after: Option<String>, limit: Option<u64>) -> Plan {
    let limit = match page_size(ctx, limit) {
        Ok(limit) => limit,
        Err(err) => return Plan::Done(Err(err)),
    };
    let page = ctx.store.events_call(
        target(mref),
        after.as_deref(),
        limit,
        Some(ctx.limits.reply_bytes),
    );
    call(page, |(_, page)| {
        ok(EventsReply {
            events: page.items.iter().map(EventRow::of).collect(),
            next: page.next.as_deref(),
        })
    })
}
