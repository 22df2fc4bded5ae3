//! `archive`: how fast the archive takes an ended instance. A redis-server
//! and a meetingd of the bench's own, archiving to the database given (a
//! SQLite file in a temporary directory by default); one instance with
//! `events` events (half joins, half timeouts) and `messages` messages is
//! written, then ended; the clock runs from the end to the moment STATS
//! counts its entry archived, and the rows the daemon wrote are divided by
//! that time.

use std::time::{Duration, Instant};

use redis::Value;

use crate::spawn::{OwnDaemon, OwnRedis};
use crate::watch::daemon_stats;

/// What to measure.
pub struct Plan {
    /// The archive: any `archive.url`; `None`: a SQLite file of our own.
    pub url: Option<String>,
    /// Events in the instance (joins and timeouts, half each).
    pub events: u64,
    /// Messages in the instance.
    pub messages: u64,
}

/// FCALL with one key.
fn fcall(pipe: &mut redis::Pipeline, function: &str, key: &str, args: &[&str]) {
    pipe.cmd("FCALL").arg(function).arg(1).arg(key).arg(args);
}

/// The archive's entries and rows as STATS counts them.
async fn archived(socket: &std::path::Path) -> Result<(u64, u64), String> {
    let stats = daemon_stats(socket).await?;
    let archive = &stats["archive"];
    Ok((
        archive["entries"].as_u64().unwrap_or(0),
        archive["rows"].as_u64().unwrap_or(0),
    ))
}

/// Wait until STATS counts `entries` archived; the rows by then.
async fn until_archived(socket: &std::path::Path, entries: u64) -> Result<u64, String> {
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
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The bench.
pub async fn archive(plan: Plan) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let url = plan
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("archive.sqlite").display()));
    let redis = OwnRedis::start(true)?;
    let daemon = OwnDaemon::start_with(
        &redis.url,
        &[
            ("MEETINGD_ARCHIVE__URL", url.as_str()),
            ("MEETINGD_ARCHIVE__POLL_MS", "10"),
        ],
    )?;
    let client = redis::Client::open(redis.url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    // an hour-long window a day ahead: the daemon's own ticks never reach it
    let now = chrono::Utc::now().timestamp_millis();
    let from = (now / 60_000 + 24 * 60) * 60_000;
    let to = from + 3_600_000;
    let key = "meetingd:{p1}:meeting:1";
    let due = "meetingd:{p1}:due";
    let users = (plan.events / 2).max(1);
    let mut pipe = redis::pipe();
    fcall(&mut pipe, "meet_meeting_set", key, &["Bench", "", "true"]);
    let (f, t) = (from.to_string(), to.to_string());
    fcall(
        &mut pipe,
        "meet_instance_set",
        key,
        &["1", &f, &t, &(from - 60_000).to_string()],
    );
    fcall(&mut pipe, "meet_tick", due, &[&f]);
    let _: Vec<Value> = pipe
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    // joins and messages, in pipelines of 5,000 calls
    let span = (to - from - 1000) / (users + plan.messages) as i64;
    let mut at = from;
    let mut calls = Vec::new();
    for u in 1..=users {
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
    for i in 0..plan.messages {
        at += span.max(0);
        let user = 1 + i % users;
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
            fcall(&mut pipe, function, key, &args);
        }
        let _: Vec<Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    // the meeting's and the instance's entries first, off the clock
    let before = until_archived(&daemon.socket, 2).await?;
    let started = Instant::now();
    let end = (to + 5_000).to_string();
    loop {
        let reply: Value = redis::cmd("FCALL")
            .arg("meet_tick")
            .arg(1)
            .arg(due)
            .arg(&end)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if !more(&reply) {
            break;
        }
    }
    let rows = until_archived(&daemon.socket, 3).await? - before;
    let took = started.elapsed().as_secs_f64();
    let backend = url.split(':').next().unwrap_or_default();
    println!("archive  events  messages  rows    seconds  rows/s");
    println!(
        "{backend:<8} {:<7} {:<9} {rows:<7} {took:<8.3} {:.0}",
        users * 2,
        plan.messages,
        rows as f64 / took
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
