//! The `meetingd` binary: parse the command line, run, map errors to an exit
//! status (0 fine, 1 failed while running, 2 a bad configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use meetingd::config::{self, Overrides};
use meetingd::daemon::{self, Source};

/// mimalloc: the daemon allocates and frees small buffers for every
/// request, and glibc's malloc showed as a fifth of its CPU in profiles.
/// Built without transparent huge pages (its `no_thp` feature): with them,
/// every 2 MiB of its arena that was touched at all became resident (24
/// MiB at rest instead of 15, and twice the memory per idle watcher).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often at most a worker thread that goes idle hands the memory its
/// heap holds free back to mimalloc's arena (and the arena purges what
/// was freed long enough ago).
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Called when a worker thread of the runtime parks (has nothing to do):
/// mimalloc gives memory back only when the thread that allocated it
/// collects, and a thread that went idle after thousands of connections
/// closed would hold their pages until it next allocates. At most every
/// [`COLLECT_EVERY`] per thread: a busy daemon parks thousands of times
/// a second.
fn collect_when_idle() {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect has no preconditions; it collects the
        // calling thread's own heap.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// meetingd: meeting presence on Redis.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: serve the control socket on top of Redis.
    Serve(Settings),
    /// Validate the configuration and print it as it would run (secrets
    /// masked).
    CheckConfig(Settings),
    /// Check everything stored for consistency (read-only; exit 0 clean,
    /// 1 with one line per problem).
    Check(Settings),
    /// Move the stored data to another number of partitions (every meeting
    /// whose partition changes gets its keys copied under the new tag, a
    /// page at a time; resumable: run it again after an interruption).
    /// Every daemon on the data must be stopped first; afterwards start
    /// them with redis.partitions = N (or unset: they take the recorded
    /// count).
    Repartition(RepartitionArgs),
    /// Print the assembled Lua library, for
    /// `meetingd library | redis-cli -x FUNCTION LOAD REPLACE`. It knows
    /// the number of partitions (every meeting key is checked against it):
    /// --partitions, or redis.partitions of the configuration (64 when
    /// neither is given: use --partitions for data of another count).
    Library(LibraryArgs),
    /// Archive what the store holds: with --backfill, every ended instance
    /// the archive (archive.url) does not hold whole yet is queued, then
    /// archived until the outboxes are empty. Safe beside serving daemons;
    /// resumable: run it again after an interruption.
    Archive(ArchiveArgs),
}

#[derive(Args)]
struct ArchiveArgs {
    /// Queue and archive every ended instance not archived yet.
    #[arg(long)]
    backfill: bool,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Args)]
struct RepartitionArgs {
    /// The number of partitions to move to.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    partitions: u64,
    /// Move at most this many meetings, then stop (the next run goes on).
    #[arg(long)]
    max_meetings: Option<u64>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Args)]
struct LibraryArgs {
    /// The number of partitions the data is laid out with.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    partitions: Option<u64>,
    /// A TOML configuration file whose redis.partitions to use.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct Settings {
    /// A TOML configuration file (config/meetingd.toml lists every key).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The control socket (overrides socket.path).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Redis: redis://host:port/db or redis+unix:///path/to/redis.sock
    /// (overrides redis.url; without any, meetingd runs its own Redis).
    #[arg(long, conflicts_with = "redis_cluster")]
    redis: Option<String>,
    /// A Redis Cluster: some of its nodes, comma-separated
    /// (redis://127.0.0.1:7000,redis://127.0.0.1:7001); overrides redis.cluster.
    #[arg(long, value_delimiter = ',')]
    redis_cluster: Option<Vec<String>>,
}

