//! The daemon's counters, shown by STATS: connections, requests by
//! command, errors by code, ticks. Plain atomics: counting never waits.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use crate::error::Code;
use crate::protocol::COMMANDS;

/// Counters shared by every connection.
#[derive(Debug)]
pub struct Stats {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    /// Connections turned away at the connection limit.
    connections_refused: AtomicU64,
    /// One per entry of `protocol::COMMANDS`.
    requests: Vec<AtomicU64>,
    /// Requests that did not parse (no command to count them under).
    unparsed: AtomicU64,
    /// One per `Code::ALL`.
    errors: Vec<AtomicU64>,
    ticks_run: AtomicU64,
    ticks_failed: AtomicU64,
    /// Scheduled ticks skipped because the previous one was still running.
    ticks_skipped: AtomicU64,
    /// Times the cron job was found silent and re-created.
    scheduler_recoveries: AtomicU64,
    /// When the last tick succeeded (ms since the epoch; 0: never).
    last_good_tick: AtomicI64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            requests: COMMANDS.iter().map(|_| AtomicU64::new(0)).collect(),
            unparsed: AtomicU64::new(0),
            errors: Code::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            ticks_run: AtomicU64::new(0),
            ticks_failed: AtomicU64::new(0),
            ticks_skipped: AtomicU64::new(0),
            scheduler_recoveries: AtomicU64::new(0),
            last_good_tick: AtomicI64::new(0),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// A connection was accepted.
    pub fn connection_opened(&self) {
        bump(&self.connections_open);
        bump(&self.connections_total);
    }

    /// A connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was turned away at the limit.
    pub fn connection_refused(&self) {
        bump(&self.connections_refused);
    }

    /// A request for `command` (a name of `COMMANDS`), or one that did not
    /// parse (`None`).
    pub fn request(&self, command: Option<&str>) {
        match command.and_then(|name| COMMANDS.iter().position(|c| c.name == name)) {
            Some(i) => bump(&self.requests[i]),
            None => bump(&self.unparsed),
        }
    }

    /// A reply with an error `code`.
    pub fn error(&self, code: Code) {
        if let Some(i) = Code::ALL.iter().position(|c| *c == code) {
            bump(&self.errors[i]);
        }
    }

    /// A tick succeeded at `now`.
    pub fn tick_succeeded(&self, now: i64) {
        bump(&self.ticks_run);
        self.last_good_tick.store(now, Ordering::Relaxed);
    }

    /// A tick failed.
    pub fn tick_failed(&self) {
        bump(&self.ticks_failed);
    }

    /// A scheduled tick was skipped: the previous one still ran.
    pub fn tick_skipped(&self) {
        bump(&self.ticks_skipped);
    }

    /// The cron job was re-created after it fell silent.
    pub fn scheduler_recovered(&self) {
        bump(&self.scheduler_recoveries);
    }

    /// When the last tick succeeded (ms since the epoch), if one did.
    pub fn last_good_tick(&self) -> Option<i64> {
        let at = self.last_good_tick.load(Ordering::Relaxed);
        (at > 0).then_some(at)
    }

    /// Ticks run, failed and skipped so far.
    pub fn tick_counts(&self) -> (u64, u64, u64) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            load(&self.ticks_run),
            load(&self.ticks_failed),
            load(&self.ticks_skipped),
        )
    }

    /// Connections open now.
    pub fn open_connections(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Everything, as STATS shows it (without the Redis round trip, which
    /// the command measures itself).
    pub fn snapshot(&self) -> Value {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut requests = Map::new();
        for (info, counter) in COMMANDS.iter().zip(&self.requests) {
            requests.insert(info.name.to_string(), json!(load(counter)));
        }
        requests.insert("(unparsed)".into(), json!(load(&self.unparsed)));
        let mut errors = Map::new();
        for (code, counter) in Code::ALL.iter().zip(&self.errors) {
            errors.insert(code.as_str().to_string(), json!(load(counter)));
        }
        json!({
            "connections": {
                "open": load(&self.connections_open),
                "total": load(&self.connections_total),
                "refused": load(&self.connections_refused),
            },
            "requests": requests,
            "errors": errors,
            "ticks": {
                "run": load(&self.ticks_run),
                "failed": load(&self.ticks_failed),
                "skipped": load(&self.ticks_skipped),
                "last_good": self.last_good_tick().map(crate::protocol::format_time),
                "scheduler_recoveries": load(&self.scheduler_recoveries),
            },
        })
    }
}
