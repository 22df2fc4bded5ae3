//! `archive`: what archiving costs and how fast it goes, in one run on a
//! redis-server and a meetingd of the bench's own, archiving to the
//! database given (a SQLite file in a temporary directory by default).
//!
//! First the rows per second: one instance with `events` events (half
//! joins, half timeouts) and `messages` messages is written, then ended;
//! the clock runs from the end to the moment STATS counts its entry
//! archived, and the rows the daemon wrote are divided by that time. The
//! CPU Redis and the daemon spent meanwhile (`/proc/<pid>/stat`, as the
//! other modes measure it) is divided by the rows too; the ending itself
//! (the tick that times every participant out) is measured apart.
//!
//! Then, unless `--phase 0`: JOIN+LEAVE through the daemon, C connections
//! D deep, in phases alternated in the same run: `off`, the archiver idle
//! (nothing to archive, waiting for a wake-up), and
//! `on`, the archiver at work all the phase long on more instances of the
//! same size, ended one after the other so that one always waits (their
//! ending ticks are in the phase too). The archiving daemon serves the
//! load, as in production; the throughput of the two kinds of phases is
//! compared (their medians, and the median of the pairs: each `on` phase
//! against the `off` one before it). "rows archived" counts the rows the
//! daemon wrote in the phase (STATS counts them as each page commits).
//! `--busy-percent` sets that daemon's `archive.busy_percent` (left out:
//! its default).
//!
//! The instances' meetings are in partition 63 (63 + 64k), with windows a
//! day ahead, so neither the load's meetings (1..=C, partitions 1..=C) nor
//! the daemon's own ticks touch them; they all start together and end a
//! minute apart, so a tick ends them one at a time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::Value;

use crate::drive::{self, Mix, Span, World};
use crate::spawn::{OwnDaemon, OwnRedis};
use crate::watch::daemon_stats;
use crate::{busy_ticks, connect, connect_raw, cpu_ticks, redis_pid, tick_micros};

/// What to measure.
pub struct Plan {
    /// The archive: any `archive.url`; `None`: a SQLite file of our own.
    pub url: Option<String>,
    /// Events in an instance (joins and timeouts, half each).
    pub events: u64,
    /// Messages in an instance.
    pub messages: u64,
    /// Seconds per phase of the JOIN+LEAVE comparison (0: none).
    pub phase: f64,
    /// Phases of each kind.
    pub rounds: u32,
    /// Connections of the JOIN+LEAVE load.
    pub connections: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    /// The database server's main process (PostgreSQL's postmaster,
    /// mariadbd), whose CPU and its children's is counted per row too.
    pub db_pid: Option<u32>,
    /// `archive.busy_percent` of the daemon of the comparison (`None`: its
    /// default).
    pub busy_percent: Option<u32>,
}

/// The most instances prepared for the `on` phases.
const MOST: u64 = 60;

/// FCALL with one key.
fn fcall(pipe: &mut redis::Pipeline, function: &str, key: &str, args: &[&str]) {
    pipe.cmd("FCALL").arg(function).arg(1).arg(key).arg(args);
}

/// The archive's entries and rows as STATS counts them.
async fn archived(socket: &Path) -> Result<(u64, u64), String> {
    let stats = daemon_stats(socket).await?;
    let archive = &stats["archive"];
    Ok((
        archive["entries"].as_u64().unwrap_or(0),
        archive["rows"].as_u64().unwrap_or(0),
    ))
}

