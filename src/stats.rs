//! The daemon's counters, shown by STATS: connections (refusals by
//! reason), requests by command, errors by code, latency by command,
//! ticks, watchers. Counters are plain atomics; each command's latency histogram has a lock of its
//! own, held only to record one value.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use serde_json::{Map, Value, json};

use crate::error::Code;
use crate::protocol::COMMANDS;

/// Why a client was turned away when it connected (it got `unavailable`
/// and was closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot was taken (`socket.max_connections`).
    MaxConnections,
    /// Every slot open to users who are not admins was taken (the rest
    /// are `socket.admin_reserved_connections`).
    AdminReserve,
    /// The peer's uid had `socket.max_connections_per_uid` open.
    PerUid,
    /// The daemon was out of file descriptors.
    FileDescriptors,
}

impl Refusal {
    /// Every reason, in the order STATS lists them.
    pub const ALL: [Refusal; 4] = [
        Refusal::MaxConnections,
        Refusal::AdminReserve,
        Refusal::PerUid,
        Refusal::FileDescriptors,
    ];

    /// Its name in STATS and in the metrics' `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::AdminReserve => "admin_reserve",
            Refusal::PerUid => "per_uid",
            Refusal::FileDescriptors => "file_descriptors",
        }
    }
}

/// Counters shared by every connection.
#[derive(Debug)]
pub struct Stats {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    /// Bytes of the connections' read and write buffers now (a connection
    /// that waits holds none).
    buffered_bytes: AtomicU64,
    /// Connections turned away, one per `Refusal::ALL`.
    connections_refused: Vec<AtomicU64>,
    /// Last lines without their newline, dropped at end of stream (a
    /// client that died mid-write): never run.
    partial_lines: AtomicU64,
    /// One per entry of `protocol::COMMANDS`.
    requests: Vec<AtomicU64>,
    /// Requests that did not parse (no command to count them under).
    unparsed: AtomicU64,
    /// One per `Code::ALL`.
    errors: Vec<AtomicU64>,
    /// Error replies, one per entry of `protocol::COMMANDS`.
    failed: Vec<AtomicU64>,
    ticks_run: AtomicU64,
    ticks_failed: AtomicU64,
    /// Scheduled ticks skipped because the previous one was still running.
    ticks_skipped: AtomicU64,
    /// Ticks tried again after a failed one.
    ticks_retried: AtomicU64,
    /// Times the cron job was found silent and re-created.
    scheduler_recoveries: AtomicU64,
    /// When the last tick succeeded (ms since the epoch; 0: never).
    last_good_tick: AtomicI64,
    /// Per entry of `protocol::COMMANDS`: request latency in microseconds,
    /// made at the command's first request (a histogram of this precision
    /// is 136 KiB, written through when made: all of them were 3.5 MiB of
    /// a daemon at rest).
    latency: Vec<Mutex<Option<Histogram<u64>>>>,
    /// Connections watching an instance now.
    watchers: AtomicU64,
    /// Instances watched now.
    watch_readers: AtomicU64,
    /// WATCH's subscriber connections to Redis now.
    watch_lanes: AtomicU64,
    /// Entries delivered as published, and gaps found in what was.
    watch_published: AtomicU64,
    watch_gaps: AtomicU64,
    /// Feed reads that filled gaps or followed a subscription.
    watch_fills: AtomicU64,
    /// Watchers dropped for falling behind, and the entries they missed.
    watchers_dropped: AtomicU64,
    dropped_events: AtomicU64,
    /// Whether this daemon archives (STATS shows the archive section then).
    archive_on: std::sync::atomic::AtomicBool,
    /// Outbox entries waiting, over every partition, at the last look.
    archive_waiting: AtomicU64,
    /// When the oldest of them was written (ms; 0: none waits).
    archive_oldest: AtomicI64,
    /// Outbox entries archived (committed and acknowledged) by this daemon.
    archive_entries: AtomicU64,
    /// Rows written to the archive database by this daemon.
    archive_rows: AtomicU64,
    /// Failed archiving attempts (database or Redis unreachable, ...).
    archive_failures: AtomicU64,
    /// How long the archiver paused to make way for requests, µs.
    archive_paused: AtomicU64,
    /// The time requests took, summed, µs (but STATS, PING, HELP and
    /// QUIT, which the daemon answers alone): over an interval, how many
    /// were in progress on average (the archiver's pacing reads it).
    request_micros: AtomicU64,
}

