//! WATCH over a real socket to a real daemon: live delivery in order, the
//! resume seam, a thousand watched instances on one subscriber connection
//! per master, fan-out to a thousand watchers with one stalled watcher
//! dropped, watchers released when their clients go, a write made with
//! redis-cli, the subscriber connection killed mid-stream, a Redis restart,
//! a drain, and entries right after WATCH's reply as the last watch goes.
//! [`SCENARIOS`] run on a Redis Cluster as well
//! (`cluster::the_protocol_suite_on_a_cluster`).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Client, Daemon, Redis, at, wait_until};
use crate::socket::{Backend, Scenario};

/// The WATCH scenarios that run on any backend.
pub const SCENARIOS: [(&str, Scenario); 4] = [
    (
        "a watcher sees its instance live, in order",
        a_watcher_sees_its_instance_live_in_order_on,
    ),
    ("resume after a disconnect", resume_after_a_disconnect_on),
    (
        "1,000 watched instances, one subscriber connection per master",
        a_thousand_watched_instances_on,
    ),
    ("two daemons, one store", two_daemons_one_store_on),
];

#[test]
fn two_daemons_on_one_store_see_each_other_and_tick_once() {
    two_daemons_one_store_on(&Backend::single());
}

/// Two daemons on one store, as on two hosts: a watcher on one sees what
/// is done through the other, and ticks sent to both at the same instant
/// apply each transition once (no event twice).
fn two_daemons_one_store_on(backend: &Backend) {
    let a = backend.daemon(&[]);
    let b = backend.daemon(&[]);
    let mut via_a = a.client();
    let mut via_b = b.client();
    active_meetings(&mut via_a, 11);
    let mut watcher = a.client();
    watcher.ok("WATCH 1");
    via_b.ok("JOIN 1 1");
    via_b.ok(r#"POST 1 1 "through b""#);
    via_b.ok("LEAVE 1 1");
    let seen: Vec<(String, Option<String>)> = (0..3)
        .map(|_| {
            let e = event(&mut watcher);
            (
                e["type"].as_str().unwrap_or("?").to_string(),
                e["text"].as_str().map(String::from),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("join".to_string(), None),
            ("message".to_string(), Some("through b".to_string())),
            ("leave".to_string(), None)
        ]
    );
    // meetings 2..=11: users in instance 1, and instance 2 due now, which
    // ends instance 1 when it starts
    for m in 2..=11 {
        for u in 1..=3 {
            via_b.ok(&format!("JOIN {u} {m}"));
        }
        via_a.ok(&format!("INSTANCE SET {m} 2 from {} to {}", at(-1), at(50)));
    }
    let ticks: Vec<_> = [a.socket().to_path_buf(), b.socket().to_path_buf()]
        .into_iter()
        .map(|socket| {
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).expect("connect");
                c.ok("TICK")
            })
        })
        .collect();
    let mut activated = 0;
    for tick in ticks {
        activated += tick.join().expect("a tick")["activated"]
            .as_array()
            .map_or(0, Vec::len);
    }
    assert_eq!(activated, 10, "each instance 2 started by one tick");
    for m in 2..=11 {
        let events = via_a.ok(&format!("EVENTS {m}/1"));
        let timeouts: Vec<u64> = events["events"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|e| e["type"] == "timeout")
                    .filter_map(|e| e["user"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(timeouts, [1, 2, 3], "one timeout each in {m}/1: {events}");
    }
}

#[test]
fn a_thousand_watched_instances_hold_one_subscriber_connection() {
    a_thousand_watched_instances_on(&Backend::single());
}

/// 1,000 instances watched, spread over the partitions: the daemon holds
/// one subscriber connection per master (one on a single Redis), whatever
/// is watched, and its Redis connections in all stay a handful; every
/// watcher still gets its instance's entries.
fn a_thousand_watched_instances_on(backend: &Backend) {
    const WATCHED: u64 = 1000;
    let daemon = backend.daemon(&[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, WATCHED);
    let before = backend.connected_clients();
    let mut watchers: Vec<Client> = (1..=WATCHED)
        .map(|m| {
            let mut watcher = daemon.client();
            assert_eq!(
                watcher.ok(&format!("WATCH {m}"))["watching"],
                format!("{m}/1")
            );
            watcher
        })
        .collect();
    let masters = backend.masters();
    let readers = stats(&mut actor)["watch"]["readers"].as_u64();
    assert!(
        readers <= Some(masters),
        "{readers:?} subscriber connections"
    );
    let after = backend.connected_clients();
    eprintln!("Redis clients: {before} before, {after} with {WATCHED} watched instances");
    assert!(
        after <= before + masters,
        "{before} Redis clients before, {after} with {WATCHED} watched instances"
    );
    if masters == 1 {
        // the pool, the user cache's, the subscriber, and the test's own
        assert!(after <= 10, "{after} Redis clients in all");
    }
    for m in [1u64, 16, 17, 150, 193, 257, 640, 999, WATCHED] {
        actor.ok(&format!("JOIN 1 {m}"));
        actor.ok(&format!("POST 1 {m} \"to {m}\""));
        let watcher = &mut watchers[m as usize - 1];
        assert_eq!(event(watcher)["type"], "join");
        let message = event(watcher);
        assert_eq!(
            (message["meeting"].as_u64(), message["text"].as_str()),
            (Some(m), Some(format!("to {m}").as_str()))
        );
    }
    let log = daemon.log();
    assert!(!log.contains("subscribing failed"), "{log}");
    drop(watchers);
}

/// Users 1..=3 and public meetings 1..=meetings, each with instance 1
/// active now (until 50 minutes from now).
pub fn active_meetings(c: &mut Client, meetings: u64) {
    for u in 1..=3 {
        c.ok(&format!(
            "USER SET {u} name u{u} age 30 gender - email u{u}@example.com"
        ));
    }
    for m in 1..=meetings {
        c.ok(&format!(
            r#"MEETING SET {m} title "m{m}" description "" public true"#
        ));
        c.ok(&format!(
            "INSTANCE SET {m} 1 from {} to {}",
            at(-10),
            at(50)
        ));
    }
    // the daemon's own tick may come between the INSTANCE SETs and TICK
    // (at the turn of a minute) and start some: every one runs either way
    c.ok("TICK");
    let mut running = Vec::new();
    let mut after = String::new();
    loop {
        let page = c.ok(&format!("ACTIVE{after}"));
        for row in page["instances"].as_array().expect("rows") {
            running.push(row["meeting"].as_u64().expect("meeting"));
        }
        match page["next"].as_u64() {
            Some(next) => after = format!(" AFTER {next}"),
            None => break,
        }
    }
    running.sort_unstable();
    assert_eq!(running, (1..=meetings).collect::<Vec<_>>());
}

/// The next line a watcher receives, which must be an event.
pub fn event(watcher: &mut Client) -> Value {
    let line = watcher.reply().expect("the watch connection is open");
    assert!(line["event"].is_object(), "expected an event, got {line}");
    line["event"].clone()
}

/// The ids of the next `n` events a watcher receives.
pub fn event_ids(watcher: &mut Client, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| event(watcher)["id"].as_str().expect("an id").to_string())
        .collect()
}

fn stats(c: &mut Client) -> Value {
    c.ok("STATS")
}

#[test]
fn a_watcher_sees_its_instance_live_in_order_and_nothing_else() {
    a_watcher_sees_its_instance_live_in_order_on(&Backend::single());
}

fn a_watcher_sees_its_instance_live_in_order_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 2);
    let mut watcher = daemon.client();
    let last = actor.ok("EVENTS 1/1")["events"]
        .as_array()
        .and_then(|events| events.last())
        .map_or(Value::Null, |event| event["id"].clone());
    let watching = watcher.ok("WATCH 1");
    assert_eq!(watching["watching"], "1/1");
    if last.is_string() {
        assert_eq!(watching["resume"], last, "starts after the last entry");
    } else {
        assert!(watching["resume"].is_string(), "{watching}");
    }

    // each step on meeting 1 is preceded by one on meeting 2, which the
    // watcher must not see
    let steps: [(&str, &str, Option<u64>, Option<&str>); 5] = [
        ("JOIN 1 1", "join", Some(1), None),
        ("JOIN 2 1/1", "join", Some(2), None),
        (
            r#"POST 1 1 "hello, all""#,
            "message",
            Some(1),
            Some("hello, all"),
        ),
        ("LEAVE 1 1", "leave", Some(1), None),
        ("END 1/1", "end", None, None),
    ];
    let mut last_id = String::new();
    for (request, kind, user, text) in steps {
        actor.ok("JOIN 3 2");
        actor.ok("LEAVE 3 2");
        let reply = actor.ok(request);
        let seen = event(&mut watcher);
        assert_eq!(seen["type"], kind, "{request}: {seen}");
        assert_eq!(seen["user"].as_u64(), user, "{request}: {seen}");
        assert_eq!(
            (seen["meeting"].as_u64(), seen["order"].as_u64()),
            (Some(1), Some(1))
        );
        assert!(
            seen["at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{seen}"
        );
        if let Some(text) = text {
            assert_eq!(seen["text"], text);
            assert_eq!(
                seen["id"], reply["id"],
                "a message's event has the POST's id"
            );
        }
        if kind == "end" {
            assert!(seen["scheduled_end"].is_string() && seen["processed_at"].is_string());
            assert_eq!(seen["reason"], "ended");
        }
        let id = seen["id"].as_str().expect("an id").to_string();
        assert!(
            last_id.is_empty() || id_key(&id) > id_key(&last_id),
            "{id} after {last_id}"
        );
        last_id = id;
    }
    // the end, then the timeout of the one still in
    let timeout = event(&mut watcher);
    assert_eq!(
        (&timeout["type"], &timeout["user"]),
        (&"timeout".into(), &2.into())
    );
    assert!(timeout["scheduled_end"].is_string() && timeout["processed_at"].is_string());
    let id = timeout["id"].as_str().expect("an id");
    assert!(id_key(id) > id_key(&last_id), "{id} after {last_id}");

    // while watching: PING and a refused request, then UNWATCH
    assert_eq!(watcher.ok("PING"), "PONG");
    let refused = watcher.request("USER GET 1");
    assert_eq!(refused["error"]["code"], "bad_request", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("UNWATCH")),
        "{refused}"
    );
    assert_eq!(
        watcher.ok("UNWATCH"),
        serde_json::json!({"unwatched": "1/1"})
    );
    assert_eq!(watcher.ok("USER GET 1")["name"], "u1");
    assert_eq!(
        watcher.ok("UNWATCH"),
        serde_json::json!({"unwatched": null})
    );

    // the spec's errors
    assert_eq!(watcher.error_code("WATCH 1/9"), "not_found");
    assert_eq!(watcher.error_code("WATCH 9"), "not_found");
    assert_eq!(watcher.error_code("WATCH 1"), "inactive");
    assert_eq!(watcher.error_code("WATCH 1/1 AFTER soon"), "bad_request");
    assert_eq!(
        watcher.error_code("WATCH 1/1 AFTER 1-99999999999999999999"),
        "bad_request"
    );

    // watching again; QUIT while watching closes the connection
    watcher.ok("WATCH 2/1");
    assert_eq!(watcher.ok("QUIT"), "BYE");
    assert!(watcher.reply().is_none(), "closed after QUIT");
}

