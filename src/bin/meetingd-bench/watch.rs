//! `meetingd-bench watch`: fan-out of WATCH. W watchers spread over I
//! instances; one poster per instance sends M messages at a steady rate,
//! each carrying the moment it was sent; every watcher times each delivery
//! from that moment (so the figure includes the POST itself). Reports
//! delivery latency percentiles over all deliveries, deliveries per second,
//! watchers dropped, and the daemon's CPU time and memory.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::drive::World;
use crate::spawn::{OwnDaemon, OwnRedis};

/// What the bench was asked.
pub struct Plan {
    pub watchers: usize,
    pub instances: u64,
    pub messages: u64,
    pub rate: f64,
}

/// CPU seconds (user + system) a process used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command name, which is in parentheses
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
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
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
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

/// Post `count` messages into `instance` as `user`, `rate` a second.
async fn poster(
    socket: std::path::PathBuf,
    user: u64,
    instance: String,
    count: u64,
    rate: f64,
    phase: f64,
    origin: Instant,
) -> Result<(), String> {
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read).lines();
    let every = Duration::from_secs_f64(1.0 / rate);
    // posters spread their sends over the interval instead of all at once
    let start = tokio::time::Instant::now() + every.mul_f64(phase);
    for i in 0..count {
        tokio::time::sleep_until(start + every.mul_f64(i as f64)).await;
        let sent = origin.elapsed().as_micros();
        write
            .write_all(format!("POST {user} {instance} \"t{sent}\"\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let reply = replies
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        if !reply.starts_with("{\"ok\":true") {
            return Err(format!("POST failed: {reply}"));
        }
    }
    Ok(())
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
async fn daemon_stats(socket: &std::path::Path) -> Result<serde_json::Value, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
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

/// The bench.
pub async fn watch(plan: Plan) -> Result<(), String> {
    meetingd::daemon::raise_file_limit(u64::MAX);
    let redis = OwnRedis::start(true)?;
    let daemon = OwnDaemon::start_with(
        &redis.url,
        &[(
            "MEETINGD_SOCKET__MAX_CONNECTIONS",
            &(plan.watchers + plan.instances as usize + 64).to_string(),
        )],
    )?;
    let store = crate::connect(&redis.url).await?;
    let world = World::new(plan.instances, 1, store.now());
    world.create(&store, 1, 1).await?;
    let mut info = crate::connect_raw(&redis.url).await?;
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
    let cpu_before = cpu_seconds(daemon.pid()).unwrap_or(0.0);
    let started = Instant::now();
    let mut posters = Vec::new();
    for m in 1..=plan.instances {
        posters.push(tokio::spawn(poster(
            daemon.socket.clone(),
            World::sitter(m, 0),
            format!("{m}/1"),
            plan.messages,
            plan.rate,
            (m - 1) as f64 / plan.instances as f64,
            origin,
        )));
    }
    for p in posters {
        p.await.map_err(|e| e.to_string())??;
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
    let cpu = cpu_seconds(daemon.pid()).unwrap_or(0.0) - cpu_before;
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} watchers on {} instance(s), {} messages each posted at {:.0}/s per instance",
        plan.watchers, plan.instances, plan.messages, plan.rate
    );
    println!(
        "| deliveries | per second | p50 ms | p99 ms | p99.9 ms | max ms | dropped | daemon CPU s | daemon RSS MiB before / after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {dropped} | {cpu:.2} | {:.1} / {:.1} |",
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
        "Redis clients: {clients_before} before the WATCHes, {clients_watching} with them \
         (this bench's own connection included); every WATCH acknowledged in {:.0} ms",
        watched_in.as_secs_f64() * 1000.0
    );
    let post = &stats["latency"]["POST"];
    println!(
        "POST in the daemon: p50 {} ms, p99 {} ms (STATS)",
        post["p50_ms"], post["p99_ms"]
    );
    Ok(())
}
