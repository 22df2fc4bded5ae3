//! The session's own commands: PING, HELP, STATS, QUIT.

use serde_json::json;

use super::{CmdError, CmdResult, Context, ok};
use crate::error::Code;

/// # Format
/// `PING` -> `"PONG"`
pub fn ping() -> CmdResult {
    ok("PONG")
}

/// # Format
/// `HELP` -> `{"commands":[{"command","syntax","admin","summary"}...],"notation"}`
/// `HELP <command>` -> `{"command","syntax","admin","summary"}`
pub fn help(command: Option<&str>) -> CmdResult {
    crate::protocol::help(command)
        .map_err(|message| CmdError::new(Code::UnknownCommand, message))
        .and_then(ok)
}

/// # Format
/// `STATS` -> `{"connections":{"open","total","refused"},"requests":{<command>:n},
/// "errors":{<code>:n},"errors_by_command":{<command>:n},
/// "latency":{<command>:{"count","p50_ms","p90_ms","p99_ms","p999_ms","max_ms"}},
/// "ticks":{"run","failed","skipped","retried","last_good","scheduler_recoveries"},
/// "watch":{"watchers","instances","watchers_dropped","dropped_events"},
/// "redis_rtt_ms":x}` (`latency` lists the commands that ran;
/// `redis_rtt_ms` is null when Redis does not answer).
pub async fn stats(ctx: &Context) -> CmdResult {
    let mut snapshot = ctx.stats.snapshot();
    let rtt = ctx
        .store
        .ping()
        .await
        .ok()
        .map(|d| d.as_secs_f64() * 1000.0);
    snapshot["redis_rtt_ms"] = json!(rtt);
    ok(snapshot)
}

/// # Format
/// `QUIT` -> `"BYE"`, then the daemon closes the connection.
pub fn quit() -> CmdResult {
    ok("BYE")
}