/// An id's place in the order.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("ms-seq");
    (
        ms.parse().expect("ms digits"),
        seq.parse().expect("seq digits"),
    )
}

#[test]
fn resume_after_a_disconnect_replays_exactly_what_was_missed_then_goes_live() {
    resume_after_a_disconnect_on(&Backend::single());
}

fn resume_after_a_disconnect_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 1);
    actor.ok("JOIN 1 1");

    let mut watcher = daemon.client();
    watcher.ok("WATCH 1/1");
    actor.ok(r#"POST 1 1 "m-0""#);
    let last = event(&mut watcher)["id"]
        .as_str()
        .expect("an id")
        .to_string();
    drop(watcher);

    // 50 events while nobody watches: joins, leaves and posts
    let mut missed = Vec::new();
    for i in 1..=50 {
        let reply = match i % 5 {
            1 => actor.ok("JOIN 2 1"),
            3 => actor.ok("LEAVE 2 1"),
            _ => actor.ok(&format!(r#"POST 1 1 "m-{i}""#)),
        };
        missed.push(reply);
    }

    // more posts go on while the watcher comes back: the seam must hold
    let path = daemon.socket().to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(&path).expect("connect");
        (0..100)
            .map(|i| c.ok(&format!(r#"POST 1 1 "live-{i}""#))["id"].clone())
            .collect::<Vec<_>>()
    });
    let mut watcher = daemon.client();
    assert_eq!(
        watcher.ok(&format!("WATCH 1/1 AFTER {last}")),
        serde_json::json!({"watching": "1/1", "resume": last})
    );
    let expected_missed: Vec<String> = missed
        .iter()
        .map(|r| r["id"].as_str().map(str::to_string).unwrap_or_default())
        .collect();
    let mut got = Vec::new();
    for _ in 0..50 {
        got.push(event(&mut watcher));
    }
    let got_ids: Vec<String> = got
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(got_ids, expected_missed, "exactly the 50 missed, in order");
    let live = writer.join().expect("the writer");
    for id in &live {
        let seen = event(&mut watcher);
        assert_eq!(
            &seen["id"], id,
            "the live posts follow, none twice, none lost"
        );
    }
}

#[test]
fn watchers_are_released_when_their_clients_go() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut admin = daemon.client();
    active_meetings(&mut admin, 2);
    let watchers: Vec<Client> = (0..10)
        .map(|i| {
            let mut c = daemon.client();
            c.ok(&format!("WATCH {}", 1 + i % 2));
            c
        })
        .collect();
    let before = stats(&mut admin);
    assert_eq!(before["watch"]["watchers"], 10, "{before}");
    assert_eq!(before["watch"]["instances"], 2, "{before}");
    // one subscriber connection for both
    assert_eq!(before["watch"]["readers"], 1, "{before}");
    wait_until("one subscriber in Redis", Duration::from_secs(5), || {
        subscribers_in_redis(&redis) == 1
    });
    drop(watchers);
    wait_until(
        "no watcher, instance or reader left",
        Duration::from_secs(5),
        || {
            let now = stats(&mut admin);
            now["watch"]["watchers"] == 0
                && now["watch"]["instances"] == 0
                && now["watch"]["readers"] == 0
        },
    );
    wait_until(
        "the subscriber connection to close in Redis",
        Duration::from_secs(5),
        || subscribers_in_redis(&redis) == 0,
    );
}

/// Connections that wait hold no buffers: 300 idle watchers (one per
/// instance, each sent an entry it received, so each read a request and
/// wrote through its buffers) leave `connections.buffered_bytes` at 0.
/// The counter does count: clients with half a request sent hold the
/// bytes until the rest comes, and the lines put together are answered.
#[test]
fn waiting_connections_hold_no_buffers() {
    const WATCHED: u64 = 300;
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, WATCHED);
    let mut watchers: Vec<Client> = (1..=WATCHED)
        .map(|m| {
            let mut watcher = daemon.client();
            watcher.ok(&format!("WATCH {m}"));
            watcher
        })
        .collect();
    for m in 1..=WATCHED {
        actor.ok(&format!("JOIN 1 {m}"));
    }
    for watcher in &mut watchers {
        assert_eq!(event(watcher)["type"], "join");
    }
    let buffered = |c: &mut Client| {
        let stats = stats(c);
        assert_eq!(stats["watch"]["watchers"], WATCHED, "{stats}");
        stats["connections"]["buffered_bytes"].as_u64()
    };
    // a watcher releases its buffers once its write is done, which may be
    // a moment after its client read the line
    wait_until(
        "no waiting connection to hold a buffer",
        Duration::from_secs(10),
        || buffered(&mut actor) == Some(0),
    );

    let mut halves: Vec<Client> = (0..20)
        .map(|_| {
            let mut c = daemon.client();
            c.send(b"PIN");
            c
        })
        .collect();
    wait_until("the half lines to be held", Duration::from_secs(10), || {
        buffered(&mut actor) >= Some(20 * 3)
    });
    for c in &mut halves {
        c.send(b"G\n");
        assert_eq!(c.reply().map(|r| r["result"].clone()), Some("PONG".into()));
    }
    wait_until(
        "the buffers of the completed lines to go",
        Duration::from_secs(10),
        || buffered(&mut actor) == Some(0),
    );
}

/// A JOIN and a POST made with redis-cli (FCALL, no daemon in the way)
/// reach a watcher: the library publishes what it writes, whoever calls
/// it.
#[test]
fn a_write_made_with_redis_cli_reaches_a_watcher() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 1);
    let mut watcher = daemon.client();
    watcher.ok("WATCH 1");
    let key = "meetingd:{p1}:meeting:1";
    let joined = redis.cli(&["FCALL", "meet_join", "1", key, "", "2", ""]);
    let posted = redis.cli(&["FCALL", "meet_post", "1", key, "", "2", "from redis-cli"]);
    let id = |answer: &str| answer.split_whitespace().nth(1).map(String::from);
    let join = event(&mut watcher);
    assert_eq!(
        join["id"].as_str().map(String::from),
        id(&joined),
        "{joined}"
    );
    assert_eq!(
        (join["type"].as_str(), join["user"].as_u64()),
        (Some("join"), Some(2))
    );
    let message = event(&mut watcher);
    assert_eq!(
        message["id"].as_str().map(String::from),
        id(&posted),
        "{posted}"
    );
    assert_eq!(message["text"], "from redis-cli");
}

