//! The ends of instances: END by hand, TICK.

use serde_json::json;

use super::{CmdResult, Context, target};
use crate::protocol::{Mref, format_time};

/// # Format
/// `END <mref>` (admin) -> `{"meeting","order","ended_at","timed_out":[user...]}`
pub async fn end(ctx: &Context, mref: Mref) -> CmdResult {
    let ended = ctx.store.end(target(mref)).await?;
    Ok(json!({
        "meeting": ended.instance.meeting,
        "order": ended.instance.order,
        "ended_at": format_time(ended.ended_at),
        "timed_out": ended.timed_out,
    }))
}

/// # Format
/// `TICK` (admin) -> `{"activated":["M/O"...],"ended":["M/O"...],
/// "missed":["M/O"...],"timeouts":n}` (`missed`: instances whose whole
/// window passed while no tick ran, ended without events)
pub async fn tick(ctx: &Context) -> CmdResult {
    let result = ctx.store.tick(ctx.store.now()).await;
    ctx.stats.tick(result.is_ok());
    let report = result?;
    let names = |list: &[crate::store::InstanceId]| -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    };
    Ok(json!({
        "activated": names(&report.activated),
        "ended": names(&report.ended),
        "missed": names(&report.missed),
        "timeouts": report.timeouts,
    }))
}
