//! The ends of instances: END by hand, TICK.

use serde_json::json;

use super::{CmdError, CmdResult, Context, ok, target};
use crate::error::Code;
use crate::protocol::{Mref, format_time};
use crate::scheduler::{TickError, Trigger};
use crate::store::InstanceId;

/// # Format
/// `END <mref>` (admin) -> `{"meeting","order","ended_at","timed_out":[user...]}`
pub async fn end(ctx: &Context, mref: Mref) -> CmdResult {
    let ended = ctx.store.end(target(mref)).await?;
    ok(json!({
        "meeting": ended.instance.meeting,
        "order": ended.instance.order,
        "ended_at": format_time(ended.ended_at),
        "timed_out": ended.timed_out,
    }))
}

/// # Format
/// `TICK` (admin) -> `{"activated":["M/O"...],"ended":["M/O"...],
/// "missed":["M/O"...],"timeouts":n}` (`missed`: instances whose whole
/// window passed while no tick ran, ended without events). The same code
/// path as the scheduler's ticks: it waits for a tick in progress, then
/// ticks.
pub async fn tick(ctx: &Context) -> CmdResult {
    let report = ctx
        .scheduler
        .tick(Trigger::Command)
        .await
        .map_err(|err| match err {
            TickError::Store(err) => CmdError::from(err),
            other => CmdError::new(Code::Internal, other.to_string()),
        })?;
    let names =
        |list: &[InstanceId]| -> Vec<String> { list.iter().map(ToString::to_string).collect() };
    ok(json!({
        "activated": names(&report.activated),
        "ended": names(&report.ended),
        "missed": names(&report.missed),
        "timeouts": report.timeouts,
    }))
}
