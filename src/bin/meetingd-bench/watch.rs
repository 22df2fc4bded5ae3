//! `meetingd-bench watch`: fan-out of WATCH. W watchers spread over I
//! instances; the posters connect (one connection per instance, or
//! `--posters` connections shared by the instances), and once all have,
//! send M messages into each instance at a steady rate, each carrying the
//! moment it was sent; every watcher times each delivery from that moment
//! (so the figure includes the POST itself). Reports delivery latency
//! percentiles over all deliveries, deliveries per second, watchers
//! dropped, the CPU time of the daemon, of Redis and of the bench (and
//! Redis' per delivery), the Redis connections the daemon holds while
//! watching, the daemon's memory (before, with every watcher idle, at the
//! end of the posting, and once the watchers went), and how long the POSTs
//! took to be answered (a delivery cannot be quicker than its POST).
//!
//! `--idle` posts nothing: it opens the watchers, holds them idle, closes
//! them, and again (`--cycles`): the daemon's memory with every watcher
//! idle and after they went, and the Redis connections it holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::drive::World;
use crate::spawn::{OwnDaemon, OwnRedis};

/// What the bench was asked.
pub struct Plan {
    pub watchers: usize,
    pub instances: u64,
    pub messages: u64,
    pub rate: f64,
    /// Connections the posters share (0: one per instance).
    pub posters: usize,
}

/// Connect to the daemon; a full listen backlog (thousands connecting at
/// once) is waited out.
async fn connect(socket: &std::path::Path) -> Result<UnixStream, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(format!("connect: {e}")),
        }
    }
}

/// One watcher: WATCH (say so on `watching` once it is acknowledged), then
/// time every delivery until `expected` came.
async fn watcher(
    socket: std::path::PathBuf,
    instance: String,
    expected: u64,
    origin: Instant,
    watching: tokio::sync::mpsc::Sender<()>,
) -> Result<(Histogram<u64>, u64), String> {
    let stream = connect(&socket).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write
        .write_all(format!("WATCH {instance}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let first = lines.next_line().await.map_err(|e| e.to_string())?;
    if !first.is_some_and(|l| l.contains("watching")) {
        return Err("WATCH was refused".into());
    }
    let _ = watching.send(()).await;
    drop(watching);
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut seen = 0;
    let mut dropped = 0;
    while seen < expected {
        let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? else {
            break;
        };
        if line.starts_with("{\"dropped\"") {
            dropped += 1;
            break;
        }
        // the text is "t<micros since origin>"
        if let Some(sent) = line
            .split("\"text\":\"t")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|micros| micros.parse::<u64>().ok())
        {
            let now = origin.elapsed().as_micros() as u64;
            histogram.saturating_record(now.saturating_sub(sent).max(1));
            seen += 1;
        }
    }
    Ok((histogram, dropped))
}

/// Post `count` messages into each of `meetings`' instances (M/1, as
/// its first sitter) on one connection, `rate` a second per instance,
/// once every poster is connected (`all_connected`); each instance's
/// sends are phased by its number over the interval. Returns how long
/// each POST took to be answered.
async fn poster(
    socket: std::path::PathBuf,
    meetings: Vec<u64>,
    instances: u64,
    count: u64,
    rate: f64,
    origin: Instant,
    all_connected: Arc<tokio::sync::Barrier>,
) -> Result<Histogram<u64>, String> {
    let stream = connect(&socket).await?;
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read).lines();
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    all_connected.wait().await;
    let every = Duration::from_secs_f64(1.0 / rate);
    // posters spread their sends over the interval instead of all at once
    let mut sends: Vec<(Duration, u64)> = meetings
        .iter()
        .flat_map(|&m| {
            let phase = every.mul_f64((m - 1) as f64 / instances as f64);
            (0..count).map(move |i| (phase + every.mul_f64(i as f64), m))
        })
        .collect();
    sends.sort_unstable();
    let start = tokio::time::Instant::now();
    for (at, m) in sends {
        tokio::time::sleep_until(start + at).await;
        let sent = origin.elapsed().as_micros();
        let user = World::sitter(m, 0);
        write
            .write_all(format!("POST {user} {m}/1 \"t{sent}\"\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let reply = replies
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let took = origin.elapsed().as_micros().saturating_sub(sent);
        histogram.saturating_record((took as u64).max(1));
        if !reply.starts_with("{\"ok\":true") {
            return Err(format!("POST failed: {reply}"));
        }
    }
    Ok(histogram)
}

/// Redis' `connected_clients` (INFO clients).
async fn connected_clients(conn: &mut redis::aio::MultiplexedConnection) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "no connected_clients in INFO clients".to_string())
}

