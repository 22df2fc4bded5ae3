//! The daemon's life: start (the embedded Redis if no Redis is configured,
//! the store, what Redis keeps against `redis.durability`, the start-up
//! tick, the cron job, the socket), tell systemd it is ready, feed its
//! watchdog while ticks succeed, reload on SIGHUP, drain on SIGTERM or
//! SIGINT.
//!
//! Draining: stop accepting, answer every request already received, let
//! the scheduler finish its current tick, stop the embedded Redis, remove
//! the socket, exit 0, all within the drain deadline. A second signal
//! exits at once.

use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::archive::{self, ArchiveOptions, Backend, Db, DbError};
use crate::cmd::{self, Context, Limits};
use crate::config::{self, Config, Overrides};
use crate::durability::{self, Durability, Judgement};
use crate::embedded_redis::{EmbeddedError, EmbeddedRedis};
use crate::logging::LogHandle;
use crate::scheduler::{self, Scheduler, SchedulerError, Trigger};
use crate::server::{self, Live, ServerConfig};
use crate::stats::Stats;
use crate::store::{Store, StoreError, StoreOptions};
use crate::watch::Hub;
use crate::web::{self, Web};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket could not be set up.
    #[error(transparent)]
    Bind(#[from] server::BindError),
    /// Redis said something that is not a matter of waiting.
    #[error("cannot use Redis: {0}")]
    Store(StoreError),
    /// The cron job could not start.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// The embedded Redis could not start.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// Signals or a passed socket could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A setting that cannot work as it is (a group the socket cannot be
    /// given to): the message names it.
    #[error("{0}")]
    Config(String),
}

impl DaemonError {
    /// Whether starting again cannot help until something changes: the
    /// configuration (a bad setting, a partition count other than the
    /// data's, no socket directory, no redis-server) or the daemon (a
    /// library of a newer API level is loaded). The daemon then exits 2,
    /// which the systemd unit does not restart (RestartPreventExitStatus=2).
    pub fn is_configuration(&self) -> bool {
        match self {
            DaemonError::Config(_) => true,
            DaemonError::Store(err) => matches!(err, StoreError::Incompatible(_)),
            DaemonError::Bind(err) => matches!(
                err,
                server::BindError::NotASocket(_)
                    | server::BindError::NoDirectory { .. }
                    | server::BindError::RuntimeDirectory { .. }
            ),
            DaemonError::Embedded(err) => matches!(err, EmbeddedError::NotInstalled(_)),
            DaemonError::Scheduler(_) | DaemonError::Setup(_) => false,
        }
    }

    /// The exit status: 2 for [`DaemonError::is_configuration`], else 1.
    pub fn exit_code(&self) -> u8 {
        if self.is_configuration() { 2 } else { 1 }
    }
}

/// Where the configuration came from, to read it again on SIGHUP.
pub struct Source {
    /// `--config`
    pub file: Option<PathBuf>,
    /// `--socket`, `--redis`
    pub overrides: Overrides,
}

fn store_options(config: &Config, url: String) -> StoreOptions {
    let mut options = StoreOptions::new(url);
    options.cluster = config.redis_cluster.clone();
    options.partitions = config.partitions;
    options.timeout = config.redis_timeout;
    options.tick_batch = config.tick_batch;
    options.timeout_budget = config.timeout_budget;
    options.retention = config.retention;
    options
}

fn live(config: &Config) -> Live {
    let s = &config.socket;
    let mut server = ServerConfig::new(s.path.clone());
    server.socket_mode = s.mode;
    server.max_line = s.max_line;
    server.max_connections = s.max_connections;
    server.max_connections_per_uid = s.max_connections_per_uid;
    server.admin_reserved_connections = s.admin_reserved_connections;
    server.idle_timeout = s.idle_timeout;
    server.pipeline_depth = s.pipeline_depth;
    server.admin_uids = config.admin_uids.clone();
    server.admin_gids = config.admin_gids.clone();
    server.watch_send_buffer = config.watch_send_buffer;
    Live {
        server: Arc::new(server),
        limits: Limits {
            page: config.page,
            text: config.chat_text_bytes,
            reply_bytes: config.reply_bytes,
        },
    }
}

fn notify(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "cannot notify systemd");
    }
}

/// SIGTERM, SIGINT and SIGHUP, delivered by signal-hook's thread.
fn signals() -> Result<mpsc::UnboundedReceiver<i32>, DaemonError> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Setup(format!("cannot handle signals: {e}")))?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| DaemonError::Setup(format!("cannot start the signal thread: {e}")))?;
    Ok(rx)
}

/// Connect to Redis, retrying while it is unreachable.
pub async fn connect(options: StoreOptions) -> Result<Store, StoreError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match Store::connect(options.clone()).await {
            Ok(store) => return Ok(store),
            Err(StoreError::Unavailable(why)) => {
                let url = config::redact_url(&options.url);
                tracing::warn!(%url, "Redis is not reachable yet ({why}); retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err),
        }
    }
}

