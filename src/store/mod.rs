//! The store: the only module that talks to Redis.
//!
//! It loads the Lua library (`lua/`, see [`Library`]) into Redis and calls
//! its functions, one typed method per operation. Every rule lives in the
//! Lua: this module only names the one key each call gets, passes
//! arguments (and `now`, from its [`Clock`]), decodes replies and maps
//! errors to the spec's codes. It never scans the keyspace on a request
//! path.
//!
//! Each operation is one function call: a [`Call`] (a command and how to
//! read its reply), which can be sent alone ([`Store::run`]) or with
//! others in one pipeline ([`Store::run_all`]), in order. JOIN also needs
//! the user (to know they exist, and their e-mail): users come from a
//! cache that Redis keeps fresh (`users.rs`), so in steady state a JOIN is
//! one call too.
//!
//! Library upkeep: at connect, and again after any reconnect, it compares
//! `meet_version` with its own and loads the library when they differ or the
//! library is missing; a call that fails because the function is gone
//! (Redis restarted without persistence, a failover, `FUNCTION FLUSH`)
//! loads it and is sent again, which is safe because nothing ran. On a
//! Redis Cluster both happen master by master (`cluster.rs`).
//!
//! The families of calls: `admin.rs` (users, meetings, audiences,
//! instances, END), `listings.rs` (MEETINGS, USERS and their indexes),
//! `presence.rs` (JOIN, LEAVE, PARTICIPANTS), `running.rs` (ACTIVE and
//! ATTENDANCE, from each partition's answer kept while it holds, on the
//! tracked connections of `tracking.rs`),
//! `chat.rs` (POST, MESSAGES, EVENTS), `tick.rs`, `watch.rs` (the feed
//! WATCH reads), `archive.rs` (the outboxes the archiver reads), `load.rs`
//! (bulk loading), `check.rs` (`meetingd check`) and `persistence.rs`
//! (what Redis does with writes, for `redis.durability`).

mod admin;
mod archive;
mod chat;
mod check;
mod cluster;
mod conn;
mod keys;
mod library;
mod listings;
mod load;
mod persistence;
mod presence;
mod repartition;
mod reply;
mod running;
mod tick;
mod tracking;
mod types;
mod users;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, Value};

pub use archive::{Backlog, OutboxEntry};
pub use keys::{DEFAULT_PARTITIONS, Keys, OUTBOX_GROUP};
pub use library::{API_LEVEL, Library, Loaded, Verdict};
pub use listings::{Indexed, Listing, MeetingRow};
pub use load::{Load, LoadReport};
pub use persistence::NodePersistence;
pub use repartition::{Repartitioned, SERVING_TTL};
pub use running::{ActivePage, ActiveRead, AttendanceAfter, AttendancePage, after_position};
pub use types::*;
pub use users::Known;
pub use watch::{
    Feed, FeedItem, Published, Shards, StreamId, Topic, Transition, channel_slot, shard_of,
};

use crate::clock::{Clock, SystemClock};
use crate::error::Code;
use reply::Fields;

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A rule of the library said no (not found, inactive, ...).
    #[error("{message}")]
    Rule {
        /// The spec's code.
        code: Code,
        /// What the library said.
        message: String,
    },
    /// Redis could not be reached: the call surely did not run.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// A write was sent and no reply came: it may or may not have run.
    #[error("no reply from redis: {0}")]
    InDoubt(String),
    /// The data or the library in Redis is of a kind this daemon cannot
    /// serve (another partition count, a newer API level).
    #[error("{0}")]
    Incompatible(String),
    /// Anything else: a bug, or a reply of the wrong shape.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// The spec's code for this error.
    pub fn code(&self) -> Code {
        match self {
            StoreError::Rule { code, .. } => *code,
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::InDoubt(_) => Code::InDoubt,
            StoreError::Incompatible(_) | StoreError::Internal(_) => Code::Internal,
        }
    }

    /// The error of a call that `writes`: a reply that never came makes a
    /// write's outcome unknown; a read is simply unavailable (sending it
    /// again is safe).
    fn of_call(err: RedisError, writes: bool) -> StoreError {
        // a write to the socket that failed (broken pipe) never left; a
        // timeout, or a connection lost after the write, may have run.
        // (redis-rs keeps the io::Error behind a type that cannot be
        // downcast: its text names the errno.)
        let write_failed = err
            .to_string()
            .contains(&format!("(os error {})", libc::EPIPE));
        let sent = err.is_timeout()
            || (err.is_connection_dropped() && !err.is_connection_refusal() && !write_failed);
        match StoreError::from(err) {
            StoreError::Unavailable(why) if writes && sent => StoreError::InDoubt(why),
            other => other,
        }
    }
}