/// Wait until STATS counts `entries` archived; the rows by then.
async fn until_archived(socket: &Path, entries: u64) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (done, rows) = archived(socket).await?;
        if done >= entries {
            return Ok(rows);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{done} of {entries} entries archived after 10 minutes"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The instances to archive: meeting 63 + 64k, order 1, all from `from`,
/// instance k ending at `from` + 1 h + k min.
struct Instances {
    from: i64,
    users: u64,
    messages: u64,
}

impl Instances {
    const DUE: &'static str = "meetingd:{p63}:due";

    fn key(k: u64) -> String {
        format!("meetingd:{{p63}}:meeting:{}", 63 + 64 * k)
    }

    fn to(&self, k: u64) -> i64 {
        self.from + 3_600_000 + k as i64 * 60_000
    }

    /// Meetings and instances 0..count, started.
    async fn create(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        count: u64,
    ) -> Result<(), String> {
        let mut pipe = redis::pipe();
        let f = self.from.to_string();
        let before = (self.from - 60_000).to_string();
        for k in 0..count {
            let key = Instances::key(k);
            fcall(&mut pipe, "meet_meeting_set", &key, &["Bench", "", "true"]);
            let t = self.to(k).to_string();
            fcall(
                &mut pipe,
                "meet_instance_set",
                &key,
                &["1", &f, &t, &before],
            );
        }
        fcall(&mut pipe, "meet_tick", Instances::DUE, &[&f]);
        let _: Vec<Value> = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Instance k's joins and messages, in pipelines of 5,000 calls.
    async fn fill(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        k: u64,
    ) -> Result<(), String> {
        let key = Instances::key(k);
        let span = (3_600_000 - 1000) / (self.users + self.messages) as i64;
        let mut at = self.from;
        let mut calls = Vec::new();
        for u in 1..=self.users {
            at += span.max(0);
            calls.push((
                "meet_join",
                vec![
                    String::new(),
                    u.to_string(),
                    format!("u{u}@example.com"),
                    at.to_string(),
                ],
            ));
        }
        for i in 0..self.messages {
            at += span.max(0);
            let user = 1 + i % self.users;
            calls.push((
                "meet_post",
                vec![
                    String::new(),
                    user.to_string(),
                    format!("message {i}"),
                    at.to_string(),
                ],
            ));
        }
        for chunk in calls.chunks(5000) {
            let mut pipe = redis::pipe();
            for (function, args) in chunk {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                fcall(&mut pipe, function, &key, &args);
            }
            let _: Vec<Value> = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// End instance k: ticks until every participant timed out.
    async fn end(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        k: u64,
    ) -> Result<(), String> {
        let end = (self.to(k) + 5_000).to_string();
        loop {
            let reply: Value = redis::cmd("FCALL")
                .arg("meet_tick")
                .arg(1)
                .arg(Instances::DUE)
                .arg(&end)
                .query_async(conn)
                .await
                .map_err(|e| e.to_string())?;
            if !more(&reply) {
                return Ok(());
            }
        }
    }
}

/// CPU ticks of Redis and of the daemon.
fn ticks(redis: u32, daemon: u32) -> (u64, u64) {
    (cpu_ticks(redis), cpu_ticks(daemon))
}

/// CPU ticks of process `pid` and of its children now running (the
/// database server: PostgreSQL's backends are the postmaster's children).
fn tree_ticks(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else {
        return 0;
    };
    let mut total = cpu_ticks(pid);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // the parent: the second field after the command name
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            total += cpu_ticks(child);
        }
    }
    total
}

/// µs of CPU per unit between two readings.
fn per(before: u64, after: u64, units: u64) -> f64 {
    after.saturating_sub(before) as f64 * tick_micros() / units.max(1) as f64
}

/// The bench.
pub async fn archive(plan: Plan) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let url = plan
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("archive.sqlite").display()));
    let backend = url.split(':').next().unwrap_or_default().to_string();
    let redis = OwnRedis::start(true)?;
    // the end's outbox entry wakes the archiver at once
    let fast = OwnDaemon::start_with(
        &redis.url,
        &[
            ("MEETINGD_ARCHIVE__URL", url.as_str()),
            ("MEETINGD_REDIS__DURABILITY", "everysec"),
        ],
    )?;
    let mut conn = connect_raw(&redis.url).await?;
    let redis_pid = redis_pid(&mut conn).await?;
    // an hour-long window a day ahead (and a minute): the load's instances
    // end a day from now
    let now = chrono::Utc::now().timestamp_millis();
    let instances = Instances {
        from: (now / 60_000 + 24 * 60 + 1) * 60_000,
        users: (plan.events / 2).max(1),
        messages: plan.messages,
    };
    let spare = if plan.phase > 0.0 { MOST } else { 0 };
    instances.create(&mut conn, 1 + spare).await?;
    instances.fill(&mut conn, 0).await?;
    // the meetings' and instances' entries first, off the clock
    let before = until_archived(&fast.socket, 2 * (1 + spare)).await?;
    let entries = 2 * (1 + spare) + 1;
    let redis_0 = cpu_ticks(redis_pid);
    let started = Instant::now();
    instances.end(&mut conn, 0).await?;
    let ended = started.elapsed().as_secs_f64();
    let (redis_1, daemon_1) = ticks(redis_pid, fast.pid());
    let (db_1, busy_1, at_1) = (tree_ticks(plan.db_pid), busy_ticks(), Instant::now());
    let rows = until_archived(&fast.socket, entries).await? - before;
    let took = started.elapsed().as_secs_f64();
    let (redis_2, daemon_2) = ticks(redis_pid, fast.pid());
    let (db_2, busy_2) = (tree_ticks(plan.db_pid), busy_ticks());
    let cores = per(busy_1, busy_2, 1) / 1e6 / at_1.elapsed().as_secs_f64().max(1e-9);
    println!(
        "archive  events  messages  rows    seconds  rows/s  end (tick) ms  Redis CPU µs/row  daemon CPU µs/row  database CPU µs/row  cores busy  Redis CPU of the end ms"
    );
    println!(
        "{backend:<8} {:<7} {:<9} {rows:<7} {took:<8.3} {:<7.0} {:<14.1} {:<17.1} {:<18.1} {:<20} {cores:<11.2} {:.1}",
        instances.users * 2,
        plan.messages,
        rows as f64 / took,
        ended * 1000.0,
        per(redis_1, redis_2, rows),
        per(daemon_1, daemon_2, rows),
        if plan.db_pid.is_some() {
            format!("{:.1}", per(db_1, db_2, rows))
        } else {
            "(in the daemon)".to_string()
        },
        per(redis_0, redis_1, 1) / 1000.0,
    );
    drop(fast);
    if plan.phase <= 0.0 {
        return Ok(());
    }
    compare(&plan, &redis.url, &url, &instances, took, redis_pid).await
}