/// A latency histogram: 1 µs to 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            buffered_bytes: AtomicU64::new(0),
            connections_refused: Refusal::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            partial_lines: AtomicU64::new(0),
            requests: COMMANDS.iter().map(|_| AtomicU64::new(0)).collect(),
            unparsed: AtomicU64::new(0),
            errors: Code::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            failed: COMMANDS.iter().map(|_| AtomicU64::new(0)).collect(),
            ticks_run: AtomicU64::new(0),
            ticks_failed: AtomicU64::new(0),
            ticks_skipped: AtomicU64::new(0),
            ticks_retried: AtomicU64::new(0),
            scheduler_recoveries: AtomicU64::new(0),
            last_good_tick: AtomicI64::new(0),
            latency: COMMANDS.iter().map(|_| Mutex::new(None)).collect(),
            watchers: AtomicU64::new(0),
            watch_readers: AtomicU64::new(0),
            watch_lanes: AtomicU64::new(0),
            watch_published: AtomicU64::new(0),
            watch_gaps: AtomicU64::new(0),
            watch_fills: AtomicU64::new(0),
            watchers_dropped: AtomicU64::new(0),
            dropped_events: AtomicU64::new(0),
            archive_on: std::sync::atomic::AtomicBool::new(false),
            archive_waiting: AtomicU64::new(0),
            archive_oldest: AtomicI64::new(0),
            archive_entries: AtomicU64::new(0),
            archive_rows: AtomicU64::new(0),
            archive_failures: AtomicU64::new(0),
            archive_paused: AtomicU64::new(0),
            request_micros: AtomicU64::new(0),
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

    /// A connection's buffer went from `before` bytes to `after`.
    pub fn buffers_resized(&self, before: usize, after: usize) {
        if after > before {
            self.buffered_bytes
                .fetch_add((after - before) as u64, Ordering::Relaxed);
        } else {
            self.buffered_bytes
                .fetch_sub((before - after) as u64, Ordering::Relaxed);
        }
    }

    /// A connection was turned away, for `why`.
    pub fn connection_refused(&self, why: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            bump(&self.connections_refused[i]);
        }
    }

    /// A connection ended with a partial last line, which was dropped.
    pub fn partial_line(&self) {
        bump(&self.partial_lines);
    }

    /// A request answered: for `command` (a name of `COMMANDS`; `None`
    /// for one that did not parse), after `took`, with the error `code` if
    /// it failed. The command is looked up once for all its counters.
    pub fn answered(&self, command: Option<&str>, took: Duration, error: Option<Code>) {
        // the daemon answers these alone (monitoring, liveness): they are
        // not the work the archiver makes way for
        if !matches!(command, Some("STATS" | "PING" | "HELP" | "QUIT")) {
            self.request_micros
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        }
        let index = command.and_then(|name| COMMANDS.iter().position(|c| c.name == name));
        match index {
            Some(i) => {
                bump(&self.requests[i]);
                let micros = (took.as_micros() as u64).clamp(1, 60_000_000);
                self.latency[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_or_insert_with(histogram)
                    .saturating_record(micros);
            }
            None => bump(&self.unparsed),
        }
        if let Some(code) = error {
            if let Some(c) = Code::ALL.iter().position(|c| *c == code) {
                bump(&self.errors[c]);
            }
            if let Some(i) = index {
                bump(&self.failed[i]);
            }
        }
    }

    /// A connection started watching.
    pub fn watcher_added(&self) {
        bump(&self.watchers);
    }

    /// A connection stopped watching.
    pub fn watcher_removed(&self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }

    /// A watcher fell behind and missed `count` entries.
    pub fn watcher_dropped(&self, count: u64) {
        bump(&self.watchers_dropped);
        self.dropped_events.fetch_add(count, Ordering::Relaxed);
    }

    /// An entry was delivered as published.
    pub fn watch_published(&self) {
        bump(&self.watch_published);
    }

    /// A published entry did not follow its instance's cursor.
    pub fn watch_gap(&self) {
        bump(&self.watch_gaps);
    }

    /// `count` feeds were read after their cursors.
    pub fn watch_filled(&self, count: usize) {
        self.watch_fills.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// An instance is watched.
    pub fn reader_started(&self) {
        bump(&self.watch_readers);
    }

    /// An instance is no longer watched (its last watcher went).
    pub fn reader_stopped(&self) {
        self.watch_readers.fetch_sub(1, Ordering::Relaxed);
    }

    /// WATCH opened a subscriber connection.
    pub fn lane_opened(&self) {
        bump(&self.watch_lanes);
    }

    /// WATCH closed (or lost) a subscriber connection.
    pub fn lane_closed(&self) {
        self.watch_lanes.fetch_sub(1, Ordering::Relaxed);
    }

    /// This daemon archives: STATS shows the archive's counters.
    pub fn archive_started(&self) {
        self.archive_on.store(true, Ordering::Relaxed);
    }

    /// The outboxes hold `waiting` entries, the oldest written at `oldest`.
    pub fn archive_backlog(&self, waiting: u64, oldest: Option<i64>) {
        self.archive_waiting.store(waiting, Ordering::Relaxed);
        self.archive_oldest
            .store(oldest.unwrap_or(0), Ordering::Relaxed);
    }

    /// Outbox entries waiting, at the last look.
    pub fn archive_waiting(&self) -> u64 {
        self.archive_waiting.load(Ordering::Relaxed)
    }

    /// Rows written to the archive before their outbox entry is done (a
    /// page of an instance's history, as it commits).
    pub fn archive_rows_written(&self, rows: u64) {
        self.archive_rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// An outbox entry was archived, with `rows` rows written.
    pub fn archived(&self, rows: u64) {
        bump(&self.archive_entries);
        self.archive_rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// The time requests took, summed since the start, µs.
    pub fn request_micros(&self) -> u64 {
        self.request_micros.load(Ordering::Relaxed)
    }

    /// The archiver paused `pause` to make way for requests.
    pub fn archive_paused(&self, pause: Duration) {
        self.archive_paused
            .fetch_add(pause.as_micros() as u64, Ordering::Relaxed);
    }

    /// An archiving attempt failed.
    pub fn archive_failed(&self) {
        bump(&self.archive_failures);
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

    /// A failed tick is tried again.
    pub fn tick_retried(&self) {
        bump(&self.ticks_retried);
    }

    /// Ticks tried again after a failure, so far.
    pub fn tick_retries(&self) -> u64 {
        self.ticks_retried.load(Ordering::Relaxed)
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

    /// Everything, as STATS shows it (without the Redis round trip, which
    /// the command measures itself).
    pub fn snapshot(&self) -> Value {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut requests = Map::new();
        for (info, counter) in COMMANDS.iter().zip(&self.requests) {
            requests.insert(info.name.to_string(), json!(load(counter)));
        }
        requests.insert("(unparsed)".into(), json!(load(&self.unparsed)));
        let mut latency = Map::new();
        for (info, histogram) in COMMANDS.iter().zip(&self.latency) {
            let histogram = histogram
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(histogram) = histogram.as_ref().filter(|h| !h.is_empty()) else {
                continue;
            };
            let ms = |micros: u64| micros as f64 / 1000.0;
            latency.insert(
                info.name.to_string(),
                json!({
                    "count": histogram.len(),
                    "p50_ms": ms(histogram.value_at_quantile(0.50)),
                    "p90_ms": ms(histogram.value_at_quantile(0.90)),
                    "p99_ms": ms(histogram.value_at_quantile(0.99)),
                    "p999_ms": ms(histogram.value_at_quantile(0.999)),
                    "max_ms": ms(histogram.max()),
                }),
            );
        }
        let mut errors = Map::new();
        for (code, counter) in Code::ALL.iter().zip(&self.errors) {
            errors.insert(code.as_str().to_string(), json!(load(counter)));
        }
        let mut failed = Map::new();
        for (info, counter) in COMMANDS.iter().zip(&self.failed) {
            failed.insert(info.name.to_string(), json!(load(counter)));
        }
        let mut refused_by_reason = Map::new();
        for (why, counter) in Refusal::ALL.iter().zip(&self.connections_refused) {
            refused_by_reason.insert(why.as_str().to_string(), json!(load(counter)));
        }
        let refused: u64 = self.connections_refused.iter().map(load).sum();
        json!({
            "connections": {
                "open": load(&self.connections_open),
                "total": load(&self.connections_total),
                "refused": refused,
                "refused_by_reason": refused_by_reason,
                "partial_lines": load(&self.partial_lines),
                "buffered_bytes": load(&self.buffered_bytes),
            },
            "requests": requests,
            "errors": errors,
            "errors_by_command": failed,
            "latency": latency,
            "ticks": {
                "run": load(&self.ticks_run),
                "failed": load(&self.ticks_failed),
                "skipped": load(&self.ticks_skipped),
                "retried": load(&self.ticks_retried),
                "last_good": self.last_good_tick().map(crate::protocol::format_time),
                "scheduler_recoveries": load(&self.scheduler_recoveries),
            },
            "watch": {
                "watchers": load(&self.watchers),
                "instances": load(&self.watch_readers),
                "readers": load(&self.watch_lanes),
                "published": load(&self.watch_published),
                "gaps": load(&self.watch_gaps),
                "fills": load(&self.watch_fills),
                "watchers_dropped": load(&self.watchers_dropped),
                "dropped_events": load(&self.dropped_events),
            },
            "archive": self.archive_snapshot(),
        })
    }

    /// The archive's counters (null when this daemon does not archive):
    /// entries waiting in the outboxes and how old the oldest is, entries
    /// and rows archived, failed attempts, pauses made for requests.
    fn archive_snapshot(&self) -> Value {
        if !self.archive_on.load(Ordering::Relaxed) {
            return Value::Null;
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let oldest = self.archive_oldest.load(Ordering::Relaxed);
        let age = if oldest > 0 {
            let now = chrono::Utc::now().timestamp_millis();
            (now - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        json!({
            "waiting": load(&self.archive_waiting),
            "oldest_age_s": age,
            "entries": load(&self.archive_entries),
            "rows": load(&self.archive_rows),
            "failures": load(&self.archive_failures),
            "paused_s": load(&self.archive_paused) as f64 / 1e6,
        })
    }
}
