//! `redis.durability`: what an acknowledgement survives. The embedded
//! Redis killed (SIGKILL) under a load of JOIN, POST and LEAVE with the
//! default promise: every write acknowledged is there after its restart.
//! An external Redis that keeps less than the promise: a warning under the
//! default, a refusal when configured, a warning when it cannot be asked.
//! And a trial (ignored: loss under everysec depends on the disk) that
//! counts the acknowledged writes lost with any setting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Client, Daemon, Redis, all_pages, at, meetingd_check, serve_command};

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `"ok":true`.
    Acked,
    /// `in_doubt`, or no reply at all: it may have been applied.
    Doubtful,
    /// Any other error: not applied.
    Failed,
}

/// A request line and what came of it.
type Sent = (String, Outcome);

/// A client thread: JOIN, POST (a text no other request uses), LEAVE, over
/// and over as `user`, one request at a time, reconnecting when the daemon
/// closes the connection, until `stop`. Every acknowledgement counts in
/// `acked` as it comes.
fn client(
    socket: PathBuf,
    user: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<Sent>> {
    std::thread::spawn(move || {
        let mut sent = Vec::new();
        let mut n: u64 = 0;
        while !stop.load(Ordering::SeqCst) {
            let Ok(mut c) = Client::connect(&socket) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let line = match n % 3 {
                    1 => format!("JOIN {user} 1/1"),
                    2 => format!("POST {user} 1/1 \"d-{user}-{n}\""),
                    _ => format!("LEAVE {user} 1/1"),
                };
                let reply = c.try_request(&line);
                let outcome = match &reply {
                    Some(r) if r["ok"] == true => Outcome::Acked,
                    Some(r) if r["error"]["code"] == "in_doubt" => Outcome::Doubtful,
                    Some(_) => Outcome::Failed,
                    None => Outcome::Doubtful,
                };
                if outcome == Outcome::Acked {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                sent.push((line, outcome));
                if reply.is_none() {
                    break;
                }
            }
        }
        sent
    })
}

/// Wait until `count` reaches `at_least`, failing after `limit` (a hang).
fn wait_for_count(what: &str, count: &AtomicUsize, at_least: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {at_least}",
            count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A plain connection to the embedded Redis of `data_dir`.
fn embedded_redis(data_dir: &Path) -> redis::Connection {
    let url = format!("redis+unix://{}", data_dir.join("redis.sock").display());
    redis::Client::open(url)
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect to the embedded redis-server")
}

/// A field of the embedded Redis' INFO or CONFIG GET.
fn redis_setting(data_dir: &Path, command: &[&str], field: &str) -> String {
    let mut conn = embedded_redis(data_dir);
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    let reply: redis::Value = cmd.query(&mut conn).expect("INFO or CONFIG GET");
    match reply {
        redis::Value::BulkString(text) => String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default(),
        redis::Value::Array(pair) => match pair.get(1) {
            Some(redis::Value::BulkString(v)) => String::from_utf8_lossy(v).into_owned(),
            other => panic!("CONFIG GET {field}: {other:?}"),
        },
        other => panic!("{command:?}: {other:?}"),
    }
}

/// What a trial found.
struct Trial {
    /// Writes acknowledged (JOIN, POST, LEAVE).
    acked: usize,
    /// Acknowledged writes missing after the restart.
    lost_writes: usize,
    /// Which (a POST's line, or a user's count of JOINs or LEAVEs).
    lost: Vec<String>,
    /// Requests in doubt or without a reply.
    doubtful: usize,
    /// The participants do not follow the event log (one line each).
    inconsistent: Vec<String>,
}

/// Run a daemon on its embedded Redis (`env` adds settings), load it with
/// `clients` clients, kill the redis-server (SIGKILL) once `kill_after`
/// writes were acknowledged, let the daemon restart it on the same data,
/// load on until 200 more are, then look for every acknowledged write.
fn crash_trial(env: &[(&str, &str)], clients: u64, kill_after: usize) -> Trial {
    let data = tempfile::tempdir().expect("data dir");
    let daemon = Daemon::start_embedded(data.path(), env);
    let mut c = daemon.client();
    for u in 1..=clients {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@example.com"
        ));
    }
    c.ok("MEETING SET 1 title Crash description d public true");
    c.ok(&format!(
        "INSTANCE SET 1 1 from {} to {}",
        at(-1),
        at(24 * 60)
    ));
    c.ok("TICK");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (1..=clients)
        .map(|u| client(daemon.socket().into(), u, stop.clone(), acked.clone()))
        .collect();
    wait_for_count(
        "writes acknowledged before the kill",
        &acked,
        kill_after,
        Duration::from_secs(600),
    );
    let pid: i32 = redis_setting(data.path(), &["INFO", "server"], "process_id")
        .parse()
        .expect("the embedded redis-server's pid");
    // SAFETY: kill(2) on the redis-server the test's daemon started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "SIGKILL");
    let at_kill = acked.load(Ordering::SeqCst);
    // the daemon restarts it; the load goes on
    wait_for_count(
        "writes acknowledged after the restart",
        &acked,
        at_kill + 200,
        Duration::from_secs(120),
    );
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<Sent> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect();
    let restarted: i32 = redis_setting(data.path(), &["INFO", "server"], "process_id")
        .parse()
        .expect("pid");
    assert_ne!(restarted, pid, "the daemon restarted its redis-server");

    let stored_texts: BTreeSet<String> = all_pages(&mut c, "MESSAGES 1/1", "messages")
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_string))
        .collect();
    // per user: (joins, leaves) stored and acknowledged
    let mut stored: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for event in all_pages(&mut c, "EVENTS 1/1", "events") {
        if event["type"] == "start" {
            continue;
        }
        let user = event["user"].as_u64().expect("an event's user");
        let entry = stored.entry(user).or_default();
        match event["type"].as_str() {
            Some("join") => entry.0 += 1,
            Some("leave") => entry.1 += 1,
            other => panic!("no {other:?} events in this trial: {event}"),
        }
    }
    let mut acknowledged: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    let mut lost = Vec::new();
    let mut lost_writes = 0;
    for (line, outcome) in &sent {
        if *outcome != Outcome::Acked {
            continue;
        }
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or_default();
        let user: u64 = words.next().and_then(|u| u.parse().ok()).expect("user");
        let entry = acknowledged.entry(user).or_default();
        match verb {
            "JOIN" => entry.0 += 1,
            "LEAVE" => entry.1 += 1,
            _ => {
                let text = line.split('"').nth(1).unwrap_or_default();
                if !stored_texts.contains(text) {
                    lost_writes += 1;
                    lost.push(line.clone());
                }
            }
        }
    }
    for (user, (joins, leaves)) in &acknowledged {
        let (stored_joins, stored_leaves) = stored.get(user).copied().unwrap_or_default();
        if stored_joins < *joins {
            lost_writes += joins - stored_joins;
            lost.push(format!(
                "user {user}: {joins} JOINs acknowledged, {stored_joins} stored"
            ));
        }
        if stored_leaves < *leaves {
            lost_writes += leaves - stored_leaves;
            lost.push(format!(
                "user {user}: {leaves} LEAVEs acknowledged, {stored_leaves} stored"
            ));
        }
    }
    let inside: BTreeSet<u64> = c
        .ok("PARTICIPANTS 1/1")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["user"].as_u64())
        .collect();
    let mut inconsistent = Vec::new();
    for user in 1..=clients {
        let (joins, leaves) = stored.get(&user).copied().unwrap_or_default();
        let in_by_log = joins > leaves;
        if joins < leaves || joins > leaves + 1 || in_by_log != inside.contains(&user) {
            inconsistent.push(format!(
                "user {user}: {joins} joins, {leaves} leaves logged; a participant: {}",
                inside.contains(&user)
            ));
        }
    }
    let url = format!("redis+unix://{}", data.path().join("redis.sock").display());
    let (code, out) = meetingd_check(&["--redis", &url]);
    if code != 0 {
        inconsistent.push(format!("meetingd check: {out}"));
    }
    Trial {
        acked: sent.iter().filter(|(_, o)| *o == Outcome::Acked).count(),
        lost_writes,
        lost,
        doubtful: sent.iter().filter(|(_, o)| *o == Outcome::Doubtful).count(),
        inconsistent,
    }
}

