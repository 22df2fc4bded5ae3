//! The archive: a durable, queryable copy of what meetingd knows, in a SQL
//! database (PostgreSQL, MySQL/MariaDB or SQLite), beside Redis, which
//! keeps what is live.
//!
//! Nothing is lost and nothing written twice: the library appends what is
//! to be archived to its partition's outbox (a Redis stream) inside the
//! same call that ends an instance or writes a meeting, an audience or an
//! instance, so no crash falls between the two. A user's hash shares no
//! tag with an outbox: USER SET's first call (`meet_user_index`, under the
//! partition's tag) queues the user's values, which the second one then
//! writes; the entry carries them, so the archive never depends on the
//! order of the two. The [`Archiver`] reads the
//! outboxes through one consumer group shared by every daemon on the store
//! (each entry goes to one of them; one held too long by a daemon that went
//! away is taken over with XAUTOCLAIM), writes rows keyed by what Redis
//! gave them (so writing again changes nothing), and acknowledges an entry
//! only after the database committed. An ended instance is copied in
//! bounded pages: its events, its messages (with their POST keys), the
//! users in it and one attendance row per user ([`Tally`]). While the
//! database is down the daemon serves everything else and tries again with
//! a growing pause; STATS shows the backlog.
//!
//! The library announces each outbox entry on its partition's channel; the
//! daemon's watch hub holds those channels and hands them to a [`Wake`],
//! so an idle archiver sends Redis nothing and reads only the outbox that
//! got an entry, looking at every outbox only each `archive.poll_ms` (a
//! lost announcement only delays). Copying an instance, it makes way for
//! the requests while they keep the daemon busy
//! ([`ArchiveOptions::busy_percent`]).
//!
//! [`report`] computes the same attendance from Redis for REPORT (a
//! running instance too); [`backfill`] queues the instances that ended
//! before archiving was on (`meetingd archive --backfill`).
//!
//! `db.rs` holds the database side (pools, migrations, idempotent
//! inserts); `attendance.rs` the pure attendance computation; [`read`]
//! reads it back for the web view (a read-only pool of its own); the Redis
//! side is the store's (`store/archive.rs`).

mod attendance;
mod db;
pub mod read;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use attendance::{Attendance, Tally};
pub use db::{Backend, Db, DbError, SCHEMA_VERSION};

use crate::stats::Stats;
use crate::store::{
    Backlog, Event, Id, Instance, InstanceId, InstanceRef, Message, Millis, OutboxEntry, Store,
    StoreError,
};
use db::{Arg, OnConflict, maybe_time, time};

/// How the archiver works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// The database: `postgres://...`, `mysql://...`, `mariadb://...` or
    /// `sqlite://PATH`.
    pub url: String,
    /// How long an instance's history stays in Redis after its scheduled
    /// end, applied once it is archived (zero: for ever).
    pub retention: Duration,
    /// How long an entry another daemon holds unacknowledged waits before
    /// this one takes it over.
    pub claim_after: Duration,
    /// The longest pause between attempts while something fails.
    pub retry_max: Duration,
    /// How often every outbox is looked at even with no wake-up (the
    /// library announces each new entry on its partition's channel, which
    /// wakes the archiver at once: this look only finds what a lost
    /// announcement left, and entries held too long by another daemon).
    pub poll: Duration,
    /// The most of its time the archiver spends copying an ended instance
    /// while the daemon's requests keep it busy, percent. After each step
    /// (a page) that took t it pauses t × (100 − share) / share, where the
    /// share is `busy_percent` when on average at least one request was in
    /// progress since the last step, 100 (no pause) when none was, and in
    /// between in proportion: beside a saturated request path the archive
    /// takes this share of its time, and runs flat out while the daemon is
    /// idle. 100: never pauses.
    pub busy_percent: u32,
}

/// Why a round of archiving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Redis failed.
    #[error("redis: {0}")]
    Store(#[from] StoreError),
    /// An outbox entry the archiver cannot read (skipped, and logged).
    #[error("outbox entry {0}: {1}")]
    Entry(String, String),
}

/// Most entries read from one outbox at once.
const BATCH: usize = 16;
/// Events or messages per page read from Redis (and per transaction).
const PAGE: usize = 1000;
/// Rows per transaction for users, POST keys, attendance.
const ROWS: usize = 1000;
/// How often the backlog of an outbox that holds entries is counted again
/// (two calls), at most; an empty one is counted when woken, and at each
/// look at every outbox.
const BACKLOG_EVERY: Duration = Duration::from_secs(2);