/// The daemon's STATS.
pub async fn daemon_stats(socket: &std::path::Path) -> Result<serde_json::Value, String> {
    let stream = connect(socket).await?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(b"STATS\n")
        .await
        .map_err(|e| e.to_string())?;
    let line = BufReader::new(read)
        .lines()
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let reply: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    Ok(reply["result"].clone())
}

/// Redis, a daemon that takes every connection of the plan, and the
/// instances (public meetings, one sitting user each).
async fn setup(
    plan: &Plan,
) -> Result<(OwnRedis, OwnDaemon, redis::aio::MultiplexedConnection), String> {
    meetingd::daemon::raise_file_limit(u64::MAX);
    let redis = OwnRedis::start(true)?;
    let posters = match plan.posters {
        0 => plan.instances as usize,
        n => n,
    };
    let daemon = OwnDaemon::start_with(
        &redis.url,
        &[(
            "MEETINGD_SOCKET__MAX_CONNECTIONS",
            &(plan.watchers + posters + 64).to_string(),
        )],
    )?;
    let store = crate::connect(&redis.url).await?;
    let world = World {
        public: true,
        ..World::new(plan.instances, 1, store.now())
    };
    world.create(&store, 1, 1).await?;
    let info = crate::connect_raw(&redis.url).await?;
    Ok((redis, daemon, info))
}