impl From<RedisError> for StoreError {
    fn from(err: RedisError) -> Self {
        if let Some(code) = err.code().and_then(Code::from_library) {
            let detail = err.detail().unwrap_or_default();
            // Redis 7 appends where the error was raised: not for clients
            let message = detail
                .split_once(" script: ")
                .map_or(detail, |(message, _)| message);
            return StoreError::Rule {
                code,
                message: message.to_string(),
            };
        }
        let unreachable = err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || matches!(
                err.code(),
                Some(
                    "LOADING"
                        | "TRYAGAIN"
                        | "ASK"
                        | "MOVED"
                        | "CLUSTERDOWN"
                        | "MASTERDOWN"
                        | "BUSY"
                )
            );
        if unreachable {
            StoreError::Unavailable(err.to_string())
        } else {
            StoreError::Internal(err.to_string())
        }
    }
}

/// How to reach Redis and how much work one call may do.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `redis://host:port/db` or `redis+unix:///path/to/socket`.
    pub url: String,
    /// A Redis Cluster's nodes (`redis://host:port`); when given, `url` is
    /// not used.
    pub cluster: Vec<String>,
    /// P: meetings are spread over this many partitions (hash tags).
    /// `None`: the count the data records, or [`DEFAULT_PARTITIONS`] for
    /// a Redis that holds none yet.
    pub partitions: Option<u64>,
    /// How long a Redis call may take before it fails as unavailable.
    pub timeout: Duration,
    /// Instances per tick step (one meet_tick call).
    pub tick_batch: usize,
    /// Timeout events per call (END and tick steps).
    pub timeout_budget: usize,
    /// How long an instance's events and chat are kept after its scheduled
    /// end; zero keeps them for ever.
    pub retention: Duration,
    /// Load the library at connect when it is missing or another version
    /// (off for read-only tools such as `meetingd check`).
    pub load_library: bool,
    /// Most users kept in the daemon's cache of users.
    pub user_cache: usize,
}

impl StoreOptions {
    /// The defaults for a Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            cluster: Vec::new(),
            partitions: None,
            timeout: Duration::from_secs(1),
            tick_batch: 100,
            timeout_budget: 500,
            retention: Duration::ZERO,
            load_library: true,
            user_cache: 100_000,
        }
    }
}

/// How a call's reply, or why there is none, becomes its result.
type Decode<T> = Box<dyn FnOnce(Result<Value, StoreError>) -> Result<T, StoreError> + Send>;

/// One call of a library function, ready to send, and how its reply
/// becomes a `T`. Made by the store's `*_call` methods; sent by
/// [`Store::run`] alone or by [`Store::run_all`] with others.
pub struct Call<T> {
    cmd: Cmd,
    /// Whether the function writes (a lost reply is then in doubt).
    writes: bool,
    /// The reply, or why there is none (a refusal of the library, a lost
    /// connection), into the result.
    decode: Decode<T>,
}

