//! Attendance reports: REPORT.

use serde::Serialize;

use super::{Context, Json, Plan, alone, page_size, target};
use crate::archive::{self, Attendance};
use crate::protocol::{ReportPage, Time};

/// One user's row of a report.
#[derive(Serialize)]
struct ReportRow {
    user: u64,
    first_join: Time,
    last_leave: Option<Time>,
    seconds_present: f64,
    joins: u64,
    messages: u64,
}

impl ReportRow {
    fn of(a: &Attendance) -> ReportRow {
        ReportRow {
            user: a.user,
            first_join: Time(a.first_join),
            last_leave: a.last_leave.map(Time),
            seconds_present: a.seconds(),
            joins: a.joins,
            messages: a.messages,
        }
    }
}

/// REPORT's reply without its rows and `next`.
#[derive(Serialize)]
struct ReportHead {
    meeting: u64,
    order: u64,
    from: Time,
    to: Time,
    state: &'static str,
    ended_at: Option<Time>,
}

/// # Format
/// `REPORT <mref> [AFTER <user>] [LIMIT <n>]` ->
/// `{"meeting","order","from","to","state","ended_at",
/// "rows":[{"user","first_join","last_leave","seconds_present","joins",
/// "messages"}...],"next"}`, a row per user who was ever in the instance,
/// by user id: those after `AFTER`, at most `n` (default and most: the
/// page limit), fewer when more would pass the reply limit; `next` is the
/// last user of the page when more follow (pass it as `AFTER`), else null.
/// Computed from the event log and the chat in Redis, the way the archive
/// computes its attendance rows, so the numbers are the same; a user still
/// in has `last_leave` null and counts until now. Each page reads the
/// whole history again (name the instance, `M/O`, to page through one).
pub fn report(ctx: &Context, page: ReportPage) -> Plan {
    let limit = match page_size(ctx, page.limit) {
        Ok(limit) => limit,
        Err(err) => return Plan::Done(Err(err)),
    };
    let budget = ctx.limits.reply_bytes;
    alone(ctx, move |ctx| async move {
        let report = archive::report(&ctx.store, target(page.mref)).await?;
        let head = ReportHead {
            meeting: report.instance.id.meeting,
            order: report.instance.id.order,
            from: Time(report.instance.from),
            to: Time(report.instance.to),
            state: report.instance.state.as_str(),
            ended_at: report.ended_at.map(Time),
        };
        let after = page.after.unwrap_or(0);
        let rows = report.rows.iter().filter(|a| a.user > after);
        Ok(report_page(&head, rows, limit, budget))
    })
}

/// The reply: `head`'s fields, then at most `limit` of `rows` that fit in
/// `budget` bytes (at least one), then `next`: the last user in when some
/// are left out.
fn report_page<'a>(
    head: &ReportHead,
    rows: impl Iterator<Item = &'a Attendance>,
    limit: usize,
    budget: usize,
) -> Json {
    let mut text = Vec::with_capacity(256);
    // Writing into a Vec cannot fail, and our types always serialize.
    let _ = serde_json::to_writer(&mut text, head);
    text.pop(); // its closing brace
    text.extend_from_slice(b",\"rows\":[");
    let mut rows = rows.peekable();
    let mut taken = 0;
    let mut last = None;
    while let Some(row) = rows.peek() {
        if taken == limit {
            break;
        }
        let before = text.len();
        if taken > 0 {
            text.push(b',');
        }
        let _ = serde_json::to_writer(&mut text, &ReportRow::of(row));
        // the closing text takes at most 40 bytes
        if text.len() + 40 > budget && taken > 0 {
            text.truncate(before);
            break;
        }
        taken += 1;
        last = Some(row.user);
        rows.next();
    }
    let next = if rows.peek().is_some() { last } else { None };
    text.extend_from_slice(b"],\"next\":");
    let _ = serde_json::to_writer(&mut text, &next);
    text.push(b'}');
    Json(text)
}
