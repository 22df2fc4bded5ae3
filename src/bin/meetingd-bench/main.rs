//! `meetingd-bench`: measurements of meetingd, the figures of BENCHMARKS.md.
//!
//! - `run`: drive a daemon's socket with C connections, D operations in
//!   flight each, through a mix of operations; in the same run drive Redis
//!   directly through the store (the same library calls, no daemon), and
//!   the floor (`floor.rs`: a minimal Lua doing the same Redis work
//!   without validation), with the same concurrency; print ops/s, latency
//!   percentiles, the ratios, the CPU per operation of the daemon and of
//!   Redis (from /proc) and the Redis calls per operation (from INFO
//!   commandstats). `--spawn` starts a redis-server and a meetingd of its
//!   own; `--quick` reproduces the main table in a few minutes.
//! - `fill`: load a Redis fast (pipelined) with meetings, users, events and
//!   messages, to a given size.
//! - `memory`: Redis memory per stored message, event and participant.
//! - `tick`: one tick with many transitions due among many instances.
//! - `soak`: a realistic mix at half its maximum rate for minutes.
//! - `watch`: WATCH fan-out: delivery latency to many watchers; with
//!   `--idle`, the daemon's memory with many idle watchers and after they
//!   went.
//! - `partitions`: how partition counts spread over cluster masters, and
//!   what ACTIVE, ATTENDANCE and an idle tick cost at each.
//! - `archive`: rows per second into the archive (SQLite, or any
//!   `archive.url`) for one ended instance of many events and messages,
//!   the CPU Redis and the daemon spend per row, and JOIN+LEAVE with the
//!   archiver idle and at work, alternated.

mod archive;
mod drive;
mod floor;
mod partitions;
mod spawn;
mod tick;
mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use drive::{Mix, Span, World};
use meetingd::durability::Durability;
use meetingd::store::{InstanceId, Load, Store, StoreOptions};
use spawn::{OwnDaemon, OwnRedis};