impl<T: 'static> Call<T> {
    fn new(
        function: &str,
        key: &str,
        args: &[&str],
        writes: bool,
        decode: impl FnOnce(Value) -> Result<T, StoreError> + Send + 'static,
    ) -> Call<T> {
        let mut cmd = Cmd::new();
        cmd.arg("FCALL").arg(function).arg(1).arg(key);
        for arg in args {
            cmd.arg(*arg);
        }
        Call {
            cmd,
            writes,
            decode: Box::new(|reply: Result<Value, StoreError>| reply.and_then(decode)),
        }
    }

    /// A call of a plain Redis command (not of the library).
    fn command(
        cmd: Cmd,
        writes: bool,
        decode: impl FnOnce(Value) -> Result<T, StoreError> + Send + 'static,
    ) -> Call<T> {
        Call {
            cmd,
            writes,
            decode: Box::new(|reply: Result<Value, StoreError>| reply.and_then(decode)),
        }
    }

    /// The same call, its result passed through `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Call<U> {
        let decode = self.decode;
        Call {
            cmd: self.cmd,
            writes: self.writes,
            decode: Box::new(move |reply| decode(reply).map(f)),
        }
    }

    /// The same call, a failure of it passed through `f`, which may turn
    /// it into a result (or another failure).
    pub fn or_else(
        self,
        f: impl FnOnce(StoreError) -> Result<T, StoreError> + Send + 'static,
    ) -> Call<T> {
        let decode = self.decode;
        Call {
            cmd: self.cmd,
            writes: self.writes,
            decode: Box::new(move |reply| decode(reply).or_else(f)),
        }
    }

    /// How its reply (or its failure) becomes its result; `sent`: whether
    /// it went out on a live connection.
    fn finish(self, reply: Result<Value, RedisError>, sent: bool) -> Result<T, StoreError> {
        match reply {
            Ok(Value::ServerError(err)) => (self.decode)(Err(RedisError::from(err).into())),
            Ok(value) => (self.decode)(Ok(value)),
            Err(err) => (self.decode)(Err(StoreError::of_call(err, self.writes && sent))),
        }
    }
}

/// A handle on the data in Redis. Cheap to clone: clones share one
/// multiplexed connection, which reconnects by itself, and the user cache.
#[derive(Clone)]
pub struct Store {
    conn: conn::Conn,
    users: Arc<users::Users>,
    /// The tracked connections of the caches (users, and what runs).
    tracking: Arc<tracking::Tracking>,
    /// The partitions' answers to ACTIVE and ATTENDANCE, kept while they
    /// hold.
    running: Arc<running::Running>,
    keys: Keys,
    clock: Arc<dyn Clock>,
    library: Arc<Library>,
    /// False after a disconnection: the library is checked before the next
    /// call (the Redis we reach now may be another one, or restarted).
    library_checked: Arc<AtomicBool>,
    /// False from a disconnection until a call gets a reply: a call sent
    /// meanwhile waited for a connection that never came, so it did not
    /// run (`unavailable`); one sent on a live connection that got no
    /// reply may have (`in_doubt`).
    connected: Arc<AtomicBool>,
    options: Arc<StoreOptions>,
}

/// Most members a Lua call reads at once.
const PAGE: usize = 1000;

impl Store {
    /// Connect with the system clock.
    pub async fn connect(options: StoreOptions) -> Result<Store, StoreError> {
        Store::connect_with_clock(options, Arc::new(SystemClock)).await
    }

    /// Connect, taking `now` from `clock`, and make sure the library is
    /// loaded and the data is in this version's layout.
    pub async fn connect_with_clock(
        options: StoreOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreError> {
        let library_checked = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(true));
        let conn = conn::Conn::open(&options, library_checked.clone(), connected.clone()).await?;
        let user_cache = Arc::new(users::UserCache::new(options.user_cache));
        let running = Arc::new(running::Running::default());
        let tracking = Arc::new(
            tracking::Tracking::open(&options, &conn, vec![user_cache.clone(), running.clone()])
                .await?,
        );
        let users = Arc::new(users::Users::new(user_cache, tracking.clone()));
        let recorded = recorded_partitions(&conn).await?;
        let partitions = match (options.partitions, recorded) {
            // refused before a library of another count replaces the one
            // the data's daemons serve with (a read-only tool says so in
            // its report instead)
            (Some(ours), Some(recorded)) if ours != recorded && options.load_library => {
                return Err(layout_mismatch(ours, recorded));
            }
            (Some(ours), _) => ours,
            (None, recorded) => recorded.unwrap_or(DEFAULT_PARTITIONS),
        };
        let store = Store {
            conn,
            users,
            tracking,
            running,
            keys: Keys::new(partitions),
            clock,
            library: Arc::new(Library::new(partitions)),
            library_checked,
            connected,
            options: Arc::new(options),
        };
        if store.options.load_library {
            if let Some(under_way) = store.repartition_under_way().await? {
                return Err(repartition::under_way_error(&under_way));
            }
            store.ensure_library().await?;
            store.ensure_layout().await?;
            store.upgrade().await?;
        } else {
            store.library_checked.store(true, Ordering::SeqCst);
        }
        Ok(store)
    }