/// The bench.
pub async fn watch(plan: Plan) -> Result<(), String> {
    let (_redis, daemon, mut info) = setup(&plan).await?;
    let clients_before = connected_clients(&mut info).await?;
    let origin = Instant::now();
    let rss_before = crate::rss_kib(daemon.pid()).unwrap_or(0);
    let mut watchers = Vec::new();
    let (watching, mut acknowledged) = tokio::sync::mpsc::channel(plan.watchers.max(1));
    for w in 0..plan.watchers {
        let instance = format!("{}/1", 1 + w as u64 % plan.instances);
        watchers.push(tokio::spawn(watcher(
            daemon.socket.clone(),
            instance,
            plan.messages,
            origin,
            watching.clone(),
        )));
    }
    drop(watching);
    // every WATCH acknowledged before the first post
    let mut ready = 0;
    while ready < plan.watchers {
        match tokio::time::timeout(Duration::from_secs(60), acknowledged.recv()).await {
            Ok(Some(())) => ready += 1,
            _ => return Err(format!("{ready} of {} WATCHes acknowledged", plan.watchers)),
        }
    }
    let watched_in = origin.elapsed();
    let clients_watching = connected_clients(&mut info).await?;
    // settled: the subscriptions (or readers) are all made
    tokio::time::sleep(Duration::from_secs(2)).await;
    let clients_settled = connected_clients(&mut info).await?;
    let rss_idle = crate::rss_kib(daemon.pid()).unwrap_or(0);
    let redis_pid = crate::redis_pid(&mut info).await?;
    // the posters connect, then start together: a thousand connections
    // opening at once are not part of a delivery's time
    let connections = match plan.posters {
        0 => plan.instances,
        n => (n as u64).min(plan.instances),
    };
    let all_connected = Arc::new(tokio::sync::Barrier::new(connections as usize + 1));
    let mut posters = Vec::new();
    for c in 0..connections {
        let meetings = (1..=plan.instances)
            .filter(|m| (m - 1) % connections == c)
            .collect();
        posters.push(tokio::spawn(poster(
            daemon.socket.clone(),
            meetings,
            plan.instances,
            plan.messages,
            plan.rate,
            origin,
            all_connected.clone(),
        )));
    }
    all_connected.wait().await;
    let processes = [daemon.pid(), redis_pid, std::process::id()];
    let ticks_before = processes.map(crate::cpu_ticks);
    let started = Instant::now();
    let mut posts =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    for p in posters {
        posts
            .add(&p.await.map_err(|e| e.to_string())??)
            .map_err(|e| e.to_string())?;
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut dropped = 0;
    let rss_peak = crate::rss_kib(daemon.pid()).unwrap_or(0);
    for w in watchers {
        let (histogram, d) = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .map_err(|_| "a watcher never got all its messages".to_string())?
            .map_err(|e| e.to_string())??;
        all.add(&histogram).map_err(|e| e.to_string())?;
        dropped += d;
    }
    let took = started.elapsed().as_secs_f64();
    let stats = daemon_stats(&daemon.socket).await?;
    let cpu_after = processes.map(crate::cpu_ticks);
    // the watchers' connections are closed (their tasks ended): does the
    // memory come back?
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_gone = crate::rss_kib(daemon.pid()).unwrap_or(0);
    // CPU seconds of the daemon, Redis and this bench over the posting
    let [daemon_cpu, redis_cpu, bench_cpu] = std::array::from_fn(|i| {
        cpu_after[i].saturating_sub(ticks_before[i]) as f64 * crate::tick_micros() / 1e6
    });
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let post_ms = |q: f64| posts.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} watchers on {} instance(s), {} messages each posted at {}/s per instance, \
         from {connections} connection(s)",
        plan.watchers, plan.instances, plan.messages, plan.rate
    );
    println!(
        "| deliveries | per second | p50 ms | p99 ms | p99.9 ms | max ms | dropped | CPU s: daemon / Redis / bench | daemon RSS MiB before / after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    println!(
        "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {dropped} | {daemon_cpu:.2} / {redis_cpu:.2} / {bench_cpu:.2} | {:.1} / {:.1} |",
        all.len(),
        all.len() as f64 / took,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        all.max() as f64 / 1000.0,
        rss_before as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
    );
    println!(
        "Redis clients: {clients_before} before the WATCHes, {clients_watching} with them, \
         {clients_settled} two seconds later (this bench's own connection included); \
         every WATCH acknowledged in {:.0} ms",
        watched_in.as_secs_f64() * 1000.0
    );
    println!(
        "Redis CPU per delivery: {:.1} us; daemon RSS MiB: {:.1} before the WATCHes, {:.1} \
         with every watcher idle, {:.1} at the end of the posting, {:.1} once the watchers went",
        redis_cpu * 1e6 / all.len().max(1) as f64,
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        rss_gone as f64 / 1024.0,
    );
    let post = &stats["latency"]["POST"];
    println!(
        "POST answered to its poster: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
         in the daemon: p50 {} ms, p99 {} ms (STATS)",
        post_ms(0.5),
        post_ms(0.99),
        post_ms(0.999),
        posts.max() as f64 / 1000.0,
        post["p50_ms"],
        post["p99_ms"]
    );
    Ok(())
}

