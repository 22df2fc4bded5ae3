//! WATCH over a real socket to a real daemon: live delivery in order, the
//! resume seam, fan-out to a thousand watchers with one stalled watcher
//! dropped, and watchers released when their clients go.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Client, Daemon, Redis};

/// An RFC 3339 time `minutes` from now.
fn at(minutes: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(minutes))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Users 1..=3 and public meetings 1..=meetings, each with instance 1
/// active now (until 50 minutes from now).
fn active_meetings(c: &mut Client, meetings: u64) {
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
    let tick = c.ok("TICK");
    assert_eq!(
        tick["activated"].as_array().map(Vec::len),
        Some(meetings as usize),
        "{tick}"
    );
}

/// The next line a watcher receives, which must be an event.
fn event(watcher: &mut Client) -> Value {
    let line = watcher.reply().expect("the watch connection is open");
    assert!(line["event"].is_object(), "expected an event, got {line}");
    line["event"].clone()
}

fn stats(c: &mut Client) -> Value {
    c.ok("STATS")
}

#[test]
fn a_watcher_sees_its_instance_live_in_order_and_nothing_else() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut actor = daemon.client();
    active_meetings(&mut actor, 2);
    let mut watcher = daemon.client();
    assert_eq!(
        watcher.ok("WATCH 1"),
        serde_json::json!({"watching": "1/1"})
    );

    // each step on meeting 1 is preceded by one on meeting 2, which the
    // watcher must not see
    let steps: [(&str, &str, u64, Option<&str>); 5] = [
        ("JOIN 1 1", "join", 1, None),
        ("JOIN 2 1/1", "join", 2, None),
        (r#"POST 1 1 "hello, all""#, "message", 1, Some("hello, all")),
        ("LEAVE 1 1", "leave", 1, None),
        ("END 1/1", "timeout", 2, None),
    ];
    let mut last_id = String::new();
    for (request, kind, user, text) in steps {
        actor.ok("JOIN 3 2");
        actor.ok("LEAVE 3 2");
        let sent = Instant::now();
        let reply = actor.ok(request);
        let seen = event(&mut watcher);
        let latency = sent.elapsed();
        assert!(
            latency < Duration::from_millis(100),
            "{request}: the event came after {latency:?}"
        );
        assert_eq!(seen["type"], kind, "{request}: {seen}");
        assert_eq!(seen["user"], user, "{request}: {seen}");
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
        if kind == "timeout" {
            assert!(seen["scheduled_end"].is_string() && seen["processed_at"].is_string());
        }
        let id = seen["id"].as_str().expect("an id").to_string();
        assert!(
            last_id.is_empty() || id_key(&id) > id_key(&last_id),
            "{id} after {last_id}"
        );
        last_id = id;
    }

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
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
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
        serde_json::json!({"watching": "1/1"})
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
    assert_eq!(before["watch"]["instances"], 2, "one reader per instance");
    assert_eq!(readers_in_redis(&redis), 2, "one blocking reader each");
    drop(watchers);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = stats(&mut admin);
        if now["watch"]["watchers"] == 0 && now["watch"]["instances"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "watchers left behind: {now}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while readers_in_redis(&redis) > 0 {
        assert!(
            Instant::now() < deadline,
            "reader connections left open in Redis"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Redis connections whose last command was a blocking XREAD.
fn readers_in_redis(redis: &Redis) -> usize {
    redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| l.contains("cmd=xread"))
        .count()
}
