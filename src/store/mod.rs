//! The store: the only module that talks to Redis.
//!
//! It loads the Lua library (`lua/`, see [`library`]) into Redis and calls
//! its functions with the keys the layout ([`Keys`]) gives, one typed method
//! per operation. Every rule lives in the Lua: this module only names keys,
//! passes arguments (and `now`, from its [`Clock`]), decodes replies and
//! maps errors to the spec's codes. It never scans the keyspace.
//!
//! Library upkeep: at connect, and again after any reconnect, it compares
//! `meet_version` with its own and loads the library when they differ or the
//! library is missing; a call that fails because the function is gone
//! (Redis restarted without persistence, a failover, `FUNCTION FLUSH`)
//! loads it and is retried once, which is safe because nothing ran. On a
//! Redis Cluster both happen master by master (`cluster.rs`).

mod check;
mod cluster;
mod conn;
mod keys;
mod library;
mod load;
mod reply;
mod types;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, Value};

pub use keys::Keys;
pub use library::{Library, library};
pub use load::{Load, LoadReport};
pub use types::*;
pub use watch::{Feed, FeedItem, Listener, StreamId};

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
    /// Redis is unreachable or did not answer in time.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
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
            StoreError::Internal(_) => Code::Internal,
        }
    }
}

impl From<RedisError> for StoreError {
    fn from(err: RedisError) -> Self {
        if let Some(code) = err.code().and_then(Code::from_library) {
            let message = err.detail().unwrap_or_default().to_string();
            return StoreError::Rule { code, message };
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
    pub partitions: u64,
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
}

impl StoreOptions {
    /// The defaults for a Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            cluster: Vec::new(),
            partitions: 16,
            timeout: Duration::from_secs(1),
            tick_batch: 100,
            timeout_budget: 500,
            retention: Duration::ZERO,
            load_library: true,
        }
    }
}

/// A handle on the data in Redis. Cheap to clone: clones share one
/// multiplexed connection, which reconnects by itself.
#[derive(Clone)]
pub struct Store {
    conn: conn::Conn,
    keys: Keys,
    clock: Arc<dyn Clock>,
    /// False after a disconnection: the library is checked before the next
    /// call (the Redis we reach now may be another one, or restarted).
    library_checked: Arc<AtomicBool>,
    options: Arc<StoreOptions>,
}

/// Most members a Lua call reads at once.
const PAGE: usize = 1000;

/// Arguments of a function call, as redis-cli would send them.
type Args = Vec<String>;

impl Store {
    /// Connect with the system clock.
    pub async fn connect(options: StoreOptions) -> Result<Store, StoreError> {
        Store::connect_with_clock(options, Arc::new(SystemClock)).await
    }

