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
//! [`report`] computes the same attendance from Redis for REPORT (a
//! running instance too); [`backfill`] queues the instances that ended
//! before archiving was on (`meetingd archive --backfill`).
//!
//! `db.rs` holds the database side (pools, migrations, idempotent
//! inserts); `attendance.rs` the pure attendance computation; the Redis
//! side is the store's (`store/archive.rs`).

mod attendance;
mod db;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use attendance::{Attendance, Tally};
pub use db::{Backend, Db, DbError, SCHEMA_VERSION};

use crate::error::Code;
use crate::stats::Stats;
use crate::store::{
    Event, Id, Instance, InstanceId, InstanceRef, Message, Millis, OutboxEntry, Store, StoreError,
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
    /// The pause when every outbox is empty.
    pub poll: Duration,
    /// The most of its time the archiver spends copying an ended
    /// instance, percent: after each step (a page) that took t it pauses
    /// t × (100 − busy) / busy, so that beside a saturated hot path it
    /// takes its share of the machine's CPU and no more. 100: no pause.
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
const ROWS: usize = 500;
/// How often the backlog STATS shows is looked at (two calls per
/// partition), at most.
const BACKLOG_EVERY: Duration = Duration::from_secs(2);

/// What an archiver remembers from one round to the next.
#[derive(Debug, Default)]
pub struct RoundState {
    /// A round failed: this consumer may hold entries it did not finish.
    own_pending: bool,
    /// When other consumers' entries were last looked at for takeover.
    claimed_at: Option<Instant>,
    /// When the backlog was last looked at.
    backlog_at: Option<Instant>,
}

/// The archiver of one daemon.
pub struct Archiver {
    store: Store,
    db: Db,
    options: ArchiveOptions,
    consumer: String,
    stats: Arc<Stats>,
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
    let exact = InstanceRef::Exact(instance.id);
    let mut tally = Tally::new(instance.from, instance.to);
    let mut after: Option<String> = None;
    loop {
        let (_, page) = store.events(exact, after.as_deref(), PAGE).await?;
        page.items.iter().for_each(|event| tally.event(event));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut after: Option<String> = None;
    loop {
        let (_, page) = store.messages(exact, None, after.as_deref(), PAGE).await?;
        page.items.iter().for_each(|m| tally.message(m.user));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
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
    let archiver = Archiver::new(
        store.clone(),
        db,
        options.clone(),
        Archiver::consumer_name(),
        stats.clone(),
    );
    let mut state = RoundState::default();
    let mut pause = Duration::from_millis(100);
    loop {
        match archiver.round(&mut state).await {
            Ok(0) => {
                archiver.backlog().await;
                if stats.archive_waiting() == 0 {
                    break;
                }
                // held by another consumer: it finishes them, or they are
                // taken over after claim_after
                tokio::time::sleep(options.poll).await;
            }
            Ok(done) => report.entries += done,
            Err(err) => {
                state.own_pending = true;
                tracing::warn!(
                    "archiving failed, trying again in {} ms: {err}",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(options.retry_max);
            }
        }
    }
    archiver.db.close().await;
    Ok(report)
}

/// The archiver's task: open the database (again and again, with a
/// growing pause, while it cannot be reached; `db` if the daemon opened it
/// already), then archive until the task is dropped.
pub async fn serve(store: Store, options: ArchiveOptions, stats: Arc<Stats>, db: Option<Db>) {
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
    Archiver::new(store, db, options, Archiver::consumer_name(), stats)
        .run()
        .await;
}

/// An entry's stream id as (ms, seq).
fn entry_id(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl Archiver {
    /// An archiver writing to `db`, reading `store`'s outboxes as
    /// `consumer` (a name of its own: one per daemon run).
    pub fn new(
        store: Store,
        db: Db,
        options: ArchiveOptions,
        consumer: String,
        stats: Arc<Stats>,
    ) -> Archiver {
        Archiver {
            store,
            db,
            options,
            consumer,
            stats,
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

    /// Archive until the task is dropped: rounds over every partition, a
    /// pause when nothing was waiting, a growing one after a failure.
    pub async fn run(self) {
        self.stats.archive_started();
        let mut pause = Duration::from_millis(100);
        let mut state = RoundState::default();
        loop {
            let done = self.round(&mut state).await;
            if state
                .backlog_at
                .is_none_or(|at| at.elapsed() >= BACKLOG_EVERY)
                || done.is_err()
            {
                self.backlog().await;
                state.backlog_at = Some(Instant::now());
            }
            match done {
                Ok(0) => {
                    pause = Duration::from_millis(100);
                    tokio::time::sleep(self.options.poll).await;
                }
                Ok(_) => pause = Duration::from_millis(100),
                Err(ArchiveError::Store(StoreError::Internal(why))) if why.contains("NOGROUP") => {
                    // an outbox or its group is gone (deleted, Redis
                    // flushed or restarted without its data): archiving
                    // is off there until it exists again
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
                    state.own_pending = true;
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

    /// Refresh the backlog STATS shows (a failure leaves it as it was).
    async fn backlog(&self) {
        let mut waiting = 0;
        let mut oldest: Option<Millis> = None;
        for partition in 0..self.store.keys().partitions() {
            match self.store.outbox_backlog(partition).await {
                Ok(backlog) => {
                    waiting += backlog.waiting;
                    oldest = match (oldest, backlog.oldest) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(_) => return,
            }
        }
        self.stats.archive_backlog(waiting, oldest);
    }

    /// One pass over every partition's outbox: this consumer's pending
    /// entries first when a round failed (it took them and did not
    /// finish), else, every half `claim_after`, entries another consumer
    /// has held too long, else new ones. The entries archived.
    pub async fn round(&self, state: &mut RoundState) -> Result<u64, ArchiveError> {
        let claim = state
            .claimed_at
            .is_none_or(|at| at.elapsed() >= self.options.claim_after / 2);
        if claim {
            state.claimed_at = Some(Instant::now());
        }
        let mut done = 0;
        let mut more_pending = false;
        for partition in 0..self.store.keys().partitions() {
            let store = &self.store;
            let mut entries = Vec::new();
            if state.own_pending {
                entries = store
                    .outbox_read(partition, &self.consumer, true, BATCH)
                    .await?;
                more_pending |= entries.len() == BATCH;
            }
            if entries.is_empty() && claim {
                entries = store
                    .outbox_claim(partition, &self.consumer, self.options.claim_after, BATCH)
                    .await?;
            }
            if entries.is_empty() {
                entries = store
                    .outbox_read(partition, &self.consumer, false, BATCH)
                    .await?;
            }
            for entry in entries {
                self.archive_entry(&entry).await?;
                done += 1;
            }
        }
        state.own_pending = more_pending;
        Ok(done)
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

    /// Pause after a step that began at `since` as `busy_percent` says,
    /// then start the next step's clock.
    async fn pace(&self, since: &mut Instant) {
        let busy = self.options.busy_percent.clamp(1, 100);
        if busy < 100 {
            let pause = since.elapsed() * (100 - busy) / busy;
            tokio::time::sleep(pause).await;
        }
        *since = Instant::now();
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
                let mut rows = tx
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
                let (more, posters) = self
                    .archive_history(entry, instance, from, to, ended)
                    .await?;
                rows += more;
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
    /// `archived_at` in the last transaction. The rows written and the
    /// users who posted.
    async fn archive_history(
        &self,
        entry: &OutboxEntry,
        instance: InstanceId,
        from: Millis,
        to: Millis,
        ended: Millis,
    ) -> Result<(u64, BTreeSet<Id>), ArchiveError> {
        let (m, o) = (instance.meeting as i64, instance.order as i64);
        let target = InstanceRef::Exact(instance);
        let mut since = Instant::now();
        let mut tally = Tally::new(from, to);
        let mut rows = 0;
        let mut after: Option<String> = None;
        loop {
            let page = match self.store.events(target, after.as_deref(), PAGE).await {
                Ok((_, page)) => page,
                Err(StoreError::Rule {
                    code: Code::NotFound,
                    ..
                }) => break,
                Err(err) => return Err(err.into()),
            };
            let batch: Vec<Vec<Arg>> = page
                .items
                .iter()
                .filter_map(|event| {
                    tally.event(event);
                    event_row(m, o, event)
                })
                .collect();
            rows += self
                .insert_entries(
                    "events",
                    &[
                        "meeting_id",
                        "order_id",
                        "entry_ms",
                        "entry_seq",
                        "kind",
                        "user_id",
                        "happened_at",
                        "scheduled_end",
                        "processed_at",
                    ],
                    batch,
                )
                .await?;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
            self.pace(&mut since).await;
            self.keep(entry).await?;
        }
        let mut posters = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = match self
                .store
                .messages(target, None, after.as_deref(), PAGE)
                .await
            {
                Ok((_, page)) => page,
                Err(StoreError::Rule {
                    code: Code::NotFound,
                    ..
                }) => break,
                Err(err) => return Err(err.into()),
            };
            let batch: Vec<Vec<Arg>> = page
                .items
                .iter()
                .filter_map(|message| {
                    tally.message(message.user);
                    posters.insert(message.user);
                    message_row(m, o, message)
                })
                .collect();
            rows += self
                .insert_entries(
                    "messages",
                    &[
                        "meeting_id",
                        "order_id",
                        "entry_ms",
                        "entry_seq",
                        "user_id",
                        "posted_at",
                        "body",
                    ],
                    batch,
                )
                .await?;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
            self.pace(&mut since).await;
            self.keep(entry).await?;
        }
        self.pace(&mut since).await;
        let mut cursor = 0;
        loop {
            let (next, keys) = self.store.posted_page(instance, cursor, ROWS).await?;
            if !keys.is_empty() {
                let mut tx = self.db.begin().await?;
                for (_, key, id) in keys {
                    let Some((ms, seq)) = entry_id(&id) else {
                        continue;
                    };
                    tx.exec(
                        "UPDATE messages SET post_id = ? WHERE meeting_id = ? AND order_id = ? AND entry_ms = ? AND entry_seq = ?",
                        vec![Arg::MaybeText(Some(key)), Arg::Int(m), Arg::Int(o), Arg::Int(ms), Arg::Int(seq)],
                    )
                    .await?;
                }
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
        // the older values while that USER SET's second call is on its way)
        let users: Vec<Id> = tally.users().collect();
        for chunk in users.chunks(ROWS) {
            let now = self.store.now();
            // one pipeline per chunk; users that do not exist are skipped
            let batch: Vec<Vec<Arg>> = self
                .store
                .users_get(chunk)
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
            rows += tx
                .insert("users", USER_COLUMNS, &["user_id"], batch, OnConflict::Keep)
                .await?;
            tx.commit().await?;
        }
        let attendance: Vec<Vec<Arg>> = tally
            .finish(ended)
            .into_iter()
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
        let mut tx = self.db.begin().await?;
        rows += tx
            .insert(
                "attendance",
                &[
                    "meeting_id",
                    "order_id",
                    "user_id",
                    "first_join",
                    "last_leave",
                    "seconds_present",
                    "joins",
                    "messages",
                ],
                &["meeting_id", "order_id", "user_id"],
                attendance,
                OnConflict::Replace,
            )
            .await?;
        tx.exec(
            "UPDATE instances SET archived_at = ? WHERE meeting_id = ? AND order_id = ?",
            vec![time(self.store.now()), Arg::Int(m), Arg::Int(o)],
        )
        .await?;
        tx.commit().await?;
        Ok((rows, posters))
    }
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
fn message_row(m: i64, o: i64, message: &Message) -> Option<Vec<Arg>> {
    let (ms, seq) = entry_id(&message.id)?;
    Some(vec![
        Arg::Int(m),
        Arg::Int(o),
        Arg::Int(ms),
        Arg::Int(seq),
        Arg::Int(message.user as i64),
        time(message.at),
        Arg::Text(message.text.clone()),
    ])
}
