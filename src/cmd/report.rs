//! Attendance reports: REPORT.

use serde::Serialize;

use super::{Context, Plan, alone, ok, target};
use crate::archive::{self, Attendance};
use crate::protocol::{Mref, Time};

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

/// REPORT's reply.
#[derive(Serialize)]
struct ReportReply {
    meeting: u64,
    order: u64,
    from: Time,
    to: Time,
    state: &'static str,
    ended_at: Option<Time>,
    rows: Vec<ReportRow>,
}

/// # Format
/// `REPORT <mref>` -> `{"meeting","order","from","to","state","ended_at",
/// "rows":[{"user","first_join","last_leave","seconds_present","joins",
/// "messages"}...]}`, a row per user who was ever in the instance, by
/// user id. Computed from the event log and the chat in Redis, the way
/// the archive computes its attendance rows, so the numbers are the same;
/// a user still in has `last_leave` null and counts until now.
pub fn report(ctx: &Context, mref: Mref) -> Plan {
    alone(ctx, move |ctx| async move {
        let report = archive::report(&ctx.store, target(mref)).await?;
        ok(ReportReply {
            meeting: report.instance.id.meeting,
            order: report.instance.id.order,
            from: Time(report.instance.from),
            to: Time(report.instance.to),
            state: report.instance.state.as_str(),
            ended_at: report.ended_at.map(Time),
            rows: report.rows.iter().map(ReportRow::of).collect(),
        })
    })
}