/// Wait until the daemon at `socket` has nothing waiting and archived
/// nothing more for a few seconds (its backlog is looked at every 2 s).
async fn settle(socket: &Path) -> Result<(), String> {
    let mut last = (u64::MAX, Instant::now());
    loop {
        let stats = daemon_stats(socket).await?;
        let entries = stats["archive"]["entries"].as_u64().unwrap_or(0);
        let waiting = stats["archive"]["waiting"].as_u64().unwrap_or(1);
        if entries != last.0 {
            last = (entries, Instant::now());
        } else if waiting == 0 && last.1.elapsed() > Duration::from_secs(3) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The JOIN+LEAVE comparison, archiver idle against archiver at work.
async fn compare(
    plan: &Plan,
    redis_url: &str,
    url: &str,
    instances: &Instances,
    per_instance: f64,
    redis_pid: u32,
) -> Result<(), String> {
    // per `on` phase: as many instances as it takes, and two to spare
    let per_phase = ((plan.phase / per_instance.max(0.05)).ceil() as u64 + 2).max(3);
    let needed = (per_phase * u64::from(plan.rounds)).min(MOST);
    let mut conn = connect_raw(redis_url).await?;
    eprintln!(
        "writing {needed} more instances of {} events and {} messages...",
        instances.users * 2,
        instances.messages
    );
    for k in 1..=needed {
        instances.fill(&mut conn, k).await?;
    }
    // archive.poll_ms (and busy_percent, unless given) at its default
    // from here on
    let busy = plan.busy_percent.map(|b| b.to_string());
    let mut env = vec![
        ("MEETINGD_ARCHIVE__URL", url),
        ("MEETINGD_REDIS__DURABILITY", "everysec"),
    ];
    if let Some(busy) = &busy {
        env.push(("MEETINGD_ARCHIVE__BUSY_PERCENT", busy.as_str()));
    }
    let daemon = OwnDaemon::start_with(redis_url, &env)?;
    let socket: PathBuf = daemon.socket.clone();
    let store = connect(redis_url).await?;
    let world = World::new(plan.connections as u64, 20, store.now());
    world.create(&store, plan.connections, plan.depth).await?;
    // the load's users and meetings are archived too: not in a phase
    settle(&socket).await?;
    let span = Span {
        duration: Duration::from_secs_f64(plan.phase),
        count: None,
    };
    // a short warm-up, off the record
    drive::through_daemon(
        socket.clone(),
        world,
        Mix::JoinLeave,
        plan.connections,
        plan.depth,
        Span {
            duration: Duration::from_secs(1),
            count: None,
        },
    )
    .await;
    println!(
        "| phase | archiver | JOIN+LEAVE requests/s | p50 ms | p99 ms | rows archived | instances archived | Redis CPU µs/op (archiving's too) | daemon CPU µs/op (archiving's too) | database CPU µs/op | cores busy | errors |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let daemon_pid = daemon.pid();
    let mut next = 1u64;
    let (mut off_rates, mut on_rates) = (Vec::new(), Vec::new());
    let mut phase = 0;
    for _ in 0..plan.rounds {
        for on in [false, true] {
            phase += 1;
            if on && next + 1 > needed {
                return Err("ran out of instances: give --phase less, or fewer --rounds".into());
            }
            let (entries_0, rows_0) = archived(&socket).await?;
            let (redis_0, daemon_0) = ticks(redis_pid, daemon_pid);
            let (db_0, busy_0, at_0) = (tree_ticks(plan.db_pid), busy_ticks(), Instant::now());
            let load = tokio::spawn(drive::through_daemon(
                socket.clone(),
                world,
                Mix::JoinLeave,
                plan.connections,
                plan.depth,
                span,
            ));
            let mut ended = 0;
            if on {
                // two ended at once, then one more each time one is
                // archived: the archiver always has one waiting
                let deadline = Instant::now() + span.duration;
                for _ in 0..2 {
                    instances.end(&mut conn, next).await?;
                    next += 1;
                    ended += 1;
                }
                while Instant::now() < deadline && next <= needed {
                    let (entries, _) = archived(&socket).await?;
                    if entries >= entries_0 + ended - 1 {
                        instances.end(&mut conn, next).await?;
                        next += 1;
                        ended += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let through = load.await.map_err(|e| e.to_string())?;
            let (redis_1, daemon_1) = ticks(redis_pid, daemon_pid);
            let (db_1, busy_1) = (tree_ticks(plan.db_pid), busy_ticks());
            let cores = per(busy_0, busy_1, 1) / 1e6 / at_0.elapsed().as_secs_f64().max(1e-9);
            let (entries_1, rows_1) = archived(&socket).await?;
            println!(
                "| {phase} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.1} | {:.1} | {:.1} | {cores:.2} | {} |",
                if on { "on" } else { "off" },
                through.rate(),
                through.quantile_ms(0.5),
                through.quantile_ms(0.99),
                rows_1 - rows_0,
                entries_1 - entries_0,
                per(redis_0, redis_1, through.requests()),
                per(daemon_0, daemon_1, through.requests()),
                per(db_0, db_1, through.requests()),
                through.errors,
            );
            if let Some(error) = &through.first_error {
                eprintln!("first error: {error}");
            }
            if on {
                on_rates.push(through.rate());
                // what is still waiting is archived before the next phase
                until_archived(&socket, entries_0 + ended).await?;
            } else {
                off_rates.push(through.rate());
            }
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    };
    // each `on` phase against the `off` phase just before it: the other
    // work on the machine changes less between two neighbours
    let mut pairs: Vec<f64> = off_rates
        .iter()
        .zip(&on_rates)
        .map(|(off, on)| (on / off.max(1e-9) - 1.0) * 100.0)
        .collect();
    let pair = median(&mut pairs);
    let (off, on) = (median(&mut off_rates), median(&mut on_rates));
    println!(
        "JOIN+LEAVE requests/s, medians: archiver idle {off:.0}, at work {on:.0}: {:+.1} %; median of the {} pairs (on against the off before it): {pair:+.1} %",
        (on / off.max(1e-9) - 1.0) * 100.0,
        pairs.len()
    );
    Ok(())
}

/// `more` of a meet_tick reply.
fn more(reply: &Value) -> bool {
    let Value::Array(items) = reply else {
        return false;
    };
    items
        .iter()
        .position(|v| matches!(v, Value::BulkString(b) if b == b"more"))
        .and_then(|i| items.get(i + 1))
        .is_some_and(|v| matches!(v, Value::Int(n) if *n > 0))
}