    /// Connect, taking `now` from `clock`, and make sure the library is
    /// loaded.
    pub async fn connect_with_clock(
        options: StoreOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreError> {
        let library_checked = Arc::new(AtomicBool::new(false));
        let conn = conn::Conn::open(&options, library_checked.clone()).await?;
        let store = Store {
            conn,
            keys: Keys::new(options.partitions),
            clock,
            library_checked,
            options: Arc::new(options),
        };
        if store.options.load_library {
            store.ensure_library().await?;
            store.ensure_layout().await?;
        } else {
            store.library_checked.store(true, Ordering::SeqCst);
        }
        Ok(store)
    }

    /// The key layout in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
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
            .fcall("meet_layout", &[Keys::layout()], &vec![ours.to_string()])
            .await?;
        let recorded = reply::int("meet_layout", value)?;
        if recorded != ours as i64 {
            return Err(StoreError::Internal(format!(
                "redis.partitions is {ours}, but the data in this Redis was laid out with \
                 {recorded} partitions: set redis.partitions = {recorded} (changing it \
                 needs every meeting's keys renamed)"
            )));
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
            self.library_checked.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let mut conn = self.conn.clone();
        if library_outdated(&mut conn).await? {
            self.load_library().await?;
        }
        self.library_checked.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn load_library(&self) -> Result<(), StoreError> {
        if self.conn.is_cluster() {
            return self.library_on_every_master().await;
        }
        let mut conn = self.conn.clone();
        load_library_into(&mut conn).await?;
        tracing::info!(version = %library().version, "loaded the Lua library into Redis");
        Ok(())
    }

    /// Call a library function; load the library and retry once if Redis
    /// has lost it.
    async fn fcall(
        &self,
        function: &str,
        keys: &[String],
        args: &Args,
    ) -> Result<Value, StoreError> {
        if !self.library_checked.load(Ordering::SeqCst) {
            self.ensure_library().await?;
        }
        let mut cmd = Cmd::new();
        cmd.arg("FCALL")
            .arg(function)
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        let mut conn = self.conn.clone();
        match cmd.query_async::<Value>(&mut conn).await {
            Err(err) if function_missing(&err) => {
                tracing::warn!(
                    function,
                    "the Lua library is gone from Redis; loading it again"
                );
                self.load_library().await?;
                Ok(cmd.query_async::<Value>(&mut conn).await?)
            }
            result => Ok(result?),
        }
    }

    async fn record(
        &self,
        function: &'static str,
        keys: &[String],
        args: Args,
    ) -> Result<Fields, StoreError> {
        let value = self.fcall(function, keys, &args).await?;
        Fields::new(function, value)
    }

    // ---- users ----

    /// Create or update a user.
    pub async fn user_set(&self, user: &User) -> Result<User, StoreError> {
        let args = vec![
            user.id.to_string(),
            user.name.clone(),
            user.age.to_string(),
            user.gender.clone(),
            user.email.clone(),
        ];
        let f = self
            .record("meet_user_set", &[Keys::user(user.id)], args)
            .await?;
        decode_user(f)
    }

    /// Read a user.
    pub async fn user_get(&self, user: Id) -> Result<User, StoreError> {
        let f = self
            .record("meet_user_get", &[Keys::user(user)], vec![user.to_string()])
            .await?;
        decode_user(f)
    }

    /// Read many users in one round trip; `None` where a user does not
    /// exist.
    pub async fn users_get(&self, users: &[Id]) -> Result<Vec<Option<User>>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        if !self.library_checked.load(Ordering::SeqCst) {
            self.ensure_library().await?;
        }
        let mut pipe = redis::pipe();
        for &user in users {
            pipe.cmd("FCALL")
                .arg("meet_user_get")
                .arg(1)
                .arg(Keys::user(user))
                .arg(user.to_string());
        }
        let mut replies = self.run_all(&pipe, false).await?;
        if replies
            .iter()
            .any(|r| r.as_ref().is_err_and(function_missing))
        {
            self.load_library().await?;
            replies = self.run_all(&pipe, false).await?;
        }
        replies
            .into_iter()
            .map(|reply| match reply {
                Err(err) => match StoreError::from(err) {
                    StoreError::Rule {
                        code: Code::NotFound,
                        ..
                    } => Ok(None),
                    other => Err(other),
                },
                Ok(value) => decode_user(Fields::new("meet_user_get", value)?).map(Some),
            })
            .collect()
    }

    /// Run many commands in one go, each with its own outcome: one pipeline
    /// on a single Redis (in order); on a cluster (whose pipelines must not
    /// span slots) concurrent calls, which the cluster connection pipelines
    /// per node, or one after the other when `ordered`.
    async fn run_all(
        &self,
        pipe: &redis::Pipeline,
        ordered: bool,
    ) -> Result<Vec<Result<Value, RedisError>>, StoreError> {
        let mut conn = self.conn.clone();
        if self.conn.is_cluster() && ordered {
            let mut out = Vec::new();
            for cmd in pipe.cmd_iter() {
                out.push(cmd.query_async::<Value>(&mut conn).await);
            }
            return Ok(out);
        }
        if self.conn.is_cluster() {
            let calls = pipe.cmd_iter().map(|cmd| {
                let mut conn = conn.clone();
                async move { cmd.query_async::<Value>(&mut conn).await }
            });
            return Ok(futures_util::future::join_all(calls).await);
        }
        let mut pipe = pipe.clone();
        pipe.ignore_errors();
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                Value::ServerError(err) => Err(err.into()),
                value => Ok(value),
            })
            .collect())
    }

    // ---- meetings ----

    /// Create or update a meeting's own fields.
    pub async fn meeting_set(&self, meeting: &Meeting) -> Result<Meeting, StoreError> {
        let args = vec![
            meeting.id.to_string(),
            meeting.title.clone(),
            meeting.description.clone(),
            meeting.public.to_string(),
        ];
        let f = self
            .record("meet_meeting_set", &[self.keys.meeting(meeting.id)], args)
            .await?;
        decode_meeting(f)
    }

    /// A meeting with its audience and instances.
    pub async fn meeting_get(&self, meeting: Id) -> Result<MeetingDetail, StoreError> {
        let k = &self.keys;
        let keys = [
            k.meeting(meeting),
            k.audience(meeting),
            k.orders(meeting),
            k.schedule(meeting),
        ];
        let mut f = self
            .record("meet_meeting_get", &keys, vec![meeting.to_string()])
            .await?;
        let audience = strings("meet_meeting_get", f.array("audience")?)?;
        let audience_total = f.count("audience_total")?;
        let instances_total = f.count("instances_total")?;
        let instances = f
            .array("instances")?
            .into_iter()
            .map(|row| {
                let mut row = reply::array("meet_meeting_get", row)?.into_iter();
                let mut next = || row.next().unwrap_or_default();
                let order = reply::id("meet_meeting_get", next())?;
                let from = reply::int("meet_meeting_get", next())?;
                let to = reply::int("meet_meeting_get", next())?;
                let state = reply::text("meet_meeting_get", next())?
                    .parse()
                    .map_err(StoreError::Internal)?;
                Ok(Instance {
                    id: InstanceId::new(meeting, order),
                    from,
                    to,
                    state,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(MeetingDetail {
            meeting: decode_meeting(f)?,
            audience,
            audience_total,
            instances,
            instances_total,
        })
    }

    /// Add e-mails to a meeting's audience.
    pub async fn audience_add(
        &self,
        meeting: Id,
        emails: &[String],
    ) -> Result<Audience, StoreError> {
        self.audience_change("meet_audience_add", meeting, emails)
            .await
    }

    /// Remove e-mails from a meeting's audience.
    pub async fn audience_del(
        &self,
        meeting: Id,
        emails: &[String],
    ) -> Result<Audience, StoreError> {
        self.audience_change("meet_audience_del", meeting, emails)
            .await
    }

    async fn audience_change(
        &self,
        function: &'static str,
        meeting: Id,
        emails: &[String],
    ) -> Result<Audience, StoreError> {
        let keys = [self.keys.meeting(meeting), self.keys.audience(meeting)];
        let mut args = vec![meeting.to_string()];
        args.extend(emails.iter().cloned());
        let mut f = self.record(function, &keys, args).await?;
        Ok(Audience {
            changed: f.count("changed")?,
            total: f.count("audience_total")?,
            emails: strings(function, f.array("audience")?)?,
        })
    }

    /// Create an instance or move its window.
    pub async fn instance_set(
        &self,
        instance: InstanceId,
        from: Millis,
        to: Millis,
    ) -> Result<Instance, StoreError> {
        let m = instance.meeting;
        let k = &self.keys;
        let keys = [
            k.meeting(m),
            k.orders(m),
            k.schedule(m),
            Keys::due(k.partition(m)),
        ];
        let args = vec![
            m.to_string(),
            instance.order.to_string(),
            from.to_string(),
            to.to_string(),
        ];
        let mut f = self.record("meet_instance_set", &keys, args).await?;
        Ok(Instance {
            id: InstanceId::new(f.id("meeting")?, f.id("order")?),
            from: f.int("from")?,
            to: f.int("to")?,
            state: f.string("state")?.parse().map_err(StoreError::Internal)?,
        })
    }

    /// Which instance an `M` or `M/O` names: `M` is the meeting's active
    /// instance (`inactive` when it has none).
    pub async fn resolve(&self, target: InstanceRef) -> Result<InstanceId, StoreError> {
        match target {
            InstanceRef::Exact(instance) => Ok(instance),
            InstanceRef::Current(meeting) => {
                let keys = [
                    Keys::active(self.keys.partition(meeting)),
                    self.keys.meeting(meeting),
                ];
                let value = self
                    .fcall("meet_current", &keys, &vec![meeting.to_string()])
                    .await?;
                Ok(InstanceId::new(meeting, reply::id("meet_current", value)?))
            }
        }
    }

    // ---- presence ----

    /// A user joins an active instance.
    pub async fn join(&self, user: Id, target: InstanceRef) -> Result<Joined, StoreError> {
        let email = self.user_get(user).await?.email;
        let instance = self.resolve(target).await?;
        let m = instance.meeting;
        let k = &self.keys;
        let keys = [
            k.meeting(m),
            k.audience(m),
            k.schedule(m),
            k.present(instance),
            k.events(instance),
        ];
        let args = vec![
            m.to_string(),
            instance.order.to_string(),
            user.to_string(),
            email,
            self.now().to_string(),
            self.retention(),
        ];
        let mut f = self.record("meet_join", &keys, args).await?;
        Ok(Joined {
            instance,
            user,
            joined_at: f.int("joined_at")?,
            event_id: f.string("id")?,
        })
    }

    /// A user leaves an active instance.
    pub async fn leave(&self, user: Id, target: InstanceRef) -> Result<Left, StoreError> {
        let instance = self.resolve(target).await?;
        let k = &self.keys;
        let keys = [
            k.schedule(instance.meeting),
            k.present(instance),
            k.events(instance),
        ];
        let args = vec![
            instance.meeting.to_string(),
            instance.order.to_string(),
            user.to_string(),
            self.now().to_string(),
            self.retention(),
        ];
        let mut f = self.record("meet_leave", &keys, args).await?;
        Ok(Left {
            instance,
            user,
            left_at: f.int("left_at")?,
            joined_at: f.int("joined_at")?,
            event_id: f.string("id")?,
        })
    }

    /// A page of an instance's current participants, in join order, after
    /// the user `after`; `limit` at most 1000.
    pub async fn participants(
        &self,
        target: InstanceRef,
        after: Option<Id>,
        limit: usize,
    ) -> Result<(InstanceId, Vec<Participant>), StoreError> {
        let instance = self.resolve(target).await?;
        let keys = [
            self.keys.schedule(instance.meeting),
            self.keys.present(instance),
        ];
        let args = vec![
            instance.meeting.to_string(),
            instance.order.to_string(),
            after.map(|u| u.to_string()).unwrap_or_default(),
            limit.clamp(1, PAGE).to_string(),
        ];
        let value = self.fcall("meet_participants", &keys, &args).await?;
        let list = reply::pairs("meet_participants", value)?
            .into_iter()
            .map(|(user, joined_at)| Participant { user, joined_at })
            .collect();
        Ok((instance, list))
    }

    /// Every active instance, by partition and meeting id. The partitions
    /// are read at once (the multiplexed connection pipelines the calls),
    /// each a page of at most 1000 after the other.
    pub async fn active_instances(&self) -> Result<Vec<InstanceId>, StoreError> {
        let partitions = (0..self.keys.partitions()).map(|p| self.active_in(p));
        let mut all = Vec::new();
        for listed in futures_util::future::join_all(partitions).await {
            all.extend(listed?);
        }
        Ok(all)
    }

    async fn active_in(&self, partition: u64) -> Result<Vec<InstanceId>, StoreError> {
        let mut listed = Vec::new();
        let mut after = String::new();
        loop {
            let value = self
                .fcall(
                    "meet_active",
                    &[Keys::active(partition)],
                    &vec![after.clone(), PAGE.to_string()],
                )
                .await?;
            let page = reply::array("meet_active", value)?;
            let full = page.len() == PAGE;
            for name in page {
                let instance: InstanceId = reply::text("meet_active", name)?
                    .parse()
                    .map_err(StoreError::Internal)?;
                after = instance.meeting.to_string();
                listed.push(instance);
            }
            if !full {
                return Ok(listed);
            }
        }
    }

    /// Every active instance with its meeting's details and head count (the
    /// instances read at once).
    pub async fn active(&self) -> Result<Vec<ActiveInstance>, StoreError> {
        let instances = self.active_instances().await?;
        let infos =
            futures_util::future::join_all(instances.into_iter().map(|i| self.instance_info(i)))
                .await;
        let mut rows = Vec::new();
        for info in infos {
            match info {
                Ok(row) if row.instance.state == InstanceState::Active => rows.push(row),
                // ended between the two calls
                Ok(_) | Err(StoreError::Rule { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(rows)
    }

    /// One instance with its meeting's details and head count.
    pub async fn instance_info(&self, instance: InstanceId) -> Result<ActiveInstance, StoreError> {
        let m = instance.meeting;
        let keys = [
            self.keys.meeting(m),
            self.keys.schedule(m),
            self.keys.present(instance),
        ];
        let args = vec![m.to_string(), instance.order.to_string()];
        let mut f = self.record("meet_instance", &keys, args).await?;
        Ok(ActiveInstance {
            instance: Instance {
                id: instance,
                from: f.int("from")?,
                to: f.int("to")?,
                state: f.string("state")?.parse().map_err(StoreError::Internal)?,
            },
            title: f.string("title")?,
            description: f.string("description")?,
            public: f.flag("public")?,
            participants: f.count("participants")?,
        })
    }

    /// For each active instance, when each current participant joined. The
    /// instances are read at once; a big one 1000 participants per call.
    pub async fn attendance(&self) -> Result<Vec<Attendance>, StoreError> {
        let instances = self.active_instances().await?;
        let rows =
            futures_util::future::join_all(instances.into_iter().map(|i| self.attendance_of(i)))
                .await;
        let mut out = Vec::new();
        for row in rows {
            out.extend(row?);
        }
        Ok(out)
    }

    /// One instance's attendance; `None` when it ended meanwhile.
    async fn attendance_of(&self, instance: InstanceId) -> Result<Option<Attendance>, StoreError> {
        let m = instance.meeting;
        let keys = [
            self.keys.meeting(m),
            self.keys.schedule(m),
            self.keys.present(instance),
        ];
        let mut row: Option<Attendance> = None;
        let mut after = String::new();
        loop {
            let args = vec![
                m.to_string(),
                instance.order.to_string(),
                after.clone(),
                PAGE.to_string(),
            ];
            let mut f = match self.record("meet_attendance", &keys, args).await {
                Ok(f) => f,
                // ended, or the page's last user left, meanwhile
                Err(StoreError::Rule { .. }) => return Ok(None),
                Err(err) => return Err(err),
            };
            let page = reply::pairs("meet_attendance", f.take("participants")?)?;
            let current = match &mut row {
                Some(current) => current,
                None => row.insert(Attendance {
                    instance,
                    title: f.string("title")?,
                    participants: Vec::new(),
                }),
            };
            let full = page.len() == PAGE;
            if let Some((last, _)) = page.last() {
                after = last.to_string();
            }
            current.participants.extend(
                page.into_iter()
                    .map(|(user, joined_at)| Participant { user, joined_at }),
            );
            if !full {
                return Ok(row);
            }
        }
    }

    // ---- chat ----

    /// A participant posts a message.
    pub async fn post(
        &self,
        user: Id,
        target: InstanceRef,
        text: &str,
    ) -> Result<Posted, StoreError> {
        let instance = self.resolve(target).await?;
        let k = &self.keys;
        let keys = [
            k.schedule(instance.meeting),
            k.present(instance),
            k.chat(instance),
            k.chat_by(instance, user),
        ];
        let args = vec![
            instance.meeting.to_string(),
            instance.order.to_string(),
            user.to_string(),
            text.to_string(),
            self.now().to_string(),
            self.retention(),
        ];
        let mut f = self.record("meet_post", &keys, args).await?;
        Ok(Posted {
            id: f.string("id")?,
            instance,
            user,
            at: f.int("at")?,
        })
    }

    /// A page of an instance's chat (one user's only, with `user`), oldest
    /// first, after the message id `after`.
    pub async fn messages(
        &self,
        target: InstanceRef,
        user: Option<Id>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(InstanceId, Page<Message>), StoreError> {
        let instance = self.resolve(target).await?;
        let k = &self.keys;
        let mut keys = vec![k.schedule(instance.meeting), k.chat(instance)];
        keys.extend(user.map(|u| k.chat_by(instance, u)));
        let args = vec![
            instance.meeting.to_string(),
            instance.order.to_string(),
            user.map(|u| u.to_string()).unwrap_or_default(),
            after.unwrap_or_default().to_string(),
            limit.clamp(1, PAGE).to_string(),
        ];
        let value = self.fcall("meet_messages", &keys, &args).await?;
        Ok((
            instance,
            reply::page("meet_messages", "messages", value, reply::message)?,
        ))
    }

    /// A page of an instance's event log, oldest first, after the event id
    /// `after`.
    pub async fn events(
        &self,
        target: InstanceRef,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(InstanceId, Page<Event>), StoreError> {
        let instance = self.resolve(target).await?;
        let keys = [
            self.keys.schedule(instance.meeting),
            self.keys.events(instance),
        ];
        let args = vec![
            instance.meeting.to_string(),
            instance.order.to_string(),
            after.unwrap_or_default().to_string(),
            limit.clamp(1, PAGE).to_string(),
        ];
        let value = self.fcall("meet_events", &keys, &args).await?;
        Ok((
            instance,
            reply::page("meet_events", "events", value, reply::event)?,
        ))
    }

    // ---- the end of instances ----

    /// End an active instance by hand: everybody in it times out. Big
    /// instances are drained `timeout_budget` participants per call.
    pub async fn end(&self, target: InstanceRef) -> Result<Ended, StoreError> {
        let instance = self.resolve(target).await?;
        let k = &self.keys;
        let partition = k.partition(instance.meeting);
        let keys = [
            k.schedule(instance.meeting),
            k.present(instance),
            k.events(instance),
            Keys::due(partition),
            Keys::active(partition),
        ];
        let now = self.now().to_string();
        let mut ended: Option<Ended> = None;
        loop {
            let args = vec![
                instance.meeting.to_string(),
                instance.order.to_string(),
                now.clone(),
                self.options.timeout_budget.clamp(1, PAGE).to_string(),
                self.retention(),
            ];
            let mut f = match self.record("meet_end", &keys, args).await {
                // a tick drained the rest meanwhile
                Err(StoreError::Rule {
                    code: Code::Inactive,
                    ..
                }) if ended.is_some() => break,
                result => result?,
            };
            let users = f
                .array("timed_out")?
                .into_iter()
                .map(|u| reply::id("meet_end", u))
                .collect::<Result<Vec<_>, _>>()?;
            let ended_at = f.int("ended_at")?;
            let remaining = f.count("remaining")?;
            let row = ended.get_or_insert_with(|| Ended {
                instance,
                ended_at,
                timed_out: Vec::new(),
            });
            row.timed_out.extend(users);
            if remaining == 0 {
                break;
            }
        }
        ended.ok_or_else(|| StoreError::Internal("meet_end returned nothing".into()))
    }

    /// One tick step in one partition at `now`: list what is due (at most
    /// `tick_batch` instances) and apply it.
    pub async fn tick_step(&self, partition: u64, now: Millis) -> Result<TickStep, StoreError> {
        let due_key = Keys::due(partition);
        let active_key = Keys::active(partition);
        let batch = self.options.tick_batch.clamp(1, PAGE);
        let value = self
            .fcall(
                "meet_due",
                &[due_key.clone(), active_key.clone()],
                &vec![now.to_string(), batch.to_string()],
            )
            .await?;
        let listed = reply::array("meet_due", value)?;
        if listed.is_empty() {
            return Ok(TickStep::default());
        }
        let mut keys = vec![due_key, active_key];
        let mut args = vec![
            now.to_string(),
            self.options.timeout_budget.clamp(1, PAGE).to_string(),
            self.retention(),
        ];
        for row in &listed {
            let mut row = reply::array("meet_due", row.clone())?.into_iter();
            let mut next = || row.next().unwrap_or_default();
            let meeting = reply::id("meet_due", next())?;
            let order = reply::id("meet_due", next())?;
            let plan = reply::text("meet_due", next())?;
            let instance = InstanceId::new(meeting, order);
            let other = match plan.parse::<Id>() {
                Ok(active) => InstanceId::new(meeting, active),
                Err(_) => instance,
            };
            keys.extend([
                self.keys.schedule(meeting),
                self.keys.present(instance),
                self.keys.events(instance),
                self.keys.present(other),
                self.keys.events(other),
            ]);
            args.extend([meeting.to_string(), order.to_string(), plan]);
        }
        let mut f = self.record("meet_tick", &keys, args).await?;
        Ok(TickStep {
            listed: listed.len(),
            activated: f.instances("activated")?,
            ended: f.instances("ended")?,
            missed: f.instances("missed")?,
            timeouts: f.count("timeouts")?,
            skipped: f.count("skipped")?,
            more: f.int("more")? != 0,
        })
    }

    /// A whole tick at `now`: every partition, step after step, until
    /// nothing is due, however large the backlog.
    pub async fn tick(&self, now: Millis) -> Result<TickReport, StoreError> {
        if self.conn.is_cluster() {
            // a master that joined since is found here, before a slot (and
            // a call) reaches it: every tick looks at the masters again
            if let Err(err) = self.library_on_every_master().await {
                tracing::warn!(error = %err, "cannot check the library on every master");
            }
        }
        let mut report = TickReport::default();
        for partition in 0..self.keys.partitions() {
            let mut idle_steps = 0;
            loop {
                let step = self.tick_step(partition, now).await?;
                if step.listed == 0 {
                    break;
                }
                report.steps += 1;
                let progressed = !(step.activated.is_empty()
                    && step.ended.is_empty()
                    && step.missed.is_empty()
                    && step.timeouts == 0)
                    || step.skipped < step.listed as u64;
                report.activated.extend(step.activated);
                report.ended.extend(step.ended);
                report.missed.extend(step.missed);
                report.timeouts += step.timeouts;
                if !step.more {
                    break;
                }
                // Every listed instance skipped: others are at work on this
                // partition. Give up after a few rounds; the next tick
                // finishes.
                idle_steps = if progressed { 0 } else { idle_steps + 1 };
                if idle_steps >= 3 {
                    tracing::warn!(
                        partition,
                        "tick made no progress in 3 steps; leaving the rest to the next tick"
                    );
                    break;
                }
            }
        }
        if !report.missed.is_empty() {
            let names: Vec<String> = report.missed.iter().map(ToString::to_string).collect();
            tracing::warn!(missed = %names.join(","), "instances whose whole window passed while no tick ran: ended without events");
        }
        Ok(report)
    }
}

/// `FUNCTION LOAD REPLACE` of our library into the Redis behind `conn`.
async fn load_library_into(conn: &mut impl redis::aio::ConnectionLike) -> Result<(), StoreError> {
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&library().source)
        .query_async(conn)
        .await?;
    Ok(())
}

/// Whether the Redis behind `conn` lacks our library or holds another
/// version of it (`meet_version`).
async fn library_outdated(conn: &mut impl redis::aio::ConnectionLike) -> Result<bool, StoreError> {
    let loaded: Result<String, RedisError> = redis::cmd("FCALL")
        .arg("meet_version")
        .arg(0)
        .query_async(conn)
        .await;
    match loaded {
        Ok(version) => Ok(version != library().version),
        Err(err) if function_missing(&err) => Ok(true),
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

fn strings(function: &'static str, values: Vec<Value>) -> Result<Vec<String>, StoreError> {
    values
        .into_iter()
        .map(|v| reply::text(function, v))
        .collect()
}

fn decode_user(mut f: Fields) -> Result<User, StoreError> {
    let age = f.int("age")?;
    Ok(User {
        id: f.id("id")?,
        name: f.string("name")?,
        age: u8::try_from(age).map_err(|_| StoreError::Internal(format!("age {age}")))?,
        gender: f.string("gender")?,
        email: f.string("email")?,
    })
}

fn decode_meeting(mut f: Fields) -> Result<Meeting, StoreError> {
    Ok(Meeting {
        id: f.id("id")?,
        title: f.string("title")?,
        description: f.string("description")?,
        public: f.flag("public")?,
    })
}