/// mimalloc: the daemon allocates and frees small buffers for every
/// request, and glibc's malloc showed as a fifth of its CPU in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "meetingd-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
    /// The meetingd binary to start where the bench starts its own
    /// (default: the one beside the bench): two builds compared with one
    /// bench.
    #[arg(long, global = true)]
    daemon: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Bench {
    /// Throughput and latency through the daemon and directly.
    Run(RunArgs),
    /// Fill a Redis with meetings, events and messages.
    Fill(FillArgs),
    /// Redis memory per message, event and participant.
    Memory {
        /// How many of each to store.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
    },
    /// A realistic mix at half the maximum rate for a while: errors, p99
    /// and the daemon's memory, minute by minute (its own Redis and daemon).
    Soak {
        /// How long, in minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Client connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// WATCH fan-out: watchers spread over instances, posters at a steady
    /// rate per instance; delivery latency (its own Redis and daemon).
    /// With --idle: memory and Redis connections with idle watchers.
    Watch {
        /// Watching connections.
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Instances they watch (spread evenly).
        #[arg(long, default_value_t = 1)]
        instances: u64,
        /// Messages posted into each instance.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Messages per second into each instance.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Connections the posters share (0: one per instance).
        #[arg(long, default_value_t = 0)]
        posters: usize,
        /// No posting: open the watchers, hold them idle, close them;
        /// the daemon's memory and Redis connections at each step.
        #[arg(long)]
        idle: bool,
        /// With --idle: open and close the watchers this many times.
        #[arg(long, default_value_t = 2)]
        cycles: usize,
    },
    /// The partition count: spread over masters, cost of the calls that
    /// visit every partition (its own Redis).
    Partitions {
        /// Partition counts to compare.
        #[arg(long, value_delimiter = ',', default_values_t = [16u64, 64, 256])]
        counts: Vec<u64>,
        /// Cluster sizes (masters) to spread over.
        #[arg(long, value_delimiter = ',', default_values_t = [3u32, 6, 10])]
        masters: Vec<u32>,
        /// Meetings stored, one instance each.
        #[arg(long, default_value_t = 100_000)]
        stored: u64,
        /// Of which running.
        #[arg(long, default_value_t = 64)]
        running: u64,
    },
    /// Print the floor's Lua library (`floor.rs`), for
    /// `scripts/callgrind-join-leave.sh`.
    FloorLibrary,
    /// Rows per second into the archive for one ended instance, the CPU
    /// per row, and JOIN+LEAVE with the archiver idle and at work (its own
    /// Redis and daemon).
    Archive {
        /// The archive (`postgres://...`, `mysql://...`, `sqlite://...`);
        /// default: a SQLite file of its own.
        #[arg(long)]
        url: Option<String>,
        /// Events in the instance (half joins, half timeouts).
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Messages in the instance.
        #[arg(long, default_value_t = 10_000)]
        messages: u64,
        /// Then JOIN+LEAVE with the archiver idle and at work, alternated:
        /// seconds per phase (0: no comparison).
        #[arg(long, default_value_t = 5.0)]
        phase: f64,
        /// Phases of each kind.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Connections of the JOIN+LEAVE load (at most 60).
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 16)]
        depth: usize,
        /// The database server's main process (its CPU and its children's
        /// is counted per row too; SQLite's is the daemon's).
        #[arg(long)]
        db_pid: Option<u32>,
        /// `archive.busy_percent` of the daemon of the comparison (left
        /// out: the daemon's default).
        #[arg(long)]
        busy_percent: Option<u32>,
    },
    /// Time one tick with `due` transitions among `stored` instances.
    Tick {
        /// Redis to use (flushed!); default: a redis-server of our own.
        #[arg(long)]
        redis: Option<String>,
        /// Instances stored (one per meeting).
        #[arg(long, default_value_t = 100_000)]
        stored: u64,
        /// How many of them are due at the tick.
        #[arg(long, default_value_t = 10_000)]
        due: u64,
        /// Instances per tick step (the daemon's default: 100).
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Start a redis-server (AOF, fsync as --durability says) and a
    /// meetingd of our own.
    #[arg(long)]
    spawn: bool,
    /// A running daemon's socket (with --redis: the Redis it uses).
    #[arg(long, requires = "redis")]
    socket: Option<PathBuf>,
    /// The daemon's Redis, for the direct half and the set-up.
    #[arg(long)]
    redis: Option<String>,
    /// The mixes to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mix::JoinLeave, Mix::Post, Mix::Messages, Mix::Participants, Mix::Active, Mix::Attendance, Mix::Realistic])]
    mix: Vec<Mix>,
    /// Connection counts to run at.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    connections: Vec<usize>,
    /// Operations in flight per connection (pipeline depth).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Or: this many operations per connection.
    #[arg(long)]
    count: Option<u64>,
    /// Meetings (each with one active instance).
    #[arg(long, default_value_t = 64)]
    meetings: u64,
    /// Events and messages stored before measuring (each).
    #[arg(long, default_value_t = 10_000)]
    stored: u64,
    /// Also measure latency at half the join+leave maximum rate.
    #[arg(long)]
    half_rate: bool,
    /// The main table, quickly: 2 s per measurement.
    #[arg(long)]
    quick: bool,
    /// With --spawn: what an ack promises (redis.durability), and so the
    /// appendfsync of the spawned redis-server: fsync (always), everysec,
    /// memory (no).
    #[arg(long, default_value = "everysec", value_parser = ["fsync", "everysec", "memory"])]
    durability: String,
}

