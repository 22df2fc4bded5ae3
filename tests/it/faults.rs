//! Faults with real processes: the daemon killed under load, Redis killed
//! under load (nothing acknowledged is lost), the library flushed under
//! load, Redis gone for ten seconds, two daemons ticking one Redis. Each
//! ends with `meetingd check` clean.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Client, Daemon, Redis, all_pages};

fn rfc3339(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Users 1..=n, public meeting 1 with an instance open for a day, a tick.
fn setup(c: &mut Client, users: u64) {
    for u in 1..=users {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@x"
        ));
    }
    c.ok("MEETING SET 1 title Load description d public true");
    c.ok(&format!(
        "INSTANCE SET 1 1 from {} to {}",
        rfc3339(chrono::Duration::minutes(-1)),
        rfc3339(chrono::Duration::days(1))
    ));
    c.ok("TICK");
}

/// Wait until `count` reaches `at_least`; fail the test if it still has not
/// after a time far longer than the load needs (a hang, not slowness).
fn wait_for_count(what: &str, count: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {at_least}",
            count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client thread joining, posting and leaving until `stop`; the lines it
/// got an `ok` for (also counted in `acked` as they come).
fn churn(
    socket: std::path::PathBuf,
    user: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let Ok(mut c) = Client::connect(&socket) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let line = match n % 3 {
                    0 => format!("JOIN {user} 1/1"),
                    1 => format!("POST {user} 1/1 \"m-{user}-{n}\""),
                    _ => format!("LEAVE {user} 1/1"),
                };
                match c.try_request(&line) {
                    Some(reply) if reply["ok"] == true => {
                        acknowledged.push(line);
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }
        acknowledged
    })
}

#[test]
fn kill_9_of_the_daemon_under_load_then_restart() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("meetingd.sock");
    let mut daemon = Daemon::spawn(&redis, &socket, &[], tempfile::tempdir().expect("dir"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Client::connect(&socket).map_or(true, |mut c| c.try_request("PING").is_none()) {
        assert!(Instant::now() < deadline, "the daemon starts");
        std::thread::sleep(Duration::from_millis(20));
    }
    setup(&mut Client::connect(&socket).expect("connect"), 8);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (1..=8)
        .map(|u| churn(socket.clone(), u, stop.clone(), acked.clone()))
        .collect();
    wait_for_count("requests served before the kill", &acked, 50);
    // SAFETY: killing the daemon this test started.
    unsafe {
        libc::kill(daemon.pid() as libc::pid_t, libc::SIGKILL);
    }
    let _ = daemon.wait(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let before_restart = acked.load(Ordering::SeqCst);
    let _restarted = Daemon::spawn(&redis, &socket, &[], tempfile::tempdir().expect("dir"));
    // the clients reconnect and the load goes on
    wait_for_count(
        "requests served after the restart",
        &acked,
        before_restart + 50,
    );
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().expect("client");
    }
    let mut c = Client::connect(&socket).expect("the restarted daemon serves");
    assert_eq!(c.ok("PING"), "PONG");
    redis.assert_consistent();
}

#[test]
fn kill_9_of_redis_loses_nothing_acknowledged() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__TIMEOUT_MS", "300")]);
    setup(&mut daemon.client(), 4);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (1..=4)
        .map(|u| {
            churn(
                daemon.socket().to_path_buf(),
                u,
                stop.clone(),
                acked.clone(),
            )
        })
        .collect();
    wait_for_count("requests served before the kill", &acked, 60);
    redis.stop(); // SIGKILL
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let acknowledged: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    redis.restart();
    let mut c = daemon.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.request("MESSAGES 1/1 LIMIT 1")["ok"] != true {
        assert!(Instant::now() < deadline, "Redis is back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored: BTreeSet<String> = all_pages(&mut c, "MESSAGES 1/1", "messages")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect();
    let posted: Vec<String> = acknowledged
        .iter()
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    assert!(posted.len() > 10, "the load ran: {} posts", posted.len());
    let lost: Vec<&String> = posted.iter().filter(|p| !stored.contains(*p)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let joins_stored = all_pages(&mut c, "EVENTS 1/1", "events")
        .iter()
        .filter(|e| e["type"] == "join")
        .count();
    let joins_acked = acknowledged
        .iter()
        .filter(|l| l.starts_with("JOIN"))
        .count();
    assert!(
        joins_stored >= joins_acked,
        "{joins_stored} joins stored, {joins_acked} acknowledged"
    );
    eprintln!(
        "kill -9 of Redis: {} requests acknowledged ({} POSTs, {joins_acked} JOINs), {} POSTs \
         lost, {joins_stored} joins stored",
        acknowledged.len(),
        posted.len(),
        lost.len()
    );
    redis.assert_consistent();
}

#[test]
fn function_flush_under_load_fails_no_request() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    setup(&mut daemon.client(), 4);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (1..=4u64)
        .map(|u| {
            let socket = daemon.socket().to_path_buf();
            let stop = stop.clone();
            let rounds = rounds.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).expect("connect");
                c.ok(&format!("JOIN {u} 1/1"));
                let mut failures = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    for line in [
                        format!("POST {u} 1/1 \"n{n}\""),
                        format!("USER GET {u}"),
                        "PARTICIPANTS 1/1".to_string(),
                    ] {
                        let reply = c.request(&line);
                        if reply["ok"] != true {
                            failures.push(format!("{line}: {reply}"));
                        }
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_connection()
        .expect("connect");
    // five flushes, each after the workers made a few more rounds of
    // requests, and a few more rounds after the last
    for _ in 0..5 {
        let done = rounds.load(Ordering::SeqCst);
        wait_for_count("rounds between two flushes", &rounds, done + 5);
        let _: () = redis::cmd("FUNCTION")
            .arg("FLUSH")
            .query(&mut conn)
            .expect("flush");
    }
    let done = rounds.load(Ordering::SeqCst);
    wait_for_count("rounds after the last flush", &rounds, done + 5);
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        let failures = worker.join().expect("worker");
        assert!(failures.is_empty(), "{failures:?}");
    }
    redis.assert_consistent();
}

#[test]
fn redis_gone_for_ten_seconds_then_everything_catches_up() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let daemon = Daemon::start(
        &redis,
        &[
            ("MEETINGD_REDIS__TIMEOUT_MS", "500"),
            ("MEETINGD_SCHEDULER__CRON", "* * * * * *"),
        ],
    );
    let mut c = daemon.client();
    setup(&mut c, 2);
    // an instance that falls due while Redis is away
    c.ok("MEETING SET 2 title Later description d public true");
    c.ok(&format!(
        "INSTANCE SET 2 1 from {} to {}",
        rfc3339(chrono::Duration::seconds(4)),
        rfc3339(chrono::Duration::days(1))
    ));
    c.ok("JOIN 1 1/1");
    redis.stop();
    // ten seconds or more away (instance 2 falls due meanwhile); every
    // request in that time gets an answer: unavailable
    for _ in 0..40 {
        let reply = c.request("JOIN 2 1/1");
        assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
        std::thread::sleep(Duration::from_millis(250));
    }
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let active = c.request("ACTIVE");
        // ACTIVE reads through the caches' connection, PARTICIPANTS through
        // the requests' one: each comes back on its own
        let caught_up = active["ok"] == true
            && active["result"]["instances"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["meeting"] == 2))
            && c.request("PARTICIPANTS 1/1")["ok"] == true;
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler catches up: {active}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.ok("PARTICIPANTS 1/1")[0]["user"], 1, "the data survived");
    c.ok("JOIN 2 2");
    redis.assert_consistent();
}