/// The subscriber connection is killed (CLIENT KILL TYPE pubsub), again and
/// again, while a pipelined burst of posts is written: the watcher still
/// gets every entry once, in order; what was published while no
/// subscription held is read from the stream.
#[test]
fn the_subscriber_killed_mid_stream_loses_nothing() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 1);
    actor.ok("JOIN 1 1");
    let mut watcher = daemon.client();
    watcher.ok("WATCH 1");
    wait_until(
        "the subscriber to subscribe",
        Duration::from_secs(5),
        || subscribers_in_redis(&redis) == 1,
    );
    let mut sent = Vec::new();
    let mut kills = 0;
    for round in 0..10 {
        let lines: String = (0..50)
            .map(|i| format!("POST 1 1 \"round {round} post {i}\"\n"))
            .collect();
        actor.send(lines.as_bytes());
        let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        kills += killed.trim().parse::<u64>().unwrap_or(0);
        for _ in 0..50 {
            let reply = actor.reply().expect("a reply");
            assert_eq!(reply["ok"], true, "{reply}");
            sent.push(reply["result"]["id"].as_str().expect("an id").to_string());
        }
    }
    assert!(kills > 0, "no subscriber was killed");
    let seen: Vec<String> = event_ids(&mut watcher, sent.len());
    assert_eq!(seen, sent);
    // nothing more: a repeat would come before this
    let last = actor.ok("POST 1 1 last")["id"].clone();
    assert_eq!(event(&mut watcher)["id"], last);
    let log = daemon.log();
    assert!(log.contains("subscriber connection was lost"), "{log}");
}