#[derive(Args)]
struct FillArgs {
    /// The Redis to fill (not flushed).
    #[arg(long)]
    redis: String,
    /// Meetings, each with one active instance.
    #[arg(long, default_value_t = 64)]
    meetings: u64,
    /// Events to store (join and leave pairs).
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Chat messages to store (60 bytes each).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(daemon) = cli.daemon {
        spawn::use_daemon(daemon);
    }
    let result = match cli.command {
        Bench::Run(args) => run(args).await,
        Bench::Fill(args) => fill_command(args).await,
        Bench::Memory { count } => memory(count).await,
        Bench::Soak {
            minutes,
            connections,
        } => soak(minutes, connections).await,
        Bench::Watch {
            watchers,
            instances,
            messages,
            rate,
            posters,
            idle,
            cycles,
        } => {
            let plan = watch::Plan {
                watchers,
                instances: instances.max(1),
                messages,
                rate: rate.max(0.001),
                posters,
            };
            if idle {
                watch::idle(plan, cycles.max(1)).await
            } else {
                watch::watch(plan).await
            }
        }
        Bench::FloorLibrary => {
            print!("{}", floor::LIBRARY);
            Ok(())
        }
        Bench::Partitions {
            counts,
            masters,
            stored,
            running,
        } => partitions::partitions(&counts, &masters, stored, running.min(stored)).await,
        Bench::Archive {
            url,
            events,
            messages,
            phase,
            rounds,
            connections,
            depth,
            db_pid,
            busy_percent,
        } => {
            archive::archive(archive::Plan {
                url,
                events,
                messages,
                phase,
                rounds,
                connections: connections.clamp(1, 60),
                depth: depth.max(1),
                db_pid,
                busy_percent,
            })
            .await
        }
        Bench::Tick {
            redis,
            stored,
            due,
            batch,
        } => {
            let own = if redis.is_none() {
                Some(OwnRedis::start(false))
            } else {
                None
            }
            .transpose();
            match own {
                Ok(own) => {
                    let url = redis
                        .or_else(|| own.as_ref().map(|r| r.url.clone()))
                        .unwrap_or_default();
                    tick::tick(&url, stored, due, batch).await
                }
                Err(err) => Err(err),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("meetingd-bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn store_options(url: &str) -> StoreOptions {
    let mut options = StoreOptions::new(url);
    options.timeout = Duration::from_secs(30);
    options
}

/// A plain connection to `url`, for the floor and INFO.
pub async fn connect_raw(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(url)
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

/// What the processes had used at a moment: CPU (clock ticks, from
/// `/proc/<pid>/stat`; the machine's from `/proc/stat`) and Redis' calls.
#[derive(Debug, Clone, Copy)]
struct Usage {
    daemon_ticks: u64,
    redis_ticks: u64,
    /// This bench, the client of both the daemon and Redis.
    client_ticks: u64,
    /// Every core's time not idle.
    busy_ticks: u64,
    at: Instant,
    /// Calls from clients: FCALL and FCALL_RO, and the daemon's reads of
    /// users (each a CLIENT CACHING YES and an HMGET: counted once).
    calls: u64,
}

/// The machine's CPU time not idle so far, all cores, clock ticks (the
/// first line of `/proc/stat`: all but idle and iowait).
fn busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(cpu) = stat.lines().next() else {
        return 0;
    };
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    fields.iter().take(8).sum::<u64>().saturating_sub(idle)
}

/// A process' CPU time so far (user + system, all threads), clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // the fields after the command name (which may hold spaces)
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime: fields 14 and 15 of the line, 12 and 13 here
    field(11) + field(12)
}

/// Microseconds per clock tick.
fn tick_micros() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1e6 / (if ticks > 0 { ticks as f64 } else { 100.0 })
}

/// The daemon's and Redis' usage now.
async fn usage(
    conn: &mut redis::aio::MultiplexedConnection,
    redis_pid: u32,
    daemon_pid: Option<u32>,
) -> Result<Usage, String> {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    let calls_of = |name: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Usage {
        daemon_ticks: daemon_pid.map_or(0, cpu_ticks),
        redis_ticks: cpu_ticks(redis_pid),
        client_ticks: cpu_ticks(std::process::id()),
        busy_ticks: busy_ticks(),
        at: Instant::now(),
        calls: calls_of("fcall") + calls_of("fcall_ro") + calls_of("client|caching"),
    })
}

/// What a measurement cost, per operation.
#[derive(Debug, Clone, Copy)]
struct PerOp {
    /// CPU µs of the daemon, of Redis, of this bench.
    daemon: f64,
    redis: f64,
    client: f64,
    /// Redis calls.
    calls: f64,
    /// Cores busy on average over the measurement, the whole machine's.
    busy_cores: f64,
}

/// Per operation between two usages.
fn per_op(before: Usage, after: Usage, ops: u64) -> PerOp {
    let ops = ops.max(1) as f64;
    let micros = tick_micros();
    let per = |from: u64, to: u64| to.saturating_sub(from) as f64 * micros / ops;
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    PerOp {
        daemon: per(before.daemon_ticks, after.daemon_ticks),
        redis: per(before.redis_ticks, after.redis_ticks),
        client: per(before.client_ticks, after.client_ticks),
        calls: after.calls.saturating_sub(before.calls) as f64 / ops,
        busy_cores: after.busy_ticks.saturating_sub(before.busy_ticks) as f64 * micros
            / 1e6
            / seconds,
    }
}

/// The pid of the Redis at `conn` (INFO server).
async fn redis_pid(conn: &mut redis::aio::MultiplexedConnection) -> Result<u32, String> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no process_id in INFO server".to_string())
}