/// The default promise on the embedded Redis: appendfsync always, and the
/// redis-server killed mid-load loses no write acknowledged with ok:true.
#[test]
fn kill_9_of_the_embedded_redis_loses_no_acknowledged_write() {
    let trial = crash_trial(&[("MEETINGD_REDIS__TIMEOUT_MS", "500")], 6, 600);
    eprintln!(
        "fsync (the default): {} writes acknowledged, {} lost, {} in doubt",
        trial.acked, trial.lost_writes, trial.doubtful
    );
    assert!(trial.acked > 800, "the load ran: {}", trial.acked);
    assert!(
        trial.lost.is_empty(),
        "acknowledged, then lost: {:?}",
        trial.lost
    );
    assert!(trial.inconsistent.is_empty(), "{:?}", trial.inconsistent);
}

/// The default starts the embedded Redis with appendfsync always; a
/// configured promise with its own, and the old key as its alias.
#[test]
fn the_embedded_redis_fsyncs_as_promised() {
    for (env, appendfsync) in [
        (vec![], "always"),
        (vec![("MEETINGD_REDIS__DURABILITY", "everysec")], "everysec"),
        (vec![("MEETINGD_EMBEDDED__APPENDFSYNC", "no")], "no"),
    ] {
        let data = tempfile::tempdir().expect("data dir");
        let daemon = Daemon::start_embedded(data.path(), &env);
        assert_eq!(
            redis_setting(
                data.path(),
                &["CONFIG", "GET", "appendfsync"],
                "appendfsync"
            ),
            appendfsync,
            "{env:?}"
        );
        assert_eq!(
            redis_setting(data.path(), &["CONFIG", "GET", "appendonly"], "appendonly"),
            "yes"
        );
        if !env.is_empty() && env[0].0 == "MEETINGD_EMBEDDED__APPENDFSYNC" {
            assert!(
                daemon
                    .log()
                    .contains("embedded.appendfsync is deprecated: \"no\" is read as redis.durability = \"memory\""),
                "{}",
                daemon.log()
            );
        }
    }
}