    /// The key layout in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The library this store loads (for the data's partition count).
    pub fn library(&self) -> &Library {
        &self.library
    }

    /// Now, by the store's clock.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Record our number of partitions if none is, and refuse to go on
    /// when the data was laid out with another: every meeting key is named
    /// after its partition, so another P would not find them.
    async fn ensure_layout(&self) -> Result<(), StoreError> {
        let ours = self.keys.partitions();
        let value = self
            .value(Call::new(
                "meet_layout",
                &Keys::layout(),
                &[&ours.to_string()],
                true,
                Ok,
            ))
            .await?;
        let recorded = reply::int("meet_layout", value)?;
        if recorded != ours as i64 {
            return Err(layout_mismatch(ours, recorded));
        }
        Ok(())
    }

    /// One pass of `meet_upgrade` over every partition, a page per call
    /// (`args`: the page size and the pass), until no page follows: how
    /// many it upgraded.
    async fn upgrade_pass(&self, args: &[&str]) -> Result<u64, StoreError> {
        let mut upgraded = 0;
        for partition in 0..self.keys.partitions() {
            let mut after = String::new();
            loop {
                let mut call_args = vec![after.as_str()];
                call_args.extend_from_slice(args);
                let call = Call::new(
                    "meet_upgrade",
                    &Keys::active(partition),
                    &call_args,
                    true,
                    |value| Fields::new("meet_upgrade", value),
                );
                let mut f = self.run(call).await?;
                upgraded += f.count("upgraded")?;
                match f.optional("next")? {
                    Some(next) => after = reply::text("meet_upgrade", next)?,
                    None => break,
                }
            }
        }
        Ok(upgraded)
    }

    /// Bring data of an older layout to this one, partition by partition
    /// (`meet_upgrade`: a page of running instances per call, then a page
    /// of the due index per call for the upcoming indexes).
    async fn upgrade(&self) -> Result<(), StoreError> {
        let upgraded = self.upgrade_pass(&["100"]).await?;
        if upgraded > 0 {
            tracing::info!(
                upgraded,
                "running instances brought to this version's layout"
            );
        }
        // then every scheduled instance into its meeting's upcoming index
        // (data of 0.2), a page of the due index per call
        let indexed = self.upgrade_pass(&["1000", "upcoming"]).await?;
        if indexed > 0 {
            tracing::info!(
                indexed,
                "scheduled instances entered in their meetings' upcoming index"
            );
        }
        Ok(())
    }

    /// The retention argument of the library's writes, ms ("0": for ever).
    fn retention(&self) -> String {
        self.options.retention.as_millis().to_string()
    }