#[test]
fn two_daemons_ticking_one_redis_under_load() {
    let redis = Redis::start();
    let env = [("MEETINGD_SCHEDULER__CRON", "* * * * * *")];
    let a = Daemon::start(&redis, &env);
    let b = Daemon::start(&redis, &env);
    let mut c = a.client();
    for u in 1..=6 {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@x"
        ));
    }
    // 12 meetings whose instances open and close within the next seconds
    for m in 1..=12 {
        c.ok(&format!(
            "MEETING SET {m} title M{m} description d public true"
        ));
        let open = chrono::Duration::milliseconds(1000 + 150 * m);
        let close = open + chrono::Duration::milliseconds(2500);
        c.ok(&format!(
            "INSTANCE SET {m} 1 from {} to {}",
            rfc3339(open),
            rfc3339(close)
        ));
    }
    // clients on both daemons join whatever is open
    let deadline = Instant::now() + Duration::from_secs(7);
    let sockets = [a.socket().to_path_buf(), b.socket().to_path_buf()];
    let workers: Vec<_> = (1..=6u64)
        .map(|u| {
            let socket = sockets[(u % 2) as usize].clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).expect("connect");
                while Instant::now() < deadline {
                    for m in 1..=12 {
                        let _ = c.request(&format!("JOIN {u} {m}"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    // every window has closed by now; the cron ticks end them
    let deadline = Instant::now() + Duration::from_secs(60);
    for m in 1..=12 {
        loop {
            let meeting = c.ok(&format!("MEETING GET {m}"));
            if meeting["instances"][0]["state"] == "ended" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "meeting {m} never ended: {meeting}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut joins = 0;
    for m in 1..=12 {
        let events = c.ok(&format!("EVENTS {m}/1"));
        let mut inside = std::collections::BTreeMap::new();
        for e in events["events"].as_array().expect("events") {
            // the instance's own start and end have no user
            let Some(user) = e["user"].as_u64() else {
                continue;
            };
            let was = inside.insert(user, e["type"] == "join").unwrap_or(false);
            if e["type"] == "join" {
                joins += 1;
                assert!(!was, "meeting {m}: user {user} joined twice: {events}");
            } else {
                assert!(
                    was,
                    "meeting {m}: user {user}: a {} without a join: {events}",
                    e["type"]
                );
            }
        }
        assert!(
            inside.values().all(|v| !v),
            "meeting {m}: every join matched once: {events}"
        );
    }
    assert!(joins > 12, "users got in: {joins}");
    redis.assert_consistent();
}