/// The pid of the daemon serving `socket` (its peer credentials).
fn daemon_pid(socket: &std::path::Path) -> Option<u32> {
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: fd is an open socket; cred and len are valid for writing.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// A store on `url` with the bench's options.
async fn connect(url: &str) -> Result<Store, String> {
    Store::connect(store_options(url))
        .await
        .map_err(|e| e.to_string())
}

async fn run(args: RunArgs) -> Result<(), String> {
    let (own_redis, own_daemon, socket, url) = match (&args.socket, &args.redis, args.spawn) {
        (Some(socket), Some(url), false) => (None, None, socket.clone(), url.clone()),
        _ => {
            let durability = Durability::parse(&args.durability)
                .ok_or_else(|| format!("no durability {:?}", args.durability))?;
            let redis = OwnRedis::start_with(true, durability.appendfsync())?;
            let daemon = OwnDaemon::start_with(
                &redis.url,
                &[("MEETINGD_REDIS__DURABILITY", durability.name())],
            )?;
            eprintln!(
                "redis-server with appendfsync {}, meetingd with redis.durability {durability}",
                durability.appendfsync()
            );
            let (socket, url) = (daemon.socket.clone(), redis.url.clone());
            (Some(redis), Some(daemon), socket, url)
        }
    };
    let store = connect(&url).await?;
    let world = World::new(args.meetings, 20, store.now());
    let most = args.connections.iter().copied().max().unwrap_or(1);
    eprintln!(
        "setting up {} meetings, {} users...",
        world.meetings,
        most * args.depth + (world.meetings * 20) as usize
    );
    world.create(&store, most, args.depth.max(1)).await?;
    if args.stored > 0 {
        eprintln!(
            "storing {} events and {} messages...",
            args.stored, args.stored
        );
        let took = fill(&store, &world, args.stored, args.stored).await?;
        eprintln!("stored in {:.1} s", took.as_secs_f64());
    }
    let mut info = connect_raw(&url).await?;
    floor::load(&mut info).await?;
    let redis = redis_pid(&mut info).await?;
    let daemon = daemon_pid(&socket);
    let seconds = if args.quick { 2.0 } else { args.duration };
    let span = Span {
        duration: Duration::from_secs_f64(seconds),
        count: args.count,
    };
    println!(
        "| mix | conns | depth | daemon ops/s | direct ops/s | floor ops/s | daemon/direct | daemon/floor | daemon p50 ms | daemon p99 ms | daemon CPU µs/op | Redis CPU µs/op via daemon | direct | floor | client CPU µs/op via daemon | direct | cores busy via daemon | direct | Redis calls/op via daemon | direct | floor | errors |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut join_leave_max: f64 = 0.0;
    let mut errors = 0;
    for mix in &args.mix {
        for &connections in &args.connections {
            let before = usage(&mut info, redis, daemon).await?;
            let through =
                drive::through_daemon(socket.clone(), world, *mix, connections, args.depth, span)
                    .await;
            let after = usage(&mut info, redis, daemon).await?;
            let via_daemon = per_op(before, after, through.requests());
            let direct = drive::direct(
                store_options(&url),
                world,
                *mix,
                connections,
                args.depth,
                span,
            );
            let before = usage(&mut info, redis, daemon).await?;
            let direct = direct.await?;
            let after = usage(&mut info, redis, daemon).await?;
            let by_direct = per_op(before, after, direct.requests());
            let before = usage(&mut info, redis, daemon).await?;
            let floor = floor::drive(&url, world, *mix, connections, args.depth, span).await?;
            let after = usage(&mut info, redis, daemon).await?;
            let by_floor = per_op(before, after, floor.requests());
            if *mix == Mix::JoinLeave {
                join_leave_max = join_leave_max.max(through.operation_rate());
            }
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                mix.name(),
                connections,
                args.depth,
                through.rate(),
                direct.rate(),
                floor.rate(),
                through.rate() / direct.rate().max(1e-9),
                through.rate() / floor.rate().max(1e-9),
                through.quantile_ms(0.5),
                through.quantile_ms(0.99),
                via_daemon.daemon,
                via_daemon.redis,
                by_direct.redis,
                by_floor.redis,
                via_daemon.client,
                by_direct.client,
                via_daemon.busy_cores,
                by_direct.busy_cores,
                via_daemon.calls,
                by_direct.calls,
                by_floor.calls,
                through.errors + direct.errors + floor.errors,
            );
            errors += through.errors + direct.errors + floor.errors;
            for failure in [
                &through.first_error,
                &direct.first_error,
                &floor.first_error,
            ]
            .into_iter()
            .flatten()
            {
                eprintln!("  first error: {failure}");
            }
        }
    }
    if args.half_rate && join_leave_max > 0.0 {
        let rate = join_leave_max / 2.0;
        let connections = most;
        let measured = drive::at_rate(
            socket.clone(),
            world,
            Mix::JoinLeave,
            connections,
            rate,
            span.duration * 2,
        )
        .await;
        println!();
        println!(
            "| at half the join+leave maximum | conns | target pairs/s | achieved requests/s | request p50 ms | p99 ms | p99.9 ms | errors |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| join+leave | {connections} | {rate:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            measured.rate(),
            measured.quantile_ms(0.5),
            measured.quantile_ms(0.99),
            measured.quantile_ms(0.999),
            measured.errors
        );
    }
    if let Some(daemon) = &own_daemon {
        if let Some(rss) = rss_kib(daemon.pid()) {
            eprintln!("daemon RSS at the end: {} MiB", rss / 1024);
        }
    }
    drop(own_daemon);
    drop(own_redis);
    if errors > 0 {
        return Err(format!("{errors} operations failed"));
    }
    Ok(())
}

/// Store `events` events (join and leave pairs of passing users) and
/// `messages` 60-byte messages (by the sitting users) in the world's
/// instances, pipelined.
async fn fill(
    store: &Store,
    world: &World,
    events: u64,
    messages: u64,
) -> Result<Duration, String> {
    let started = Instant::now();
    let now = world.now;
    let meetings = world.meetings.max(1);
    let pairs = (0..events / 2).flat_map(move |i| {
        let user = drive::PASSER_BASE + i % drive::PASSERS;
        let instance = InstanceId::new(1 + (i / 1000) % meetings, 1);
        [
            Load::Join {
                user,
                email: World::email(user),
                instance,
                at: now,
            },
            Load::Leave {
                user,
                instance,
                at: now,
            },
        ]
    });
    let posts = (0..messages).map(move |i| {
        let meeting = 1 + i % meetings;
        Load::Post {
            user: 1_000_000 + meeting * 1000,
            instance: InstanceId::new(meeting, 1),
            text: drive::TEXT.to_string(),
            at: now,
        }
    });
    let loaded = store
        .load(pairs.chain(posts))
        .await
        .map_err(|e| e.to_string())?;
    if loaded.refused > 0 {
        return Err(format!(
            "{} of the fill were refused: {:?}",
            loaded.refused, loaded.first_refusal
        ));
    }
    Ok(started.elapsed())
}

async fn fill_command(args: FillArgs) -> Result<(), String> {
    let store = connect(&args.redis).await?;
    let world = World::new(args.meetings, 20, store.now());
    world.create(&store, 1, 1).await?;
    let took = fill(&store, &world, args.events, args.messages).await?;
    println!(
        "stored {} events and {} messages in {} instances in {:.1} s",
        args.events,
        args.messages,
        args.meetings,
        took.as_secs_f64()
    );
    Ok(())
}

async fn used_memory(url: &str) -> Result<i64, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no used_memory in INFO".to_string())
}