    /// One round trip to Redis (PING): how long it took.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = std::time::Instant::now();
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(started.elapsed())
    }

    /// Load the library unless the loaded one has our version. On a
    /// cluster, on every master, each compared on its own (see
    /// `cluster.rs`): a version read from one node says nothing of the
    /// others.
    pub async fn ensure_library(&self) -> Result<(), StoreError> {
        if self.conn.is_cluster() {
            self.library_on_every_master().await?;
        } else {
            let mut conn = self.conn.clone();
            let verdict = loaded_library(&mut conn).await?;
            if self.act_on(verdict, "Redis")? {
                self.load_library().await?;
            }
        }
        self.library_checked.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// What to do about the library found loaded (on `place`): whether to
    /// load ours. A newer one of our API level is served with; one of
    /// another level stops us.
    fn act_on(&self, loaded: Option<Loaded>, place: &str) -> Result<bool, StoreError> {
        let Some(loaded) = loaded else {
            return Ok(true);
        };
        match loaded.verdict(&self.library) {
            Verdict::Same => Ok(false),
            Verdict::Replace => Ok(true),
            Verdict::Newer => {
                tracing::info!(
                    loaded = %loaded.version,
                    ours = %self.library.version,
                    %place,
                    "a newer library of our API level is loaded: serving with it"
                );
                Ok(false)
            }
            Verdict::Incompatible => Err(StoreError::Incompatible(format!(
                "{place} holds the meetingd library {}, newer than this daemon's {} and of \
                 another API level or partition count: this daemon cannot serve with it; run \
                 the newer meetingd (or load this one's library by hand to go back)",
                loaded.version, self.library.version
            ))),
        }
    }

    async fn load_library(&self) -> Result<(), StoreError> {
        if self.conn.is_cluster() {
            return self.library_on_every_master().await;
        }
        let mut conn = self.conn.clone();
        load_library_into(&mut conn, &self.library).await?;
        tracing::info!(version = %self.library.version, "loaded the Lua library into Redis");
        Ok(())
    }

    /// Send one call and read its result.
    pub async fn run<T: 'static>(&self, call: Call<T>) -> Result<T, StoreError> {
        if !self.library_checked.load(Ordering::SeqCst) {
            self.ensure_library().await?;
        }
        let mut conn = self.conn.clone();
        let sent = self.connected.load(Ordering::SeqCst);
        let mut reply = call.cmd.query_async::<Value>(&mut conn).await;
        if reply.as_ref().is_err_and(function_missing) {
            tracing::warn!("the Lua library is gone from Redis; loading it again");
            self.load_library().await?;
            reply = call.cmd.query_async::<Value>(&mut conn).await;
        }
        self.replied(&reply);
        call.finish(reply, sent)
    }

    /// After a reply, or none: a reply shows the connection is live.
    fn replied<V>(&self, reply: &Result<V, RedisError>) {
        if reply.is_ok() {
            self.connected.store(true, Ordering::SeqCst);
        }
    }

    /// A call's raw reply.
    async fn value(&self, call: Call<Value>) -> Result<Value, StoreError> {
        self.run(call).await
    }

    /// Send calls in one pipeline, in order (Redis runs them in that
    /// order: one may rely on the effects of those before it); each has its
    /// own result. On a cluster, whose pipelines must not span slots, they
    /// are sent one after the other, each waiting for the one before.
    pub async fn run_all<T: 'static>(&self, calls: Vec<Call<T>>) -> Vec<Result<T, StoreError>> {
        if calls.is_empty() {
            return Vec::new();
        }
        if self.conn.is_cluster() || calls.len() == 1 {
            let mut out = Vec::with_capacity(calls.len());
            for call in calls {
                out.push(self.run(call).await);
            }
            return out;
        }
        if !self.library_checked.load(Ordering::SeqCst) {
            if let Err(err) = self.ensure_library().await {
                return calls.iter().map(|_| Err(err.clone())).collect();
            }
        }
        let mut pipe = redis::pipe();
        for call in &calls {
            pipe.add_command(call.cmd.clone());
        }
        pipe.ignore_errors();
        let mut conn = self.conn.clone();
        let sent = self.connected.load(Ordering::SeqCst);
        let reply = pipe.query_async::<Vec<Value>>(&mut conn).await;
        self.replied(&reply);
        let mut replies: Vec<Result<Value, RedisError>> = match reply {
            Ok(values) if values.len() == calls.len() => values.into_iter().map(Ok).collect(),
            Ok(values) => {
                let err = StoreError::Internal(format!(
                    "{} replies to a pipeline of {}",
                    values.len(),
                    calls.len()
                ));
                return calls.iter().map(|_| Err(err.clone())).collect();
            }
            Err(err) => {
                return calls
                    .into_iter()
                    .map(|call| call.finish(Err(err.clone()), sent))
                    .collect();
            }
        };
        // The library gone: nothing of those calls ran. Load it and send
        // them again, in order.
        let missing: Vec<usize> = (0..replies.len())
            .filter(|i| match &replies[*i] {
                Ok(Value::ServerError(err)) => function_missing(&RedisError::from(err.clone())),
                _ => false,
            })
            .collect();
        if !missing.is_empty() {
            tracing::warn!("the Lua library is gone from Redis; loading it again");
            if let Err(err) = self.load_library().await {
                for i in &missing {
                    replies[*i] = Err(RedisError::from((
                        ErrorKind::Io,
                        "cannot load the library",
                        err.to_string(),
                    )));
                }
            } else {
                let mut again = redis::pipe();
                for i in &missing {
                    again.add_command(calls[*i].cmd.clone());
                }
                again.ignore_errors();
                match again.query_async::<Vec<Value>>(&mut conn).await {
                    Ok(values) => {
                        for (i, value) in missing.iter().zip(values) {
                            replies[*i] = Ok(value);
                        }
                    }
                    Err(err) => {
                        for i in &missing {
                            replies[*i] = Err(err.clone());
                        }
                    }
                }
            }
        }
        calls
            .into_iter()
            .zip(replies)
            .map(|(call, reply)| call.finish(reply, sent))
            .collect()
    }

    /// A call whose reply is a field/value record.
    fn record_call(function: &'static str, key: &str, args: &[&str], writes: bool) -> Call<Fields> {
        Call::new(function, key, args, writes, move |value| {
            Fields::new(function, value)
        })
    }
}