/// The listening socket: the one systemd passed (socket activation), or
/// one we bind. `true` when we bound it (and so remove it at the end).
fn listener(config: &Config) -> Result<(UnixListener, bool), DaemonError> {
    let passed = sd_notify::listen_fds()
        .map_err(|e| DaemonError::Setup(format!("bad socket activation: {e}")))?
        .next();
    if let Some(fd) = passed {
        // SAFETY: systemd (or whoever set LISTEN_PID to our pid) handed us
        // this descriptor, a listening Unix socket, for us alone.
        let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        let setup = |e: std::io::Error| DaemonError::Setup(format!("the passed socket: {e}"));
        std.set_nonblocking(true).map_err(setup)?;
        tracing::info!("serving on the socket passed by systemd");
        return Ok((UnixListener::from_std(std).map_err(setup)?, false));
    }
    let listener = server::bind(&live(config).server)?;
    if let Some(gid) = config.socket.group {
        std::os::unix::fs::chown(&config.socket.path, None, Some(gid)).map_err(|e| {
            DaemonError::Config(format!(
                "socket.group: cannot give the socket to group {gid}: {e}; meetingd must be a \
                 member of that group (SupplementaryGroups= under systemd)"
            ))
        })?;
    }
    Ok((listener, true))
}

/// Raise this process's soft limit on open files to `wanted` (at most the
/// hard limit), so that `socket.max_connections` clients (and each watched
/// instance's Redis connection) fit: a soft limit of 1024 is common
/// outside systemd. The bench and the tests use it for their many sockets
/// too.
pub fn raise_file_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let wanted = wanted as libc::rlim_t;
    if limit.rlim_cur >= wanted {
        return;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max.min(wanted);
    // SAFETY: setrlimit reads the struct we own; lowering nothing.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        let err = std::io::Error::last_os_error();
        tracing::warn!("cannot raise the open-file limit: {err}");
    } else if limit.rlim_cur < wanted {
        tracing::warn!(
            limit = limit.rlim_cur,
            wanted,
            "the open-file limit is lower than the connections allowed need"
        );
    } else {
        tracing::debug!(before, now = limit.rlim_cur, "raised the open-file limit");
    }
}

/// Keep this daemon in the store's list of serving daemons (a third of
/// the entry's life between renewals).
async fn renew_serving(store: Store, who: String) {
    loop {
        if let Err(err) = store.renew_serving(&who).await {
            tracing::debug!(error = %err, "cannot renew this daemon's serving entry");
        }
        tokio::time::sleep(crate::store::SERVING_TTL / 3).await;
    }
}