/// What wakes an archiver: the library announces each entry it appends to
/// a partition's outbox on the partition's channel
/// ([`Store::outbox_channel`]), and whoever holds the subscription (the
/// daemon's watch hub) hands the channel's name here, for each
/// announcement and each time the channel is subscribed again (what was
/// announced meanwhile went by unseen). The archiver then looks at that
/// partition's outbox only.
#[derive(Debug, Default)]
pub struct Wake {
    partitions: std::sync::Mutex<BTreeSet<u64>>,
    /// A channel that names no partition came: look at every outbox.
    all: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Wake {
    /// A new, shared one.
    pub fn new() -> Arc<Wake> {
        Arc::new(Wake::default())
    }

    /// Something was announced on `channel`, or it was subscribed (again).
    pub fn channel(&self, channel: &[u8]) {
        match Store::outbox_channel_partition(channel) {
            Some(partition) => {
                self.partitions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(partition);
            }
            None => self.all.store(true, std::sync::atomic::Ordering::SeqCst),
        }
        self.notify.notify_one();
    }

    /// The partitions woken since the last take, and whether all were.
    fn take(&self) -> (bool, BTreeSet<u64>) {
        let all = self.all.swap(false, std::sync::atomic::Ordering::SeqCst);
        let partitions = std::mem::take(
            &mut *self
                .partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        (all, partitions)
    }
}

/// What an archiver remembers from one step to the next.
#[derive(Debug, Default)]
pub struct RoundState {
    /// A step failed: this consumer may hold entries it did not finish.
    own_pending: bool,
    /// When other consumers' entries were last looked at for takeover.
    claimed_at: Option<Instant>,
    /// When every outbox was last looked at (`None`: look now).
    full_at: Option<Instant>,
    /// When the outboxes that hold entries were last counted.
    counted_at: Option<Instant>,
    /// Each partition's backlog as last counted.
    backlog: Vec<Backlog>,
    /// Partitions to look at in the next step (a batch came back full).
    stale: BTreeSet<u64>,
}

/// The archiver of one daemon.
pub struct Archiver {
    store: Store,
    db: Db,
    options: ArchiveOptions,
    consumer: String,
    stats: Arc<Stats>,
    wake: Arc<Wake>,
}

/// Paces the steps of copying an instance (see
/// [`ArchiveOptions::busy_percent`]): the request time the daemon spent
/// since the last step, over the time that passed, is how many requests
/// were in progress on average.
struct Pacer {
    /// When the step began.
    since: Instant,
    /// The daemon's request time then, µs.
    requests: u64,
}

/// An instance's attendance as Redis has it now (REPORT): its window and
/// state, when it ended, and a row per user who was ever in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The instance.
    pub instance: Instance,
    /// When it ended, once it has.
    pub ended_at: Option<Millis>,
    /// The rows, by user.
    pub rows: Vec<Attendance>,
}

/// Compute an instance's attendance from its event log and chat in Redis,
/// page by page, as the archive does (the same numbers): a user still in
/// counts until now, or until the instance ended.
pub async fn report(store: &Store, target: InstanceRef) -> Result<Report, StoreError> {
    let (instance, ended_at) = store.instance_get(target).await?;
    let id = instance.id;
    let mut tally = Tally::new(instance.from, instance.to);
    let mut after: Option<String> = None;
    loop {
        let (events, more) = store.archive_events(id, after.as_deref(), PAGE).await?;
        events.iter().for_each(|event| tally.event(event));
        match events.last() {
            Some(last) if more => after = Some(last.id.clone()),
            _ => break,
        }
    }
    let mut after: Option<String> = None;
    loop {
        let (messages, more) = store.archive_messages(id, after.as_deref(), PAGE).await?;
        messages.iter().for_each(|m| tally.message(m.user));
        match messages.last() {
            Some(last) if more => after = Some(last.id.clone()),
            _ => break,
        }
    }
    let until = ended_at.unwrap_or_else(|| store.now());
    Ok(Report {
        instance,
        ended_at,
        rows: tally.finish(until),
    })
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backfilled {
    /// Ended instances found in Redis.
    pub ended: u64,
    /// Of those, archived already.
    pub archived_before: u64,
    /// Queued for the archiver now.
    pub queued: u64,
    /// Outbox entries this run archived (its own and any other waiting).
    pub entries: u64,
}

/// `meetingd archive --backfill`: queue every ended instance the archive
/// does not hold whole yet, then archive until the outboxes are empty.
/// Beside serving daemons it is one more consumer of the outboxes; stopped
/// and run again it queues what is still missing (writing twice changes
/// nothing).
pub async fn backfill(
    store: &Store,
    options: &ArchiveOptions,
    stats: Arc<Stats>,
) -> Result<Backfilled, ArchiveError> {
    store.outbox_enable().await?;
    let db = Db::open(&options.url).await?;
    let archived = db.archived_instances().await?;
    let mut report = Backfilled::default();
    for instance in store.ended_instances().await? {
        report.ended += 1;
        if archived.contains(&(instance.meeting as i64, instance.order as i64)) {
            report.archived_before += 1;
        } else if store.archive_enqueue(instance).await? {
            report.queued += 1;
        }
    }
    // no wake-ups here: every outbox is looked at each pause
    let options = ArchiveOptions {
        poll: options.poll.min(Duration::from_secs(1)),
        ..options.clone()
    };
    let pause_idle = options.poll;
    let archiver = Archiver::new(
        store.clone(),
        db,
        options,
        Archiver::consumer_name(),
        stats.clone(),
        Wake::new(),
    );
    let mut state = RoundState::default();
    let mut pause = Duration::from_millis(100);
    loop {
        match archiver.step(&mut state).await {
            Ok(0) => {
                if state.full_at.is_some() && stats.archive_waiting() == 0 {
                    break;
                }
                // held by another consumer: it finishes them, or they are
                // taken over after claim_after
                tokio::time::sleep(pause_idle).await;
                state.full_at = None;
            }
            Ok(done) => report.entries += done,
            Err(err) => {
                state.failed();
                tracing::warn!(
                    "archiving failed, trying again in {} ms: {err}",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(archiver.options.retry_max);
            }
        }
    }
    archiver.db.close().await;
    Ok(report)
}

/// The archiver's task: open the database (again and again, with a
/// growing pause, while it cannot be reached; `db` if the daemon opened it
/// already), then archive until the task is dropped, woken by `wake`.
pub async fn serve(
    store: Store,
    options: ArchiveOptions,
    stats: Arc<Stats>,
    db: Option<Db>,
    wake: Arc<Wake>,
) {
    stats.archive_started();
    let mut pause = Duration::from_millis(100);
    let db = match db {
        Some(db) => db,
        None => loop {
            tokio::time::sleep(pause).await;
            match Db::open(&options.url).await {
                Ok(db) => {
                    tracing::info!("the archive database is reachable");
                    break db;
                }
                Err(err) => {
                    stats.archive_failed();
                    tracing::warn!(
                        "the archive database cannot be used, trying again in {} ms: {err}",
                        pause.as_millis()
                    );
                    pause = (pause * 2).min(options.retry_max);
                }
            }
        },
    };
    Archiver::new(store, db, options, Archiver::consumer_name(), stats, wake)
        .run()
        .await;
}

/// An entry's stream id as (ms, seq).
fn entry_id(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl RoundState {
    /// A step failed: what this consumer took may be unfinished, and any
    /// outbox may hold entries; look at every one next.
    fn failed(&mut self) {
        self.own_pending = true;
        self.full_at = None;
    }
}

impl Archiver {
    /// An archiver writing to `db`, reading `store`'s outboxes as
    /// `consumer` (a name of its own: one per daemon run), woken by
    /// `wake`.
    pub fn new(
        store: Store,
        db: Db,
        options: ArchiveOptions,
        consumer: String,
        stats: Arc<Stats>,
        wake: Arc<Wake>,
    ) -> Archiver {
        Archiver {
            store,
            db,
            options,
            consumer,
            stats,
            wake,
        }
    }

    /// A consumer name for this process.
    pub fn consumer_name() -> String {
        format!(
            "meetingd-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )
    }

    /// Archive until the task is dropped: a step, then, when it archived
    /// nothing, a wait for a wake-up, the next look at every outbox, or
    /// the next count of those that hold entries; a growing pause after a
    /// failure.
    pub async fn run(self) {
        self.stats.archive_started();
        let mut pause = Duration::from_millis(100);
        let mut state = RoundState::default();
        loop {
            match self.step(&mut state).await {
                Ok(0) => {
                    pause = Duration::from_millis(100);
                    let wait = self.idle_wait(&state);
                    let _ = tokio::time::timeout(wait, self.wake.notify.notified()).await;
                }
                Ok(_) => pause = Duration::from_millis(100),
                Err(ArchiveError::Store(StoreError::Internal(why))) if why.contains("NOGROUP") => {
                    // an outbox or its group is gone (deleted, Redis
                    // flushed or restarted without its data): archiving
                    // is off there until it exists again
                    state.failed();
                    self.stats.archive_failed();
                    tracing::warn!(
                        "an outbox was gone, making it again (what was written meanwhile \
                         is not archived): {why}"
                    );
                    if let Err(err) = self.store.outbox_enable().await {
                        tracing::warn!("cannot make the outboxes again: {err}");
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(err) => {
                    // what this consumer took and did not finish is read
                    // again first
                    state.failed();
                    self.stats.archive_failed();
                    tracing::warn!(
                        "archiving failed, trying again in {} ms: {err}",
                        pause.as_millis()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.options.retry_max);
                }
            }
        }
    }

    /// How long an idle archiver waits for a wake-up: until its next look
    /// at every outbox, or, while some hold entries (another daemon's, or
    /// to be taken over), until they are counted again.
    fn idle_wait(&self, state: &RoundState) -> Duration {
        let full = state.full_at.map_or(Duration::ZERO, |at| {
            self.options.poll.saturating_sub(at.elapsed())
        });
        if state.backlog.iter().any(|b| b.waiting > 0) {
            let count = state.counted_at.map_or(Duration::ZERO, |at| {
                BACKLOG_EVERY.saturating_sub(at.elapsed())
            });
            full.min(count)
        } else {
            full
        }
    }

    /// Count `partition`'s backlog.
    async fn count(&self, state: &mut RoundState, partition: u64) -> Result<(), ArchiveError> {
        let backlog = self.store.outbox_backlog(partition).await?;
        if let Some(slot) = state.backlog.get_mut(partition as usize) {
            *slot = backlog;
        }
        Ok(())
    }

    /// One step: the outboxes to look at now are those woken, those whose
    /// last batch was full, those that hold entries (counted again every
    /// [`BACKLOG_EVERY`]), and every one that holds entries at each look
    /// at all of them (every `poll`, at the start, after a failure). In
    /// each: this consumer's pending entries first when a step failed,
    /// else, every half `claim_after`, entries another consumer has held
    /// too long, else new ones; then its backlog is counted again. The
    /// entries archived.
    pub async fn step(&self, state: &mut RoundState) -> Result<u64, ArchiveError> {
        let partitions = self.store.keys().partitions();
        state
            .backlog
            .resize(partitions as usize, Backlog::default());
        let mut look = std::mem::take(&mut state.stale);
        let (all, woken) = self.wake.take();
        look.extend(woken);
        let full = all
            || state
                .full_at
                .is_none_or(|at| at.elapsed() >= self.options.poll);
        let recount = state
            .counted_at
            .is_none_or(|at| at.elapsed() >= BACKLOG_EVERY);
        let to_count: Vec<u64> = if full {
            (0..partitions).collect()
        } else if recount {
            (0..partitions)
                .filter(|p| state.backlog[*p as usize].waiting > 0)
                .collect()
        } else {
            Vec::new()
        };
        for &partition in &to_count {
            self.count(state, partition).await?;
            if state.backlog[partition as usize].waiting > 0 {
                look.insert(partition);
            }
        }
        if !to_count.is_empty() {
            // shown before archiving, which may fail (the database down)
            self.show_backlog(state);
        }
        if full {
            state.full_at = Some(Instant::now());
        }
        if full || recount {
            state.counted_at = Some(Instant::now());
        }
        let claim = state
            .claimed_at
            .is_none_or(|at| at.elapsed() >= self.options.claim_after / 2);
        if claim {
            state.claimed_at = Some(Instant::now());
        }
        let mut done = 0;
        let mut more_pending = false;
        for &partition in &look {
            let store = &self.store;
            let mut entries = Vec::new();
            if state.own_pending {
                entries = store
                    .outbox_read(partition, &self.consumer, true, BATCH)
                    .await?;
                more_pending |= entries.len() == BATCH;
            }
            if entries.is_empty() && claim && state.backlog[partition as usize].waiting > 0 {
                entries = store
                    .outbox_claim(partition, &self.consumer, self.options.claim_after, BATCH)
                    .await?;
            }
            if entries.is_empty() {
                entries = store
                    .outbox_read(partition, &self.consumer, false, BATCH)
                    .await?;
            }
            if entries.len() == BATCH {
                state.stale.insert(partition);
            }
            for entry in entries {
                self.archive_entry(&entry).await?;
                done += 1;
            }
            self.count(state, partition).await?;
        }
        if full {
            state.own_pending = more_pending;
        }
        self.show_backlog(state);
        Ok(done)
    }

    /// The backlog as last counted, for STATS.
    fn show_backlog(&self, state: &RoundState) {
        let waiting = state.backlog.iter().map(|b| b.waiting).sum();
        let oldest = state.backlog.iter().filter_map(|b| b.oldest).min();
        self.stats.archive_backlog(waiting, oldest);
    }

    /// Archive one entry and acknowledge it.
    async fn archive_entry(&self, entry: &OutboxEntry) -> Result<(), ArchiveError> {
        let retention = self.options.retention;
        let (rows, expire) = match self.apply(entry).await {
            Ok(done) => done,
            Err(ArchiveError::Entry(id, why)) => {
                tracing::error!(
                    "outbox entry {id} of partition {} skipped: {why}",
                    entry.partition
                );
                (0, None)
            }
            Err(err) => return Err(err),
        };
        if let (Some((instance, posters)), false) = (&expire, retention.is_zero()) {
            let posters: Vec<Id> = posters.iter().copied().collect();
            for chunk in posters.chunks(ROWS) {
                self.store
                    .archived(entry.partition, None, retention, Some(*instance), chunk)
                    .await?;
            }
        }
        let instance = expire.map(|(instance, _)| instance);
        self.store
            .archived(entry.partition, Some(&entry.id), retention, instance, &[])
            .await?;
        self.stats.archived(rows);
        Ok(())
    }

    /// A pacer whose first step begins now.
    fn pacer(&self) -> Pacer {
        Pacer {
            since: Instant::now(),
            requests: self.stats.request_micros(),
        }
    }

    /// Pause after a step as `busy_percent` says, given how busy the
    /// daemon's requests were since the step began, then start the next
    /// step.
    async fn pace(&self, pacer: &mut Pacer) {
        let busy = self.options.busy_percent.clamp(1, 100);
        if busy < 100 {
            let took = pacer.since.elapsed();
            let requests = self.stats.request_micros();
            let in_progress =
                requests.saturating_sub(pacer.requests) as f64 / (took.as_micros() as f64).max(1.0);
            let share = pace_share(busy, in_progress);
            if share < 100.0 {
                let pause = took.mul_f64((100.0 - share) / share);
                self.stats.archive_paused(pause);
                tokio::time::sleep(pause).await;
            }
        }
        *pacer = self.pacer();
    }

    /// Keep holding `entry` (a page of a large instance was written).
    async fn keep(&self, entry: &OutboxEntry) -> Result<(), ArchiveError> {
        Ok(self
            .store
            .outbox_keep(entry.partition, &self.consumer, &entry.id)
            .await?)
    }

    /// Write what an entry says; the rows written, and for an ended
    /// instance the instance and its posters (whose history may expire
    /// now).
    async fn apply(
        &self,
        entry: &OutboxEntry,
    ) -> Result<(u64, Option<(InstanceId, BTreeSet<Id>)>), ArchiveError> {
        if entry.fields.is_empty() {
            // deleted while pending: archived already
            return Ok((0, None));
        }
        let bad = |why: &str| ArchiveError::Entry(entry.id.clone(), why.to_string());
        let (source_ms, source_seq) = entry_id(&entry.id).ok_or_else(|| bad("a bad id"))?;
        let field = |name: &str| entry.get(name).ok_or_else(|| bad(&format!("no {name}")));
        let number = |name: &str| -> Result<i64, ArchiveError> {
            field(name)?
                .parse()
                .map_err(|_| bad(&format!("{name} is not a number")))
        };
        let version = [Arg::Int(source_ms), Arg::Int(source_seq)];
        if field("k")? == "user" {
            // the values USER SET wrote, carried by the entry (the hash may
            // not be written yet, or be newer): the latest entry wins
            let age = number("age")?;
            let mut row = vec![
                Arg::Int(number("u")?),
                Arg::Text(field("name")?.to_string()),
                Arg::Int(age),
                Arg::Text(field("gender")?.to_string()),
                Arg::Text(field("email")?.to_string()),
                time(self.store.now()),
            ];
            row.extend(version);
            let mut tx = self.db.begin().await?;
            let rows = tx
                .insert(
                    "users",
                    USER_COLUMNS,
                    &["user_id"],
                    vec![row],
                    OnConflict::Newer,
                )
                .await?;
            tx.commit().await?;
            return Ok((rows, None));
        }
        let meeting = number("m")?;
        match field("k")? {
            "meeting" => {
                let mut tx = self.db.begin().await?;
                let mut row = vec![
                    Arg::Int(meeting),
                    Arg::Text(field("title")?.to_string()),
                    Arg::Text(field("description")?.to_string()),
                    Arg::Bool(field("public")? == "true"),
                ];
                row.extend(version);
                let rows = tx
                    .insert(
                        "meetings",
                        &[
                            "meeting_id",
                            "title",
                            "description",
                            "is_public",
                            "source_ms",
                            "source_seq",
                        ],
                        &["meeting_id"],
                        vec![row],
                        OnConflict::Newer,
                    )
                    .await?;
                tx.commit().await?;
                Ok((rows, None))
            }
            "audience" => {
                let member = field("op")? == "add";
                let rows: Vec<Vec<Arg>> = field("emails")?
                    .split(' ')
                    .filter(|e| !e.is_empty())
                    .map(|email| {
                        vec![
                            Arg::Int(meeting),
                            Arg::Text(email.to_string()),
                            Arg::Bool(member),
                            version[0].clone(),
                            version[1].clone(),
                        ]
                    })
                    .collect();
                let mut tx = self.db.begin().await?;
                let rows = tx
                    .insert(
                        "audience",
                        &[
                            "meeting_id",
                            "email",
                            "in_audience",
                            "source_ms",
                            "source_seq",
                        ],
                        &["meeting_id", "email"],
                        rows,
                        OnConflict::Newer,
                    )
                    .await?;
                tx.commit().await?;
                Ok((rows, None))
            }
            "instance" => {
                let mut tx = self.db.begin().await?;
                let mut row = vec![
                    Arg::Int(meeting),
                    Arg::Int(number("o")?),
                    time(number("from")?),
                    time(number("to")?),
                ];
                row.extend(version);
                let rows = tx
                    .insert(
                        "instances",
                        &[
                            "meeting_id",
                            "order_id",
                            "starts_at",
                            "ends_at",
                            "source_ms",
                            "source_seq",
                        ],
                        &["meeting_id", "order_id"],
                        vec![row],
                        OnConflict::Newer,
                    )
                    .await?;
                tx.commit().await?;
                Ok((rows, None))
            }
            "end" => {
                let order = number("o")?;
                let (from, to, ended) = (number("from")?, number("to")?, number("ended")?);
                let (meeting, order) = (
                    Id::try_from(meeting).map_err(|_| bad("a bad meeting"))?,
                    Id::try_from(order).map_err(|_| bad("a bad order"))?,
                );
                let instance = InstanceId::new(meeting, order);
                let mut tx = self.db.begin().await?;
                let mut row = vec![
                    Arg::Int(meeting as i64),
                    Arg::Int(order as i64),
                    time(from),
                    time(to),
                    time(ended),
                ];
                row.extend(version);
                let rows = tx
                    .insert(
                        "instances",
                        &[
                            "meeting_id",
                            "order_id",
                            "starts_at",
                            "ends_at",
                            "ended_at",
                            "source_ms",
                            "source_seq",
                        ],
                        &["meeting_id", "order_id"],
                        vec![row],
                        OnConflict::Newer,
                    )
                    .await?;
                tx.commit().await?;
                // its rows are counted as their pages commit
                let posters = self
                    .archive_history(entry, instance, from, to, ended)
                    .await?;
                Ok((rows, Some((instance, posters))))
            }
            other => Err(bad(&format!("unknown kind {other:?}"))),
        }
    }

    /// One page of an instance's events or messages into `table`, in one
    /// transaction; rows keyed by their Redis id, so a page written again
    /// changes nothing. The rows written.
    async fn insert_entries(
        &self,
        table: &str,
        columns: &[&str],
        batch: Vec<Vec<Arg>>,
    ) -> Result<u64, ArchiveError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        let rows = tx
            .insert(
                table,
                columns,
                &["meeting_id", "order_id", "entry_ms", "entry_seq"],
                batch,
                OnConflict::Keep,
            )
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Copy an ended instance's history, page by page: events, messages,
    /// POST keys, users, then the attendance rows and the instance's
    /// `archived_at` in the last transaction; STATS counts the rows as each
    /// transaction commits. The users who posted.
    async fn archive_history(
        &self,
        entry: &OutboxEntry,
        instance: InstanceId,
        from: Millis,
        to: Millis,
        ended: Millis,
    ) -> Result<BTreeSet<Id>, ArchiveError> {
        let (m, o) = (instance.meeting as i64, instance.order as i64);
        let mut pacer = self.pacer();
        let mut tally = Tally::new(from, to);
        let mut after: Option<String> = None;
        loop {
            let (events, more) = self
                .store
                .archive_events(instance, after.as_deref(), PAGE)
                .await?;
            let last = events.last().map(|e| e.id.clone());
            let batch: Vec<Vec<Arg>> = events
                .into_iter()
                .filter_map(|event| {
                    tally.event(&event);
                    event_row(m, o, &event)
                })
                .collect();
            let rows = self.insert_entries("events", EVENT_COLUMNS, batch).await?;
            self.stats.archive_rows_written(rows);
            match last {
                Some(last) if more => after = Some(last),
                _ => break,
            }
            self.pace(&mut pacer).await;
            self.keep(entry).await?;
        }
        let mut posters = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let (messages, more) = self
                .store
                .archive_messages(instance, after.as_deref(), PAGE)
                .await?;
            let last = messages.last().map(|m| m.id.clone());
            let batch: Vec<Vec<Arg>> = messages
                .into_iter()
                .filter_map(|message| {
                    tally.message(message.user);
                    posters.insert(message.user);
                    message_row(m, o, message)
                })
                .collect();
            let rows = self
                .insert_entries("messages", MESSAGE_COLUMNS, batch)
                .await?;
            self.stats.archive_rows_written(rows);
            match last {
                Some(last) if more => after = Some(last),
                _ => break,
            }
            self.pace(&mut pacer).await;
            self.keep(entry).await?;
        }
        self.pace(&mut pacer).await;
        let mut cursor = 0;
        loop {
            let (next, keys) = self.store.posted_page(instance, cursor, ROWS).await?;
            let keys: Vec<(i64, i64, String)> = keys
                .into_iter()
                .filter_map(|(_, key, id)| entry_id(&id).map(|(ms, seq)| (ms, seq, key)))
                .collect();
            if !keys.is_empty() {
                let mut tx = self.db.begin().await?;
                tx.set_post_ids(m, o, keys).await?;
                tx.commit().await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // users as their hashes hold them, for those written before their
        // partition archived: inserted if missing, version 0, so they never
        // replace a row a USER SET's entry wrote (the hash may still hold
        // the older values while that USER SET's second call is on its way).
        // Those the archive holds already are not read.
        let users: Vec<Id> = tally.users().collect();
        for chunk in users.chunks(ROWS) {
            let ids: Vec<i64> = chunk.iter().map(|u| *u as i64).collect();
            let known = self.db.users_known(&ids).await?;
            let missing: Vec<Id> = chunk
                .iter()
                .copied()
                .filter(|u| !known.contains(&(*u as i64)))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let now = self.store.now();
            // one pipeline per chunk; users that do not exist are skipped
            let batch: Vec<Vec<Arg>> = self
                .store
                .archive_users(&missing)
                .await?
                .into_iter()
                .map(|u| {
                    vec![
                        Arg::Int(u.id as i64),
                        Arg::Text(u.name),
                        Arg::Int(i64::from(u.age)),
                        Arg::Text(u.gender),
                        Arg::Text(u.email),
                        time(now),
                        Arg::Int(0),
                        Arg::Int(0),
                    ]
                })
                .collect();
            if batch.is_empty() {
                continue;
            }
            let mut tx = self.db.begin().await?;
            let rows = tx
                .insert("users", USER_COLUMNS, &["user_id"], batch, OnConflict::Keep)
                .await?;
            tx.commit().await?;
            self.stats.archive_rows_written(rows);
        }
        let attendance = tally.finish(ended);
        let mut rows = 0;
        let mut tx = self.db.begin().await?;
        for chunk in attendance.chunks(ROWS) {
            let batch: Vec<Vec<Arg>> = chunk
                .iter()
                .map(|a| {
                    vec![
                        Arg::Int(m),
                        Arg::Int(o),
                        Arg::Int(a.user as i64),
                        time(a.first_join),
                        maybe_time(a.last_leave),
                        Arg::Float(a.seconds()),
                        Arg::Int(a.joins as i64),
                        Arg::Int(a.messages as i64),
                    ]
                })
                .collect();
            rows += tx
                .insert(
                    "attendance",
                    ATTENDANCE_COLUMNS,
                    &["meeting_id", "order_id", "user_id"],
                    batch,
                    OnConflict::Replace,
                )
                .await?;
        }
        tx.exec(
            "UPDATE instances SET archived_at = ? WHERE meeting_id = ? AND order_id = ?",
            vec![time(self.store.now()), Arg::Int(m), Arg::Int(o)],
        )
        .await?;
        tx.commit().await?;
        self.stats.archive_rows_written(rows);
        Ok(posters)
    }
}

/// The columns of an `events` row.
const EVENT_COLUMNS: &[&str] = &[
    "meeting_id",
    "order_id",
    "entry_ms",
    "entry_seq",
    "kind",
    "user_id",
    "happened_at",
    "scheduled_end",
    "processed_at",
];

/// The columns of a `messages` row (its POST key comes later).
const MESSAGE_COLUMNS: &[&str] = &[
    "meeting_id",
    "order_id",
    "entry_ms",
    "entry_seq",
    "user_id",
    "posted_at",
    "body",
];

/// The columns of an `attendance` row.
const ATTENDANCE_COLUMNS: &[&str] = &[
    "meeting_id",
    "order_id",
    "user_id",
    "first_join",
    "last_leave",
    "seconds_present",
    "joins",
    "messages",
];

/// The share of its time (percent) a copying archiver takes when
/// `in_progress` requests were in progress on average: `busy` at one or
/// more, 100 at none, in proportion between.
fn pace_share(busy: u32, in_progress: f64) -> f64 {
    let busy = f64::from(busy.clamp(1, 100));
    let load = if in_progress.is_finite() {
        in_progress.clamp(0.0, 1.0)
    } else {
        1.0
    };
    100.0 - (100.0 - busy) * load
}

/// The columns of a `users` row, its version last.
const USER_COLUMNS: &[&str] = &[
    "user_id",
    "name",
    "age",
    "gender",
    "email",
    "archived_at",
    "source_ms",
    "source_seq",
];

/// An event as a row of `events` (None for an id that is not one, and for
/// the instance's start and end entries: the `instances` row holds its
/// window and when it ended).
fn event_row(m: i64, o: i64, event: &Event) -> Option<Vec<Arg>> {
    let user = event.user?;
    let (ms, seq) = entry_id(&event.id)?;
    Some(vec![
        Arg::Int(m),
        Arg::Int(o),
        Arg::Int(ms),
        Arg::Int(seq),
        Arg::Text(event.kind.as_str().to_string()),
        Arg::Int(user as i64),
        time(event.at),
        maybe_time(event.scheduled_end),
        maybe_time(event.processed_at),
    ])
}

/// A message as a row of `messages` (its POST key comes later).
fn message_row(m: i64, o: i64, message: Message) -> Option<Vec<Arg>> {
    let (ms, seq) = entry_id(&message.id)?;
    Some(vec![
        Arg::Int(m),
        Arg::Int(o),
        Arg::Int(ms),
        Arg::Int(seq),
        Arg::Int(message.user as i64),
        time(message.at),
        Arg::Text(message.text),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_follows_the_requests_in_progress() {
        assert_eq!(pace_share(10, 0.0), 100.0, "idle: flat out");
        assert_eq!(pace_share(10, 1.0), 10.0, "busy: its share");
        assert_eq!(pace_share(10, 250.0), 10.0, "saturated: its share");
        assert_eq!(pace_share(10, 0.5), 55.0, "half busy: between");
        assert_eq!(pace_share(100, 3.0), 100.0, "100: never paced");
        assert_eq!(pace_share(0, 1.0), 1.0, "at least 1 %");
        assert_eq!(pace_share(10, f64::NAN), 10.0);
    }

    #[test]
    fn wake_ups_name_their_partitions() {
        let wake = Wake::default();
        wake.channel(Store::outbox_channel(3).as_bytes());
        wake.channel(Store::outbox_channel(63).as_bytes());
        wake.channel(Store::outbox_channel(3).as_bytes());
        assert_eq!(wake.take(), (false, BTreeSet::from([3, 63])));
        assert_eq!(wake.take(), (false, BTreeSet::new()));
        wake.channel(b"meetingd:{p3}:watch:1/1");
        assert_eq!(wake.take(), (true, BTreeSet::new()));
    }
}