/// Why a store of `ours` partitions cannot serve data of `recorded`.
fn layout_mismatch(ours: u64, recorded: impl std::fmt::Display) -> StoreError {
    StoreError::Incompatible(format!(
        "redis.partitions is {ours}, but the data in this Redis was laid out with {recorded} \
         partitions: set redis.partitions = {recorded}, or leave it unset to take the recorded \
         count (meetingd repartition changes it)"
    ))
}

/// The number of partitions the data behind `conn` records, if any.
async fn recorded_partitions(conn: &conn::Conn) -> Result<Option<u64>, StoreError> {
    let mut conn = conn.clone();
    let value: Value = redis::cmd("GET")
        .arg(Keys::layout())
        .query_async(&mut conn)
        .await?;
    if value == Value::Nil {
        return Ok(None);
    }
    match u64::try_from(reply::int("GET", value)?) {
        Ok(partitions) if partitions > 0 => Ok(Some(partitions)),
        _ => Err(StoreError::Internal(format!(
            "{} holds no partition count: run meetingd check",
            Keys::layout()
        ))),
    }
}

/// `FUNCTION LOAD REPLACE` of `library` into the Redis behind `conn`.
async fn load_library_into(
    conn: &mut impl redis::aio::ConnectionLike,
    library: &Library,
) -> Result<(), StoreError> {
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&library.source)
        .query_async(conn)
        .await?;
    Ok(())
}

/// The library loaded in the Redis behind `conn` (`meet_version`), if any.
async fn loaded_library(
    conn: &mut impl redis::aio::ConnectionLike,
) -> Result<Option<Loaded>, StoreError> {
    let loaded: Result<String, RedisError> = redis::cmd("FCALL")
        .arg("meet_version")
        .arg(0)
        .query_async(conn)
        .await;
    match loaded {
        Ok(version) => Ok(Some(Loaded::parse(&version))),
        Err(err) if function_missing(&err) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

fn function_missing(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(redis::ServerErrorKind::ResponseError)
        && err
            .detail()
            .is_some_and(|d| d.starts_with("Function not found"))
        || err.to_string().contains("Function not found")
}
