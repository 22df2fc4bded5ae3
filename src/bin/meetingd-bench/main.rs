//! `meetingd-bench`: measurements of meetingd, the figures of BENCHMARKS.md.
//!
//! - `run`: drive a daemon's socket with C connections, D operations in
//!   flight each, through a mix of operations; in the same run drive Redis
//!   directly through the store (the same Lua functions, no daemon) with
//!   the same concurrency; print ops/s, latency percentiles and the ratio
//!   daemon/direct. `--spawn` starts a redis-server and a meetingd of its
//!   own; `--quick` reproduces the main table in a few minutes.
//! - `fill`: load a Redis fast (pipelined) with meetings, users, events and
//!   messages, to a given size.
//! - `memory`: Redis memory per stored message, event and participant.
//! - `tick`: one tick with many transitions due among many instances.
//! - `soak`: a realistic mix at half its maximum rate for minutes.
//! - `watch`: WATCH fan-out: delivery latency to many watchers.

mod drive;
mod spawn;
mod tick;
mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use drive::{Mix, Span, World};
use meetingd::store::{InstanceId, Load, Store, StoreOptions};
use spawn::{OwnDaemon, OwnRedis};

#[derive(Parser)]
#[command(name = "meetingd-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
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
    /// WATCH fan-out: watchers spread over instances, a poster per
    /// instance at a steady rate; delivery latency (its own Redis and
    /// daemon).
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
    /// Start a redis-server (AOF everysec) and a meetingd of our own.
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
    let result = match Cli::parse().command {
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
        } => {
            watch::watch(watch::Plan {
                watchers,
                instances: instances.max(1),
                messages,
                rate: rate.max(1.0),
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
            let redis = OwnRedis::start(true)?;
            let daemon = OwnDaemon::start(&redis.url)?;
            let (socket, url) = (daemon.socket.clone(), redis.url.clone());
            (Some(redis), Some(daemon), socket, url)
        }
    };
    let store = connect(&url).await?;
    let world = World {
        meetings: args.meetings,
        sitting: 20,
        now: store.now(),
    };
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
    let seconds = if args.quick { 2.0 } else { args.duration };
    let span = Span {
        duration: Duration::from_secs_f64(seconds),
        count: args.count,
    };
    println!(
        "| mix | conns | depth | daemon ops/s | p50 ms | p99 ms | p99.9 ms | direct ops/s | direct p99 ms | daemon/direct | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut join_leave_max: f64 = 0.0;
    let mut errors = 0;
    for mix in &args.mix {
        for &connections in &args.connections {
            let daemon =
                drive::through_daemon(socket.clone(), world, *mix, connections, args.depth, span)
                    .await;
            let direct = drive::direct(
                store_options(&url),
                world,
                *mix,
                connections,
                args.depth,
                span,
            )
            .await?;
            if *mix == Mix::JoinLeave {
                join_leave_max = join_leave_max.max(daemon.rate());
            }
            println!(
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {} |",
                mix.name(),
                connections,
                args.depth,
                daemon.rate(),
                daemon.quantile_ms(0.5),
                daemon.quantile_ms(0.99),
                daemon.quantile_ms(0.999),
                direct.rate(),
                direct.quantile_ms(0.99),
                daemon.rate() / direct.rate().max(1e-9),
                daemon.errors + direct.errors,
            );
            errors += daemon.errors + direct.errors;
            for failure in [&daemon.first_error, &direct.first_error]
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
            "| at half the join+leave maximum | conns | target pairs/s | achieved requests/s | p50 ms | p99 ms | p99.9 ms | errors |"
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
        let user = 5_000_000 + i % 1000;
        let instance = InstanceId::new(1 + (i / 1000) % meetings, 1);
        [
            Load::Join {
                user,
                email: format!("p{user}@example.com"),
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
    let world = World {
        meetings: args.meetings,
        sitting: 20,
        now: store.now(),
    };
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
        meetings: 1,
        sitting: 1,
        now: store.now(),
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
    store.load(joins).await.map_err(|e| e.to_string())?;
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
    let world = World {
        meetings: 64,
        sitting: 20,
        now: store.now(),
    };
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
    let rate = max.rate() / 2.0;
    let rss_start = rss_kib(daemon.pid()).unwrap_or(0);
    println!(
        "realistic mix, {connections} connections: maximum {:.0} ops/s; soaking at {rate:.0} ops/s for {minutes} min",
        max.rate()
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