impl Settings {
    fn source(self) -> Source {
        Source {
            file: self.config,
            overrides: Overrides {
                socket: self.socket,
                redis: self.redis,
                redis_cluster: self.redis_cluster,
            },
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Library(args) => {
            let partitions = match args.partitions {
                Some(partitions) => partitions,
                None => match config::load(args.config.as_deref(), &Overrides::default()) {
                    Ok((_, config)) => config
                        .partitions
                        .unwrap_or(meetingd::store::DEFAULT_PARTITIONS),
                    Err(err) => {
                        eprintln!("meetingd: {err}");
                        return ExitCode::from(2);
                    }
                },
            };
            meetingd::out!("{}", meetingd::store::Library::new(partitions).source);
            ExitCode::SUCCESS
        }
        Command::Check(settings) => check(settings.source()),
        Command::Archive(args) => archive(args),
        Command::Repartition(args) => repartition(args),
        Command::CheckConfig(settings) => {
            let source = settings.source();
            match config::RawConfig::load(source.file.as_deref(), &source.overrides)
                .and_then(|raw| raw.validate().map(|_| raw))
            {
                Ok(raw) => {
                    meetingd::out!("{}", raw.redacted_toml());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("meetingd: {err}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve(settings) => {
            let source = settings.source();
            let config = match config::load(source.file.as_deref(), &source.overrides) {
                Ok((_, config)) => config,
                Err(err) => {
                    eprintln!("meetingd: {err}");
                    return ExitCode::from(2);
                }
            };
            let log = meetingd::logging::init(&config.log_level, config.log_json);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .on_thread_park(collect_when_idle)
                .build();
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("meetingd: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(daemon::run(source, config, log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    // once: in the log where it goes (stderr or the
                    // journal), on stderr only when the log shows no errors
                    if tracing::enabled!(tracing::Level::ERROR) {
                        tracing::error!("meetingd stopped: {err}");
                    } else {
                        eprintln!("meetingd: {err}");
                    }
                    ExitCode::from(err.exit_code())
                }
            }
        }
    }
}

/// The store of `meetingd check` and `meetingd repartition`, which never
/// load a library: the configured Redis or, with none configured, the
/// embedded one (the running daemon's, or started here for the while).
struct Offline {
    runtime: tokio::runtime::Runtime,
    embedded: Option<meetingd::embedded_redis::EmbeddedRedis>,
}

impl Offline {
    /// Run `work` on the store of `source`'s configuration, laid out with
    /// `partitions` (the configured count when `None`). Exit 2 when it
    /// cannot start (a bad configuration, no Redis).
    fn run<T>(
        source: &Source,
        partitions: Option<u64>,
        work: impl AsyncFnOnce(meetingd::store::Store) -> Result<T, meetingd::store::StoreError>,
    ) -> Result<Result<T, meetingd::store::StoreError>, ExitCode> {
        let fail = |what: String| {
            eprintln!("meetingd: {what}");
            ExitCode::from(2)
        };
        let (_, config) = config::load(source.file.as_deref(), &source.overrides)
            .map_err(|err| fail(err.to_string()))?;
        let runtime = tokio::runtime::Runtime::new()
            .map_err(|err| fail(format!("cannot start the runtime: {err}")))?;
        let mut offline = Offline {
            runtime,
            embedded: None,
        };
        let embedded_socket = config.embedded.data_dir.join("redis.sock");
        let url =
            match &config.redis_url {
                Some(url) => url.clone(),
                None if !config.redis_cluster.is_empty() => String::new(),
                // the embedded Redis: the running daemon's, else started here
                // on the data a daemon left (never on a directory of none)
                None => {
                    if config.embedded.data_dir.join("appendonlydir").is_dir() {
                        match offline.runtime.block_on(
                            meetingd::embedded_redis::EmbeddedRedis::start(&config.embedded),
                        ) {
                            Ok(embedded) => offline.embedded = Some(embedded),
                            Err(meetingd::embedded_redis::EmbeddedError::InUse(_)) => {}
                            Err(err) => return Err(fail(err.to_string())),
                        }
                    }
                    format!("redis+unix://{}", embedded_socket.display())
                }
            };
        // what was tried, and what to do when nothing answers there
        let unreachable = if !config.redis_cluster.is_empty() {
            format!(
                "cannot reach the Redis Cluster at {} (are its nodes up? --redis-cluster or \
                 redis.cluster lists them)",
                config
                    .redis_cluster
                    .iter()
                    .map(|u| config::redact_url(u))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        } else if config.redis_url.is_some() {
            format!(
                "cannot reach Redis at {} (is it running? --redis or redis.url sets the address)",
                config::redact_url(&url)
            )
        } else {
            format!(
                "cannot reach the embedded Redis at {}. With no Redis configured, this reads \
                 the data `meetingd serve` keeps in embedded.data_dir ({}), and there is none \
                 there: give the configuration the daemon runs with, or name the Redis it uses \
                 (--config FILE, --redis URL or --redis-cluster URL,...)",
                embedded_socket.display(),
                config.embedded.data_dir.display()
            )
        };
        let mut options = meetingd::store::StoreOptions::new(url);
        options.cluster = config.redis_cluster.clone();
        options.partitions = partitions.or(config.partitions);
        options.timeout = std::time::Duration::from_secs(10);
        options.load_library = false;
        let result = offline.runtime.block_on(async {
            match meetingd::store::Store::connect(options).await {
                Ok(store) => Ok(work(store).await),
                Err(meetingd::store::StoreError::Unavailable(why)) => Err(why),
                Err(err) => Ok(Err(err)),
            }
        });
        if let Some(embedded) = offline.embedded.take() {
            offline.runtime.block_on(embedded.stop());
        }
        result.map_err(|why| fail(format!("{unreachable}: {why}")))
    }
}

/// `meetingd archive --backfill`: exit 0 once everything ended is
/// archived, 1 when Redis or the database failed, 2 when it cannot run
/// (no archive configured, a bad setting, a newer schema).
fn archive(args: ArchiveArgs) -> ExitCode {
    let fail = |code: u8, what: String| {
        eprintln!("meetingd: {what}");
        ExitCode::from(code)
    };
    if !args.backfill {
        return fail(2, "archive: say --backfill (the only mode so far)".into());
    }
    let source = args.settings.source();
    let config = match config::load(source.file.as_deref(), &source.overrides) {
        Ok((_, config)) => config,
        Err(err) => return fail(2, err.to_string()),
    };
    let Some(options) = config.archive.clone() else {
        return fail(
            2,
            "no archive is configured: set archive.url (MEETINGD_ARCHIVE__URL)".into(),
        );
    };
    let _log = meetingd::logging::init(&config.log_level, config.log_json);
    // the configured Redis, or the running daemon's embedded one
    let url = match &config.redis_url {
        Some(url) => url.clone(),
        None if !config.redis_cluster.is_empty() => String::new(),
        None => format!(
            "redis+unix://{}",
            config.embedded.data_dir.join("redis.sock").display()
        ),
    };
    let mut store_options = meetingd::store::StoreOptions::new(url);
    store_options.cluster = config.redis_cluster.clone();
    store_options.partitions = config.partitions;
    store_options.timeout = std::time::Duration::from_secs(10);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(1, format!("cannot start the runtime: {err}")),
    };
    let stats = std::sync::Arc::new(meetingd::stats::Stats::default());
    let done = runtime.block_on(async {
        let store = meetingd::store::Store::connect(store_options).await?;
        meetingd::archive::backfill(&store, &options, stats).await
    });
    match done {
        Ok(report) => {
            meetingd::outln!(
                "{} ended instances: {} archived before, {} queued; {} outbox entries archived",
                report.ended,
                report.archived_before,
                report.queued,
                report.entries
            );
            ExitCode::SUCCESS
        }
        Err(
            err @ meetingd::archive::ArchiveError::Db(
                meetingd::archive::DbError::Newer(_)
                | meetingd::archive::DbError::Url(_)
                | meetingd::archive::DbError::Migrate(_),
            ),
        ) => fail(2, err.to_string()),
        Err(
            err @ meetingd::archive::ArchiveError::Store(meetingd::store::StoreError::Incompatible(
                _,
            )),
        ) => fail(2, err.to_string()),
        Err(err) => fail(1, err.to_string()),
    }
}

/// `meetingd check`: check what the configured store holds.
fn check(source: Source) -> ExitCode {
    let result = match Offline::run(&source, None, async |store| store.check().await) {
        Ok(result) => result,
        Err(code) => return code,
    };
    match result {
        Ok(problems) if problems.is_empty() => {
            meetingd::outln!("clean");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for problem in &problems {
                meetingd::outln!("{problem}");
            }
            eprintln!("meetingd: {} problems", problems.len());
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("meetingd: {err}");
            ExitCode::from(2)
        }
    }
}

/// `meetingd repartition`: move the configured store to `--partitions`.
fn repartition(args: RepartitionArgs) -> ExitCode {
    let source = args.settings.source();
    let (to, limit) = (args.partitions, args.max_meetings);
    let result = Offline::run(&source, Some(to), async move |store| {
        let mut last_shown = 0;
        store
            .repartition(to, limit, |done, of| {
                // a line every 5 % (and the last)
                if done == of || done * 20 / of.max(1) > last_shown * 20 / of.max(1) {
                    eprintln!("moved {done} of {of} meetings");
                    last_shown = done;
                }
            })
            .await
    });
    match result {
        Err(code) => code,
        Ok(Ok(report)) if report.done => {
            meetingd::outln!(
                "{} meetings laid out over {} partitions (from {}): {} moved now, {} keys \
                 copied; start the daemons with redis.partitions = {} (or unset)",
                report.meetings,
                report.to,
                report.from,
                report.moved,
                report.keys,
                report.to
            );
            ExitCode::SUCCESS
        }
        Ok(Ok(report)) => {
            meetingd::outln!(
                "stopped after {} meetings ({} keys copied): run it again to go on",
                report.moved,
                report.keys
            );
            ExitCode::SUCCESS
        }
        Ok(Err(err @ meetingd::store::StoreError::Incompatible(_))) => {
            eprintln!("meetingd: {err}");
            ExitCode::from(2)
        }
        Ok(Err(err)) => {
            eprintln!("meetingd: {err}");
            ExitCode::from(1)
        }
    }
}