/// Memory per stored message, event and participant, from INFO memory
/// deltas on a Redis of our own.
async fn memory(count: u64) -> Result<(), String> {
    let redis = OwnRedis::start(false)?;
    let store = connect(&redis.url).await?;
    let world = World {
        public: true,
        ..World::new(1, 1, store.now())
    };
    world.create(&store, 1, 1).await?;
    let at = world.now;
    let instance = InstanceId::new(1, 1);
    // messages
    let before = used_memory(&redis.url).await?;
    fill(&store, &world, 0, count).await?;
    let per_message = (used_memory(&redis.url).await? - before) as f64 / count as f64;
    // events: join and leave pairs
    let before = used_memory(&redis.url).await?;
    fill(&store, &world, count, 0).await?;
    let per_event = (used_memory(&redis.url).await? - before) as f64 / count as f64;
    // participants: joins of distinct users (each also logs a join event)
    let before = used_memory(&redis.url).await?;
    let joins = (0..count).map(|i| Load::Join {
        user: 10_000_000 + i,
        email: format!("j{i}@example.com"),
        instance,
        at,
    });
    let loaded = store.load(joins).await.map_err(|e| e.to_string())?;
    if loaded.refused > 0 {
        return Err(format!("joins refused: {:?}", loaded.first_refusal));
    }
    let per_join = (used_memory(&redis.url).await? - before) as f64 / count as f64;
    println!("| stored | count | bytes each |");
    println!("|---|---:|---:|");
    println!("| message (60-byte text) | {count} | {per_message:.0} |");
    println!("| event (join or leave) | {count} | {per_event:.0} |");
    println!(
        "| participant (its join event aside) | {count} | {:.0} |",
        per_join - per_event
    );
    println!("| participant with its join event | {count} | {per_join:.0} |");
    Ok(())
}