/// Redis connections subscribed to a sharded channel.
fn subscribers_in_redis(redis: &Redis) -> usize {
    redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|f| f.starts_with("ssub=") && f != "ssub=0")
        })
        .count()
}

/// The id of an event line, without parsing the whole line.
fn line_id(line: &str) -> Option<&str> {
    let start = line.find(r#""id":""#)? + 6;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// An order-sensitive digest of ids (FNV-1a over them, separated).
fn digest<'a>(ids: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for byte in id.bytes().chain([b'|']) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// What one watcher saw: events counted, their digest, whether ids only
/// went up, and any line that was not an event.
#[derive(Debug, Default)]
struct Seen {
    count: u64,
    ids: Vec<String>,
    ordered: bool,
    other: Vec<String>,
}

/// Post `count` messages on one pipelined burst; their ids.
fn burst(c: &mut Client, prefix: &str, count: usize) -> Vec<String> {
    let lines: String = (0..count)
        .map(|i| format!("POST 1 1/1 \"{prefix}-{i}\"\n"))
        .collect();
    c.send(lines.as_bytes());
    (0..count)
        .map(|_| {
            let reply = c.reply().expect("a reply");
            assert_eq!(reply["ok"], true, "{reply}");
            reply["result"]["id"].as_str().expect("an id").to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_get_a_burst_and_a_stalled_one_is_dropped() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const WATCHERS: usize = 1000;
    meetingd::daemon::raise_file_limit(4096);
    let redis = Redis::start();
    let daemon = Daemon::start(
        &redis,
        &[
            ("MEETINGD_SOCKET__MAX_CONNECTIONS", "2048"),
            ("MEETINGD_WATCH__SEND_BUFFER_BYTES", "8192"),
        ],
    );
    let mut admin = daemon.client();
    active_meetings(&mut admin, 1);
    admin.ok("JOIN 1 1");

    let received: Arc<Vec<AtomicU64>> =
        Arc::new((0..WATCHERS).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WATCHERS {
        let path = daemon.socket().to_path_buf();
        let received = received.clone();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::UnixStream::connect(&path)
                .await
                .expect("connect");
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"WATCH 1/1\n").await.expect("send WATCH");
            let first = lines.next_line().await.expect("read").expect("a reply");
            assert!(first.contains(r#""watching":"1/1""#), "{first}");
            ready.fetch_add(1, Ordering::SeqCst);
            let mut seen = Seen {
                ordered: true,
                ..Seen::default()
            };
            while let Ok(Some(line)) = lines.next_line().await {
                match line_id(&line).filter(|_| line.starts_with(r#"{"event":"#)) {
                    Some(id) => {
                        if seen
                            .ids
                            .last()
                            .is_some_and(|last| id_key(last) >= id_key(id))
                        {
                            seen.ordered = false;
                        }
                        seen.ids.push(id.to_string());
                        seen.count += 1;
                        received[w].store(seen.count, Ordering::SeqCst);
                        if line.contains(r#""text":"the end""#) {
                            break;
                        }
                    }
                    None => {
                        seen.other.push(line);
                        break;
                    }
                }
            }
            seen
        }));
    }
    // the stalled watcher: asks, then never reads again
    let mut stalled = daemon.client();
    stalled.ok("WATCH 1/1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::SeqCst) < WATCHERS as u64 {
        assert!(Instant::now() < deadline, "watchers did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats(&mut admin)["watch"]["watchers"], WATCHERS as u64 + 1);
    assert_eq!(stats(&mut admin)["watch"]["instances"], 1);

    let wait_for_all = |total: u64| {
        let received = received.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let behind = received
                    .iter()
                    .filter(|r| r.load(Ordering::SeqCst) < total)
                    .count();
                if behind == 0 {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{behind} watchers never got all {total} events"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // a burst of 1,000 events: every reading watcher gets all of them
    let mut poster = daemon.client();
    let mut posted = burst(&mut poster, "burst", 1000);
    wait_for_all(posted.len() as u64).await;

    // go on, in rounds every reader keeps up with, until the stalled
    // watcher is a ring behind and dropped
    let mut rounds = 0;
    while stats(&mut admin)["watch"]["watchers_dropped"] == 0 {
        rounds += 1;
        assert!(rounds <= 30, "the stalled watcher was never dropped");
        posted.extend(burst(&mut poster, &format!("round{rounds}"), 200));
        wait_for_all(posted.len() as u64).await;
    }
    let after_drop = stats(&mut admin);
    assert_eq!(after_drop["watch"]["watchers_dropped"], 1, "{after_drop}");
    assert!(after_drop["watch"]["dropped_events"].as_u64() > Some(0));
    posted.push(
        poster.ok(r#"POST 1 1/1 "the end""#)["id"]
            .as_str()
            .expect("an id")
            .to_string(),
    );

    let expected = digest(posted.iter().map(String::as_str));
    for task in tasks {
        let seen = task.await.expect("a watcher task");
        assert!(seen.other.is_empty(), "a reader got {:?}", seen.other);
        assert!(seen.ordered, "ids went back");
        assert_eq!(seen.count, posted.len() as u64);
        assert_eq!(digest(seen.ids.iter().map(String::as_str)), expected);
    }

    // the stalled watcher finds what it was sent, then the drop notice
    let mut got = Vec::new();
    let notice = loop {
        let line = stalled.reply().expect("the stalled connection is open");
        match line["event"]["id"].as_str() {
            Some(id) => got.push(id.to_string()),
            None => break line,
        }
    };
    assert_eq!(
        got[..],
        posted[..got.len()],
        "what it got is a prefix, in order"
    );
    assert!(notice["dropped"].as_u64() > Some(0), "{notice}");
    assert_eq!(
        notice["resume"].as_str(),
        got.last().map(String::as_str),
        "{notice}"
    );
    // it is back in request mode and resumes where it was
    let resume = format!("WATCH 1/1 AFTER {}", got.last().expect("got some"));
    assert_eq!(stalled.ok(&resume)["watching"], "1/1");
    let mut rest = Vec::new();
    while rest.len() + got.len() < posted.len() {
        rest.push(
            event(&mut stalled)["id"]
                .as_str()
                .expect("an id")
                .to_string(),
        );
    }
    assert_eq!(rest[..], posted[got.len()..], "the rest, from where it was");
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(&mut admin)["watch"]["watchers"] != 0 {
        assert!(Instant::now() < deadline, "watchers left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_watch_outlives_a_redis_restart_without_a_gap() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__TIMEOUT_MS", "500")]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 1);
    actor.ok("JOIN 1 1");
    let mut watcher = daemon.client();
    watcher.ok("WATCH 1/1");
    let before = actor.ok(r#"POST 1 1 "before""#);
    assert_eq!(event(&mut watcher)["id"], before["id"]);

    redis.stop();
    std::thread::sleep(Duration::from_millis(1500));
    redis.restart();
    // the daemon reconnects by itself; the first requests may still fail
    // (one that timed out may have been stored: the key makes the retry
    // answer the same message)
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let reply = actor.request(r#"POST 1 1 "after" ID after"#);
        if reply["ok"] == true {
            break reply["result"].clone();
        }
        assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
        assert!(Instant::now() < deadline, "the daemon did not recover");
        std::thread::sleep(Duration::from_millis(100));
    };
    let seen = event(&mut watcher);
    assert_eq!(seen["id"], after["id"], "the next entry, once: {seen}");
    assert_eq!(seen["text"], "after");
}

/// A drain tells each watcher where to resume (the last entry it was
/// sent), closes its connection, and exits 0.
#[test]
fn a_drain_closes_watching_connections_and_exits_0() {
    let redis = Redis::start();
    let mut daemon = Daemon::start(&redis, &[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 1);
    let mut watcher = daemon.client();
    watcher.ok("WATCH 1/1");
    actor.ok("JOIN 1 1");
    let posted = actor.ok("POST 1 1 last");
    let mut seen = event(&mut watcher);
    while seen["id"] != posted["id"] {
        seen = event(&mut watcher);
    }
    // SAFETY: signalling the daemon this test started, by its pid.
    unsafe {
        libc::kill(daemon.pid() as libc::pid_t, libc::SIGTERM);
    }
    let status = daemon
        .wait(Duration::from_secs(10))
        .expect("the daemon exits when drained");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert_eq!(
        watcher.reply(),
        Some(serde_json::json!({"closing": "shutdown", "resume": posted["id"]}))
    );
    assert!(watcher.reply().is_none(), "the watch connection was closed");
}

/// A pipelined burst of joins, posts and leaves (the event log and the chat
/// interleaved): the watcher gets every entry of both streams once, in the
/// order they happened.
#[test]
fn a_burst_over_both_streams_reaches_the_watcher_whole_and_in_order() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 1);
    let mut watcher = daemon.client();
    watcher.ok("WATCH 1");
    let mut lines = String::new();
    for round in 0..20 {
        let user = 1 + round % 3;
        lines.push_str(&format!(
            "JOIN {user} 1\nPOST {user} 1 \"round {round}\"\nLEAVE {user} 1\n"
        ));
    }
    actor.send(lines.as_bytes());
    let sent: Vec<String> = (0..60)
        .map(|_| {
            let reply = actor.reply().expect("a reply");
            assert_eq!(reply["ok"], true, "{reply}");
            reply["result"]["id"].as_str().expect("an id").to_string()
        })
        .collect();
    let seen: Vec<String> = event_ids(&mut watcher, 60);
    assert_eq!(seen, sent);
    assert!(
        sent.windows(2).all(|w| id_key(&w[0]) < id_key(&w[1])),
        "one sequence: {sent:?}"
    );
}

/// A watch gets what happens right after its reply, whatever its
/// subscription is doing: round after round on one instance, a JOIN, a
/// POST and a LEAVE go out as soon as WATCH has answered (before the
/// subscription is confirmed, or while a fill from the streams runs), and
/// the last watch of the instance was closed just before (its channel
/// let go of while the new one opens), let go of by UNWATCH, or is still
/// there. Each watch gets the three entries, in order, nothing else.
#[test]
fn a_watch_just_started_gets_what_follows_as_the_last_one_goes() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 1);
    let mut previous: Option<Client> = None;
    for round in 0..90 {
        match round % 3 {
            // the connection closes: the daemon lets go when it reads that
            0 => drop(previous.take()),
            1 => {
                if let Some(last) = previous.as_mut() {
                    assert_eq!(last.ok("UNWATCH")["unwatched"], "1/1");
                }
            }
            // kept: the channel stays open under the new watch
            _ => {}
        }
        let mut watcher = daemon.client();
        assert_eq!(watcher.ok("WATCH 1")["watching"], "1/1");
        let user = 1 + round % 3;
        let sent: Vec<String> = [
            format!("JOIN {user} 1"),
            format!(r#"POST {user} 1 "round {round}""#),
            format!("LEAVE {user} 1"),
        ]
        .iter()
        .map(|request| {
            let reply = actor.ok(request);
            reply["id"].as_str().expect("an id").to_string()
        })
        .collect();
        // each read fails the test after the client's read timeout
        let seen: Vec<String> = event_ids(&mut watcher, 3);
        assert_eq!(seen, sent, "round {round}");
        previous = Some(watcher);
    }
    // nothing more came to the last watch: PING is answered next
    let mut last = previous.expect("the last watch");
    assert_eq!(last.ok("PING"), "PONG");
}