/// A Redis without an append-only file under the default promise: the
/// daemon serves, and its log says in one line what an ack then means.
#[test]
fn an_external_redis_keeping_less_than_the_default_is_warned_about() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("weaker than the default redis.durability \"fsync\""))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("appendonly no"), "{line}");
    assert!(line.contains("survive a meetingd crash only"), "{line}");
    assert!(line.contains(&redis.url()), "names the Redis: {line}");
    daemon.client().ok("PING");
}

/// A configured promise the Redis does not keep stops the daemon (exit 2,
/// the reason in its log); the promise it keeps starts it, said at info.
#[test]
fn a_configured_durability_the_redis_does_not_keep_refuses_to_start() {
    let redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("meetingd.sock");
    let mut refused = Daemon::spawn_command(
        serve_command(&socket, &["--redis", &redis.url()]),
        &socket,
        &[("MEETINGD_REDIS__DURABILITY", "fsync")],
        dir,
    );
    let status = refused
        .wait(Duration::from_secs(30))
        .expect("the daemon stops by itself");
    assert_eq!(status.code(), Some(2), "{}", refused.log());
    let log = refused.log();
    assert!(
        log.contains("redis.durability: \"fsync\" is configured, but the Redis at"),
        "{log}"
    );
    assert!(log.contains("up to about 2 s"), "{log}");
    let kept = Daemon::start(&redis, &[("MEETINGD_REDIS__DURABILITY", "everysec")]);
    assert!(
        kept.log().contains("redis.durability \"everysec\" kept"),
        "{}",
        kept.log()
    );
    assert!(!kept.log().contains("WARN"), "{}", kept.log());
}