/// A process' resident memory, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soak: a realistic mix at half its maximum rate, a row a minute.
async fn soak(minutes: u64, connections: usize) -> Result<(), String> {
    let redis = OwnRedis::start(true)?;
    let daemon = OwnDaemon::start(&redis.url)?;
    let store = connect(&redis.url).await?;
    let world = World::new(64, 20, store.now());
    world.create(&store, connections, 1).await?;
    fill(&store, &world, 10_000, 10_000).await?;
    let span = Span {
        duration: Duration::from_secs(5),
        count: None,
    };
    let max = drive::through_daemon(
        daemon.socket.clone(),
        world,
        Mix::Realistic,
        connections,
        1,
        span,
    )
    .await;
    let rate = max.operation_rate() / 2.0;
    let rss_start = rss_kib(daemon.pid()).unwrap_or(0);
    println!(
        "realistic mix, {connections} connections: maximum {:.0} ops/s; soaking at {rate:.0} ops/s for {minutes} min",
        max.operation_rate()
    );
    println!("| minute | requests/s | p50 ms | p99 ms | p99.9 ms | errors | daemon RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut errors = 0;
    for minute in 1..=minutes {
        let m = drive::at_rate(
            daemon.socket.clone(),
            world,
            Mix::Realistic,
            connections,
            rate,
            Duration::from_secs(60),
        )
        .await;
        errors += m.errors;
        println!(
            "| {minute} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} |",
            m.rate(),
            m.quantile_ms(0.5),
            m.quantile_ms(0.99),
            m.quantile_ms(0.999),
            m.errors,
            rss_kib(daemon.pid()).unwrap_or(0) as f64 / 1024.0
        );
    }
    let rss_end = rss_kib(daemon.pid()).unwrap_or(0);
    println!(
        "daemon RSS: {:.1} MiB at the start, {:.1} MiB at the end; {errors} errors",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    if errors > 0 {
        return Err(format!("{errors} operations failed"));
    }
    Ok(())
}