/// An idle watcher: WATCH `instance`, and once it is acknowledged, hold
/// the connection without reading.
async fn idle_watcher(
    socket: std::path::PathBuf,
    instance: String,
    opening: Arc<tokio::sync::Semaphore>,
) -> Result<UnixStream, String> {
    let _permit = opening.acquire().await.map_err(|e| e.to_string())?;
    let mut stream = connect(&socket).await?;
    stream
        .write_all(format!("WATCH {instance}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 256];
    while !reply.contains(&b'\n') {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the daemon closed a watcher's connection".into());
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    if !String::from_utf8_lossy(&reply).contains("watching") {
        return Err(format!(
            "WATCH was refused: {}",
            String::from_utf8_lossy(&reply).trim()
        ));
    }
    Ok(stream)
}

/// STATS' `watch.watchers`.
async fn watchers_now(socket: &std::path::Path) -> Result<u64, String> {
    let stats = daemon_stats(socket).await?;
    stats["watch"]["watchers"]
        .as_u64()
        .ok_or_else(|| "no watch.watchers in STATS".to_string())
}

/// The idle bench: per cycle, open the watchers (spread over the
/// instances) and wait for every acknowledgement, hold them idle, close
/// them; the daemon's RSS at each step, Redis' clients, the daemon's CPU
/// while they are held.
pub async fn idle(plan: Plan, cycles: usize) -> Result<(), String> {
    let (_redis, daemon, mut info) = setup(&plan).await?;
    let redis_pid = crate::redis_pid(&mut info).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rss = || crate::rss_kib(daemon.pid()).unwrap_or(0);
    println!(
        "{} idle watchers on {} instance(s), opened and closed {cycles} time(s)",
        plan.watchers, plan.instances
    );
    println!(
        "| cycle | acknowledged in s | Redis clients: before / watching | daemon RSS MiB: before / watchers idle / closed / 5 s later / 15 s later | KiB per idle watcher | CPU ms per s while idle: daemon / Redis | connection buffers KiB (STATS) |"
    );
    println!("|---:|---:|---|---|---:|---|---:|");
    let opening = Arc::new(tokio::sync::Semaphore::new(256));
    for cycle in 1..=cycles {
        let clients_before = connected_clients(&mut info).await?;
        let rss_before = rss();
        let started = Instant::now();
        let tasks: Vec<_> = (0..plan.watchers)
            .map(|w| {
                tokio::spawn(idle_watcher(
                    daemon.socket.clone(),
                    format!("{}/1", 1 + w as u64 % plan.instances),
                    opening.clone(),
                ))
            })
            .collect();
        let mut streams = Vec::with_capacity(tasks.len());
        for task in tasks {
            streams.push(task.await.map_err(|e| e.to_string())??);
        }
        let acknowledged = started.elapsed();
        // settled: the subscriptions are made, the gaps read
        tokio::time::sleep(Duration::from_secs(2)).await;
        let clients = connected_clients(&mut info).await?;
        let processes = [daemon.pid(), redis_pid];
        let before = processes.map(crate::cpu_ticks);
        let held = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let cpu = processes.map(crate::cpu_ticks);
        let held = held.elapsed().as_secs_f64();
        let [daemon_ms, redis_ms] = std::array::from_fn(|i| {
            cpu[i].saturating_sub(before[i]) as f64 * crate::tick_micros() / 1e3 / held
        });
        let rss_idle = rss();
        let stats = daemon_stats(&daemon.socket).await?;
        let buffers = stats["connections"]["buffered_bytes"]
            .as_u64()
            .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1024.0));
        drop(streams);
        let deadline = Instant::now() + Duration::from_secs(60);
        while watchers_now(&daemon.socket).await? > 0 {
            if Instant::now() > deadline {
                return Err("the watchers were not gone a minute after closing".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rss_closed = rss();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss_later = rss();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss_last = rss();
        println!(
            "| {cycle} | {:.2} | {clients_before} / {clients} | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} | {:.1} | {daemon_ms:.1} / {redis_ms:.1} | {buffers} |",
            acknowledged.as_secs_f64(),
            mib(rss_before),
            mib(rss_idle),
            mib(rss_closed),
            mib(rss_later),
            mib(rss_last),
            rss_idle.saturating_sub(rss_before) as f64 / plan.watchers.max(1) as f64,
        );
    }
    println!(
        "Redis clients include this bench's own connection; RSS is VmRSS of /proc/<pid>/status; \
         \"closed\": as soon as STATS shows no watcher"
    );
    Ok(())
}