/// CONFIG renamed away (as managed Redis services do): the promise cannot
/// be verified, which is a warning, even for a configured one.
#[test]
fn a_redis_without_config_cannot_be_verified_and_is_warned_about() {
    let redis = Redis::start_with(&["--rename-command", "CONFIG", ""]);
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__DURABILITY", "fsync")]);
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("cannot verify redis.durability \"fsync\"")
            && l.contains("appendfsync always")),
        "{log}"
    );
    daemon.client().ok("PING");
}

/// The trial behind BENCHMARKS.md's "Durability": the embedded Redis
/// killed under load, acknowledged writes counted and looked for. Ignored:
/// what everysec loses depends on the disk. DURABILITY_TRIAL names the
/// setting (default everysec), DURABILITY_TRIAL_KILL_AFTER the writes
/// acknowledged before the kill (20000); DURABILITY_TRIAL_SLOW_FSYNC, the
/// path of scripts/slow-fsync.c built, is preloaded into the daemon and so
/// its redis-server: a disk whose fsyncs take SLOW_FSYNC_MS (1500) ms.
///
/// `cargo test --test it durability_trial -- --ignored --nocapture`
#[test]
#[ignore]
fn durability_trial() {
    let setting = std::env::var("DURABILITY_TRIAL").unwrap_or_else(|_| "everysec".into());
    let kill_after = std::env::var("DURABILITY_TRIAL_KILL_AFTER")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let slow = std::env::var("DURABILITY_TRIAL_SLOW_FSYNC").unwrap_or_default();
    let lag = std::env::var("SLOW_FSYNC_MS").unwrap_or_else(|_| "1500".into());
    let mut env = vec![
        ("MEETINGD_REDIS__DURABILITY", setting.as_str()),
        ("MEETINGD_REDIS__TIMEOUT_MS", "5000"),
    ];
    if !slow.is_empty() {
        env.extend([
            ("LD_PRELOAD", slow.as_str()),
            ("SLOW_FSYNC_MS", lag.as_str()),
        ]);
    }
    let trial = crash_trial(&env, 8, kill_after);
    let disk = if slow.is_empty() {
        "this disk".to_string()
    } else {
        format!("fsyncs {lag} ms late")
    };
    eprintln!(
        "durability {setting}, {disk}: {} writes acknowledged, {} lost, {} in doubt; inconsistent: {:?}",
        trial.acked, trial.lost_writes, trial.doubtful, trial.inconsistent
    );
    for line in trial.lost.iter().take(5) {
        eprintln!("  lost: {line}");
    }
}

/// A cluster: every master is asked. Two keep fsync, the third has no
/// append-only file: one warning, naming that master, under the default;
/// a refusal naming it when fsync is configured.
#[test]
fn every_master_of_a_cluster_is_asked_what_it_keeps() {
    let cluster = crate::cluster::Cluster::start(3);
    let ports = cluster.ports().to_vec();
    for port in &ports[..2] {
        for (name, value) in [("appendonly", "yes"), ("appendfsync", "always")] {
            assert_eq!(
                cluster.cli(*port, &["CONFIG", "SET", name, value]).trim(),
                "OK"
            );
        }
    }
    let weak = format!("127.0.0.1:{}", ports[2]);
    let daemon = Daemon::start_on_cluster(&cluster.urls(), &[]);
    let log = daemon.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(&format!("the Redis at {weak} runs with appendonly no")));
    for port in &ports[..2] {
        assert!(
            log.contains(&format!(
                "\"fsync\" kept: the Redis at 127.0.0.1:{port} runs with appendonly yes"
            )),
            "{log}"
        );
    }
    drop(daemon);
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("meetingd.sock");
    let mut refused = Daemon::spawn_command(
        serve_command(&socket, &["--redis-cluster", &cluster.urls().join(",")]),
        &socket,
        &[("MEETINGD_REDIS__DURABILITY", "fsync")],
        dir,
    );
    let status = refused
        .wait(Duration::from_secs(30))
        .expect("the daemon stops by itself");
    assert_eq!(status.code(), Some(2), "{}", refused.log());
    assert!(
        refused
            .log()
            .contains(&format!("but the Redis at {weak} runs with appendonly no")),
        "{}",
        refused.log()
    );
}