/// Index, once, what was stored before the listings' indexes existed (see
/// [`Store::build_indexes`]), while the daemon serves; tried again after
/// a failure. MEETINGS and USERS are complete once it is done.
async fn build_indexes(store: Store) {
    loop {
        match store.build_indexes().await {
            Ok(None) => return,
            Ok(Some(done)) => {
                tracing::info!(
                    meetings = done.meetings,
                    users = done.users,
                    "the listings' indexes are built: MEETINGS and USERS list everything stored"
                );
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "building the listings' indexes failed; trying again in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(source: Source, config: Config, log: LogHandle) -> Result<(), DaemonError> {
    raise_file_limit(2 * config.socket.max_connections as u64 + 256);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let mut signals = signals()?;
    notify(&[NotifyState::Status("starting")]);
    let embedded = match (&config.redis_url, config.redis_cluster.is_empty()) {
        (Some(_), _) | (None, false) => None,
        (None, true) => {
            notify(&[NotifyState::Status("starting the embedded redis-server")]);
            Some(EmbeddedRedis::start(&config.embedded).await?)
        }
    };
    let url = match (&config.redis_url, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(embedded)) => embedded.url().to_string(),
        // a cluster: the store connects to config.redis_cluster
        (None, None) => String::new(),
    };
    notify(&[NotifyState::Status("connecting to Redis")]);
    let store = tokio::select! {
        store = connect(store_options(&config, url.clone())) => store.map_err(DaemonError::Store)?,
        Some(_) = signals.recv() => {
            tracing::info!("stopped before Redis could be reached");
            if let Some(embedded) = embedded {
                embedded.stop().await;
            }
            return Ok(());
        }
    };
    // this daemon serves the data: a repartition refuses to run meanwhile
    let serving_as = format!(
        "{}:{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into()),
        std::process::id()
    );
    check_durability(&config, &store, &url).await?;
    store
        .start_serving(&serving_as)
        .await
        .map_err(DaemonError::Store)?;
    let serving = tokio::spawn(renew_serving(store.clone(), serving_as.clone()));
    tokio::spawn(build_indexes(store.clone()));
    let serving_store = store.clone();
    let stats = Arc::new(Stats::default());
    let wake = archive::Wake::new();
    let archiver = match &config.archive {
        Some(options) => Some(start_archive(&config, options, &store, &stats, wake.clone()).await?),
        None => None,
    };
    let scheduler = Scheduler::new(Arc::new(store.clone()), stats.clone());
    notify(&[NotifyState::Status("catching up: the start-up tick")]);
    // whatever fell due while nothing ran; if it fails, the next tick does it
    let _ = scheduler.tick(Trigger::Startup).await;
    let mut cron = scheduler.start(&config.cron).await?;
    let cron_interval = Arc::new(AtomicU64::new(
        scheduler::cron_interval(&config.cron)?.as_millis() as u64,
    ));
    let (listener, bound) = listener(&config)?;
    let (live_tx, live_rx) = watch::channel(live(&config));
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let hub = Hub::new(
        store.clone(),
        stats.clone(),
        config.watch_buffer,
        cmd::watch_line,
    );
    if archiver.is_some() {
        // the archiver is woken by each partition's announcements, on the
        // hub's subscriber connections (one per master in all)
        let channels = (0..store.keys().partitions())
            .map(Store::outbox_channel)
            .collect();
        hub.hold(
            channels,
            Arc::new(move |channel: &[u8]| wake.channel(channel)),
        );
    }
    let ctx = Context {
        store,
        limits: live(&config).limits,
        stats: stats.clone(),
        scheduler: scheduler.clone(),
        hub,
    };
    if let Some(http) = &config.http {
        let listener = web::bind(http.listen).await.map_err(|e| {
            DaemonError::Setup(format!(
                "http.listen: cannot listen on {}: {e}",
                http.listen
            ))
        })?;
        let archive = config.archive.as_ref().map(|a| a.url.as_str());
        let view = Web::new(
            ctx.clone(),
            http,
            config.retention,
            archive,
            shutdown.clone(),
        );
        tokio::spawn(web::serve(listener, view));
    }
    let server = tokio::spawn(server::run(
        listener,
        live_rx,
        ctx,
        shutdown.clone(),
        tracker.clone(),
    ));
    let status = format!("serving on {}", config.socket.path.display());
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!(socket = %config.socket.path.display(), cron = %config.cron, "ready");
    let feeder = sd_notify::watchdog_enabled()
        .map(|every| tokio::spawn(feed_watchdog(every, stats.clone(), cron_interval.clone())));

    let mut current = config;
    // SIGHUP reloads; SIGTERM, SIGINT (or the signal thread gone) drain.
    while let Some(SIGHUP) = signals.recv().await {
        {
            let now = sd_notify::NotifyState::monotonic_usec_now().ok();
            let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
            states.extend(now);
            notify(&states);
            match config::load(source.file.as_deref(), &source.overrides) {
                Ok((_, new)) => {
                    apply_reload(&current, &new, &log, &live_tx);
                    if new.cron != current.cron {
                        match scheduler.start(&new.cron).await {
                            Ok(started) => {
                                std::mem::replace(&mut cron, started).stop().await;
                                if let Ok(every) = scheduler::cron_interval(&new.cron) {
                                    cron_interval.store(every.as_millis() as u64, Ordering::SeqCst);
                                }
                                tracing::info!(cron = %new.cron, "new schedule");
                            }
                            Err(err) => tracing::error!("keeping the old schedule: {err}"),
                        }
                    }
                    current = new;
                }
                Err(err) => {
                    tracing::error!("reload refused, the running configuration stays: {err}")
                }
            }
            notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
    }

    // Drain.
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    tracing::info!("draining: no new connections; answering what was received");
    tokio::spawn(async move {
        if signals.recv().await.is_some() {
            tracing::warn!("a second signal: exiting at once");
            std::process::exit(1);
        }
    });
    shutdown.cancel();
    tracker.close();
    let deadline = tokio::time::Instant::now() + current.drain_timeout;
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("the drain deadline passed; closing the remaining connections");
    }
    let _ = server.await;
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    cron.stop().await;
    if tokio::time::timeout_at(deadline, scheduler.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("the drain deadline passed during a tick");
    }
    if let Some(archiver) = archiver {
        // whatever it was doing is written again by the next daemon: every
        // write is idempotent, and an entry is acknowledged after its commit
        archiver.abort();
    }
    serving.abort();
    if let Err(err) = serving_store.stop_serving(&serving_as).await {
        tracing::debug!(error = %err, "cannot leave the list of serving daemons (it lapses)");
    }
    if bound {
        let _ = std::fs::remove_file(&current.socket.path);
    }
    if let Some(embedded) = embedded {
        embedded.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Compare what Redis keeps (each master of a cluster) with
/// `redis.durability`, and say what an acknowledgement means: one line per
/// node, a warning where it keeps less than the default promise or cannot
/// be asked, a refusal (exit 2) where it keeps less than a configured one.
/// See [`durability::judge`] for why.
async fn check_durability(config: &Config, store: &Store, url: &str) -> Result<(), DaemonError> {
    let promise = config.durability.unwrap_or(Durability::DEFAULT);
    let stated = config.durability.is_some();
    for answer in store.persistence().await {
        let node = answer
            .node
            .clone()
            .unwrap_or_else(|| config::redact_url(url));
        match durability::judge(promise, stated, &node, &answer.found) {
            Judgement::Kept => {
                if let Ok(found) = &answer.found {
                    tracing::info!(
                        "redis.durability \"{promise}\" kept: the Redis at {node} runs with \
                         {found}, so {}",
                        found.meaning()
                    );
                }
            }
            Judgement::Warn(line) => tracing::warn!("{line}"),
            Judgement::Refuse(line) => return Err(DaemonError::Config(line)),
        }
    }
    Ok(())
}

/// Turn archiving on (each partition's outbox) and start the archiver.
/// A database that cannot be reached now is tried again in the background
/// (the daemon serves meanwhile); one whose schema is newer than ours, or
/// that refuses our migrations, stops the start (exit 2).
async fn start_archive(
    config: &Config,
    options: &ArchiveOptions,
    store: &Store,
    stats: &Arc<Stats>,
    wake: Arc<archive::Wake>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let shared_redis = config.redis_url.is_some() || !config.redis_cluster.is_empty();
    if shared_redis && matches!(Backend::of_url(&options.url), Ok((Backend::Sqlite, _))) {
        tracing::warn!(
            "archive.url is a SQLite file with a Redis of your own: every daemon on this Redis \
             must write to one archive, and a SQLite file is this machine's only; use \
             PostgreSQL or MySQL when several daemons share the Redis"
        );
    }
    store.outbox_enable().await.map_err(DaemonError::Store)?;
    let db = match Db::open(&options.url).await {
        Ok(db) => Some(db),
        Err(err @ (DbError::Newer(_) | DbError::Url(_) | DbError::Migrate(_))) => {
            return Err(DaemonError::Config(err.to_string()));
        }
        Err(err) => {
            tracing::warn!(
                "the archive database cannot be reached; trying again in the background: {err}"
            );
            None
        }
    };
    Ok(tokio::spawn(archive::serve(
        store.clone(),
        options.clone(),
        stats.clone(),
        db,
        wake,
    )))
}

/// Apply what a reload may change; say what it may not.
fn apply_reload(old: &Config, new: &Config, log: &LogHandle, live_tx: &watch::Sender<Live>) {
    if new.log_level != old.log_level {
        log.set_level(&new.log_level);
    }
    let _ = live_tx.send(live(new));
    let restart_only = [
        ("socket.path", old.socket.path != new.socket.path),
        ("socket.mode", old.socket.mode != new.socket.mode),
        ("socket.group", old.socket.group != new.socket.group),
        ("redis.url", old.redis_url != new.redis_url),
        ("redis.cluster", old.redis_cluster != new.redis_cluster),
        ("redis.timeout_ms", old.redis_timeout != new.redis_timeout),
        ("redis.partitions", old.partitions != new.partitions),
        ("redis.durability", old.durability != new.durability),
        ("scheduler.tick_batch", old.tick_batch != new.tick_batch),
        (
            "scheduler.timeout_budget",
            old.timeout_budget != new.timeout_budget,
        ),
        ("log.format", old.log_json != new.log_json),
        ("embedded", old.embedded != new.embedded),
        ("watch.buffer", old.watch_buffer != new.watch_buffer),
        ("http", old.http != new.http),
        ("archive", old.archive != new.archive),
    ];
    for (key, changed) in restart_only {
        if changed {
            tracing::warn!(
                key,
                "changed in the configuration, but it takes a restart: ignored"
            );
        }
    }
    tracing::info!("configuration reloaded");
}

/// Tell systemd we are alive, but only while ticks succeed: a daemon whose
/// ticks stopped gets restarted.
async fn feed_watchdog(every: Duration, stats: Arc<Stats>, cron_interval: Arc<AtomicU64>) {
    let mut ticker = tokio::time::interval(every / 2);
    loop {
        ticker.tick().await;
        let limit = 2 * cron_interval.load(Ordering::SeqCst) as i64;
        let now = chrono::Utc::now().timestamp_millis();
        match stats.last_good_tick() {
            Some(at) if now - at <= limit => notify(&[NotifyState::Watchdog]),
            last => tracing::warn!(
                ?last,
                "no good tick for two intervals; not feeding the watchdog"
            ),
        }
    }
}
