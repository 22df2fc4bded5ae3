//! The control socket, spoken over a real socket to a real `meetingd serve`
//! on a real redis-server: every command and every error code, the seed
//! scenario, pipelining, concurrency, malformed input, admin rights, limits
//! and Redis trouble.
//!
//! The scenarios of the protocol itself ([`SCENARIOS`]) take a [`Backend`]:
//! each runs here as a test of its own on a single Redis, and all of them in
//! `cluster::the_protocol_suite_on_a_cluster` on one Redis Cluster.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Cluster;
use crate::harness::{Client, Daemon, HoldingRelay, Redis, at, free_port};

/// Where the daemon of a scenario keeps its data.
pub enum Backend {
    /// A redis-server of the test's own.
    Single(Redis),
    /// A Redis Cluster, shared by the scenarios run on it one after the
    /// other (flushed in between).
    Cluster(Cluster),
}

impl Backend {
    /// A single redis-server of the test's own.
    pub fn single() -> Backend {
        Backend::Single(Redis::start())
    }

    /// A daemon on this backend, with settings given as environment
    /// variables; ready to answer.
    pub fn daemon(&self, env: &[(&str, &str)]) -> Daemon {
        match self {
            Backend::Single(redis) => Daemon::start(redis, env),
            Backend::Cluster(cluster) => Daemon::start_on_cluster(&cluster.urls(), env),
        }
    }

    /// redis-cli on the data (in cluster mode on a cluster: redirections
    /// followed); its output.
    pub fn cli(&self, args: &[&str]) -> String {
        match self {
            Backend::Single(redis) => redis.cli(args),
            Backend::Cluster(cluster) => cluster.cli_cluster(args),
        }
    }

    /// The masters of the backend (one for a single Redis).
    pub fn masters(&self) -> u64 {
        match self {
            Backend::Single(_) => 1,
            Backend::Cluster(cluster) => cluster.ports().len() as u64,
        }
    }

    /// Clients connected to Redis (on a cluster, to all its nodes).
    pub fn connected_clients(&self) -> u64 {
        let count = |info: String| {
            info.lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        match self {
            Backend::Single(redis) => count(redis.cli(&["INFO", "clients"])),
            Backend::Cluster(cluster) => cluster
                .ports()
                .iter()
                .map(|p| count(cluster.cli(*p, &["INFO", "clients"])))
                .sum(),
        }
    }

    /// A digest of all data (every node's): equal before and after means
    /// nothing was written.
    pub fn digest(&self) -> String {
        let digests = match self {
            Backend::Single(redis) => vec![redis.cli(&["DEBUG", "DIGEST"])],
            Backend::Cluster(cluster) => cluster
                .ports()
                .iter()
                .map(|p| cluster.cli(*p, &["DEBUG", "DIGEST"]))
                .collect(),
        };
        for digest in &digests {
            let digest = digest.trim();
            assert!(
                digest.len() == 40 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                "DEBUG DIGEST: {digest:?}"
            );
        }
        digests.concat()
    }

    /// Forget all data (the library stays).
    pub fn flush(&self) {
        match self {
            Backend::Single(redis) => assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK"),
            Backend::Cluster(cluster) => cluster.flush(),
        }
    }

    /// Keep every server busy (DEBUG SLEEP) for `seconds`, from other
    /// threads.
    pub fn sleep_in_background(&self, seconds: f64) -> std::thread::JoinHandle<()> {
        match self {
            Backend::Single(redis) => redis.sleep_in_background(seconds),
            Backend::Cluster(cluster) => cluster.sleep_in_background(seconds),
        }
    }
}

/// A scenario: it starts its own daemon on the backend it is given.
pub type Scenario = fn(&Backend);

/// The scenarios of the protocol, run on a single Redis and on a cluster.
/// The error codes come last: they keep the servers busy for a while.
pub const SCENARIOS: [(&str, Scenario); 8] = [
    ("the seed scenario", seed_scenario_on),
    ("every command answers", every_command_answers_on),
    ("pipelining 10,000 requests", pipelining_10000_requests_on),
    (
        "pipelined requests apply in order",
        pipelined_requests_apply_in_order_on,
    ),
    ("concurrent connections", concurrent_connections_on),
    ("the listings", crate::listings::listings_on),
    (
        "malformed input changes nothing",
        malformed_input_changes_nothing_on,
    ),
    ("every error code", every_error_code_on),
];

fn users(result: &Value) -> Vec<u64> {
    result
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["user"].as_u64().expect("a user id"))
        .collect()
}

/// Three users; public meeting 1, private meetings 2 (Ada and Bob) and 3
/// (nobody); each with a past, a current and a future instance; a tick.
fn seed(c: &mut Client) {
    c.ok("USER SET 1 name Ada age 36 gender female email ADA@example.com");
    c.ok("USER SET 2 name Bob age 41 gender male email bob@example.com");
    c.ok(r#"USER SET 3 name "Cy Young" age 29 gender other email cy@example.com"#);
    c.ok(r#"MEETING SET 1 title "Town hall" description "all hands" public true"#);
    c.ok(r#"MEETING SET 2 title Board description "" public false"#);
    c.ok(r#"MEETING SET 3 title Secret description "nobody" public false"#);
    c.ok("AUDIENCE ADD 2 ada@example.com BOB@example.com");
    for m in 1..=3 {
        c.ok(&format!(
            "INSTANCE SET {m} 1 from {} to {}",
            at(-120),
            at(-60)
        ));
        c.ok(&format!(
            "INSTANCE SET {m} 2 from {} to {}",
            at(-10),
            at(50)
        ));
        c.ok(&format!(
            "INSTANCE SET {m} 3 from {} to {}",
            at(60),
            at(120)
        ));
    }
    let tick = c.ok("TICK");
    assert_eq!(
        tick["activated"].as_array().map(Vec::len),
        Some(3),
        "{tick}"
    );
    assert_eq!(tick["missed"].as_array().map(Vec::len), Some(3), "{tick}");
}

#[test]
fn the_seed_scenario_end_to_end() {
    seed_scenario_on(&Backend::single());
}

fn seed_scenario_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    seed_scenario(&mut daemon.client());
}

/// The seed documents' scenario over a connection to a fresh daemon.
fn seed_scenario(c: &mut Client) {
    seed(c);

    // joins allowed and refused
    let joined = c.ok("JOIN 1 1");
    assert_eq!(
        (joined["meeting"].as_u64(), joined["order"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(
        joined["joined_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24)
    );
    c.ok("JOIN 2 1/2");
    c.ok("JOIN 3 1");
    c.ok("JOIN 1 2");
    c.ok("JOIN 2 2");
    assert_eq!(c.error_code("JOIN 3 2"), "not_allowed");
    assert_eq!(c.error_code("JOIN 1 3"), "not_allowed");
    assert_eq!(c.error_code("JOIN 1 1/3"), "inactive");
    assert_eq!(c.error_code("JOIN 1 1/1"), "inactive");
    assert_eq!(c.error_code("JOIN 1 1"), "already_joined");

    // participants in join order, with names and e-mails, paged
    let everybody = c.ok("PARTICIPANTS 1");
    assert_eq!(users(&everybody), [1, 2, 3]);
    assert_eq!(everybody[0]["name"], "Ada");
    assert_eq!(everybody[0]["email"], "ada@example.com");
    assert_eq!(users(&c.ok("PARTICIPANTS 1/2 AFTER 1 LIMIT 1")), [2]);
    assert_eq!(users(&c.ok("PARTICIPANTS 1 LIMIT 2")), [1, 2]);

    // chat in order, and per user
    c.ok("POST 1 1 hello");
    c.ok(r#"POST 2 1 "hi \"Ada\"""#);
    c.ok(r#"POST 1 1 "second line\nthird""#);
    assert_eq!(c.error_code("POST 1 1/3 nope"), "inactive");
    assert_eq!(c.error_code("POST 1 3 nope"), "not_joined");
    let chat = c.ok("MESSAGES 1");
    let texts: Vec<&str> = chat["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["hello", "hi \"Ada\"", "second line\nthird"]);
    assert_eq!(chat["next"], Value::Null);
    let ada = c.ok("MESSAGES 1 USER 1");
    assert_eq!(ada["messages"].as_array().map(Vec::len), Some(2));
    let first = c.ok("MESSAGES 1 LIMIT 2");
    let next = first["next"].as_str().expect("a next page").to_string();
    let rest = c.ok(&format!("MESSAGES 1 AFTER {next}"));
    assert_eq!(rest["messages"][0]["text"], "second line\nthird");

    // active meetings and attendance
    let active = c.ok("ACTIVE");
    assert_eq!(active["instances"].as_array().map(Vec::len), Some(3));
    assert_eq!(active["next"], serde_json::Value::Null);
    let town = active["instances"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["meeting"] == 1))
        .expect("the town hall is active");
    assert_eq!(town["participants"], 3);
    assert_eq!(town["public"], true);
    assert_eq!(town["title"], "Town hall");
    let attendance = c.ok("ATTENDANCE");
    assert_eq!(attendance["next"], serde_json::Value::Null);
    let board = attendance["instances"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["meeting"] == 2))
        .expect("the board attended");
    assert_eq!(users(&board["participants"]), [1, 2]);

    // leave, end with timeouts, history readable after the end
    let left = c.ok("LEAVE 2 1");
    assert!(left["left_at"].is_string());
    assert_eq!(c.error_code("LEAVE 2 1"), "not_joined");
    let ended = c.ok("END 1");
    assert_eq!(ended["timed_out"], serde_json::json!([1, 3]));
    assert_eq!(c.error_code("END 1"), "inactive");
    assert_eq!(c.error_code("JOIN 2 1"), "inactive");
    assert_eq!(c.ok("PARTICIPANTS 1/2"), serde_json::json!([]));
    let events = c.ok("EVENTS 1/2");
    let log: Vec<(Option<u64>, &str, u64)> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["user"].as_u64(),
                e["type"].as_str().expect("type"),
                e["code"].as_u64().expect("code"),
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            (None, "start", 4),
            (Some(1), "join", 1),
            (Some(2), "join", 1),
            (Some(3), "join", 1),
            (Some(2), "leave", 2),
            (None, "end", 5),
            (Some(1), "timeout", 3),
            (Some(3), "timeout", 3)
        ]
    );
    assert_eq!(events["events"][5]["reason"], "ended");
    let timeout = &events["events"][6];
    assert!(timeout["scheduled_end"].is_string() && timeout["processed_at"].is_string());
    assert_eq!(
        c.ok("MESSAGES 1/2")["messages"].as_array().map(Vec::len),
        Some(3)
    );
    let report = c.ok("REPORT 1/2");
    let reported: Vec<(u64, u64)> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["user"].as_u64().expect("user"),
                r["joins"].as_u64().expect("joins"),
            )
        })
        .collect();
    assert_eq!(reported, [(1, 1), (2, 1), (3, 1)], "{report}");

    // the meeting shows its instances' states
    let meeting = c.ok("MEETING GET 1");
    let states: Vec<&str> = meeting["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["ended", "ended", "scheduled"]);
    assert_eq!(
        c.ok("MEETING GET 2")["audience"],
        serde_json::json!(["ada@example.com", "bob@example.com"])
    );
    let user = c.ok("USER GET 3");
    assert_eq!(
        user,
        serde_json::json!({"id": 3, "name": "Cy Young", "age": 29, "gender": "other", "email": "cy@example.com"})
    );
}

#[test]
fn every_command_answers() {
    every_command_answers_on(&Backend::single());
}

fn every_command_answers_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    let mut c = daemon.client();
    assert_eq!(c.ok("PING"), "PONG");
    assert_eq!(c.ok("ping"), "PONG", "command names are case-insensitive");
    let help = c.ok("HELP");
    assert_eq!(help["commands"].as_array().map(Vec::len), Some(26));
    assert_eq!(c.ok("HELP join")["syntax"], "JOIN <user> <mref> [ID <key>]");
    assert_eq!(
        c.ok("HELP USER")["commands"].as_array().map(Vec::len),
        Some(2)
    );
    seed(&mut c);
    c.ok("AUDIENCE DEL 2 bob@example.com");
    assert_eq!(
        c.ok("MEETING GET 2")["audience"],
        serde_json::json!(["ada@example.com"])
    );
    let stats = c.ok("STATS");
    assert_eq!(stats["connections"]["open"], 1);
    assert!(stats["requests"]["TICK"].as_u64() >= Some(1));
    assert!(stats["redis_rtt_ms"].as_f64().is_some());
    // latency percentiles per command that ran, in order
    let instance_set = &stats["latency"]["INSTANCE SET"];
    assert_eq!(instance_set["count"], 9, "{stats}");
    let p = |q: &str| instance_set[q].as_f64().unwrap_or(-1.0);
    assert!(p("p50_ms") > 0.0, "{instance_set}");
    assert!(p("p50_ms") <= p("p90_ms") && p("p90_ms") <= p("p99_ms"));
    assert!(p("p99_ms") <= p("p999_ms") && p("p999_ms") <= p("max_ms"));
    assert!(stats["latency"]["JOIN"].is_null(), "no JOIN ran: {stats}");
    assert_eq!(stats["errors"]["not_found"], 0);
    c.error_code("USER GET 77");
    let stats = c.ok("STATS");
    assert_eq!(stats["errors"]["not_found"], 1);
    assert_eq!(stats["errors_by_command"]["USER GET"], 1);
    assert_eq!(stats["errors_by_command"]["USER SET"], 0);
    assert_eq!(c.ok("QUIT"), "BYE");
    assert!(c.reply().is_none(), "QUIT closes the connection");
}

/// Every error code of the spec from the socket (permission_denied and
/// unavailable have tests of their own, too_large as well).
#[test]
fn every_error_code() {
    every_error_code_on(&Backend::single());
}

fn every_error_code_on(backend: &Backend) {
    let daemon = backend.daemon(&[
        ("MEETINGD_LIMITS__CHAT_TEXT_BYTES", "100"),
        ("MEETINGD_REDIS__TIMEOUT_MS", "500"),
    ]);
    let mut c = daemon.client();
    seed(&mut c);
    c.ok("JOIN 1 1");
    let cases = [
        ("JOIN x 1", "bad_request"),
        ("FROB", "unknown_command"),
        ("SUBSCRIBE 1", "unknown_command"),
        ("USER GET 99", "not_found"),
        ("MEETING GET 99", "not_found"),
        ("JOIN 1 99", "not_found"),
        ("JOIN 1 1/99", "not_found"),
        ("JOIN 99 1", "not_found"),
        ("JOIN 1 1/3", "inactive"),
        ("JOIN 3 2", "not_allowed"),
        ("JOIN 1 1", "already_joined"),
        ("LEAVE 2 1", "not_joined"),
        // a user that does not exist is not_found whatever else applies,
        // as for JOIN
        ("LEAVE 99 1", "not_found"),
        ("LEAVE 99 1/3", "not_found"),
        ("POST 99 1 hi", "not_found"),
        ("POST 99 1/3 hi", "not_found"),
        ("POST 99 1/99 hi", "not_found"),
        // and a known user keeps the refusal of the instance
        ("LEAVE 2 1/3", "inactive"),
        ("POST 2 1 hi", "not_joined"),
        ("MESSAGES 1 LIMIT 1001", "bad_request"),
    ];
    for (line, code) in cases {
        assert_eq!(c.error_code(line), code, "{line}");
    }
    let long_text = format!("POST 1 1 {}", "x".repeat(101));
    assert_eq!(c.error_code(&long_text), "too_large");
    assert_eq!(
        c.ok("PING"),
        "PONG",
        "a long text does not close the connection"
    );
    // internal: a corrupt schedule entry in Redis
    let corrupt = backend.cli(&["HSET", "meetingd:{p1}:schedule:1", "2", "garbage"]);
    assert_eq!(
        corrupt.trim(),
        "0",
        "the entry of 1/2 overwritten: {corrupt}"
    );
    assert_eq!(c.error_code("EVENTS 1/2"), "internal");
    // unavailable: Redis too slow for the timeout (Redis gone: below)
    let sleeper = backend.sleep_in_background(1.5);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.error_code("USER GET 1"), "unavailable");
    sleeper.join().expect("sleeper");
}

#[test]
fn pipelining_10000_requests_in_one_write() {
    pipelining_10000_requests_on(&Backend::single());
}

fn pipelining_10000_requests_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    let mut c = daemon.client();
    for u in 1..=50 {
        c.ok(&format!(
            "USER SET {u} name U{u} age 20 gender x email u{u}@x"
        ));
    }
    let mut batch = String::new();
    for i in 0..10_000u64 {
        if i % 97 == 0 {
            batch.push_str("USER GET 999\n");
        } else {
            batch.push_str(&format!("USER GET {}\n", 1 + i % 50));
        }
    }
    // write from another thread: the daemon answers while we still send
    let mut writer = c.try_clone_writer();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(batch.as_bytes()).expect("send the batch");
    });
    for i in 0..10_000u64 {
        let reply = c.reply().expect("a reply for every request");
        if i % 97 == 0 {
            assert_eq!(reply["error"]["code"], "not_found", "reply {i}");
        } else {
            assert_eq!(reply["result"]["id"], 1 + i % 50, "reply {i} in order");
        }
    }
    sender.join().expect("sender");
    assert_eq!(c.ok("PING"), "PONG");
}

#[test]
fn pipelined_requests_apply_in_order() {
    pipelined_requests_apply_in_order_on(&Backend::single());
}

fn pipelined_requests_apply_in_order_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    let mut c = daemon.client();
    seed(&mut c);
    c.send(b"JOIN 2 1\nPOST 2 1 first\nLEAVE 2 1\nJOIN 2 1\nPARTICIPANTS 1\n");
    for _ in 0..4 {
        let reply = c.reply().expect("reply");
        assert_eq!(reply["ok"], true, "{reply}");
    }
    assert_eq!(users(&c.reply().expect("reply")["result"]), [2]);
}

/// Requests a client sends together go to Redis together: a JOIN and a
/// LEAVE in one write both reach Redis before the JOIN's reply is back (a
/// relay holds Redis' replies until it has seen both, for at most 5 s).
#[test]
fn requests_sent_together_go_to_redis_together() {
    let redis = Redis::start();
    let relay = HoldingRelay::start(&redis);
    let daemon = Daemon::start_on_url(&relay.url(), &[]);
    let mut c = daemon.client();
    seed(&mut c);
    // the user's e-mail in the daemon's cache: one call per request now
    c.ok("JOIN 1 1");
    c.ok("LEAVE 1 1");
    relay.hold(&["meet_join", "meet_leave"], Duration::from_secs(5));
    c.send(b"JOIN 1 1\nLEAVE 1 1\n");
    for _ in 0..2 {
        let reply = c.reply().expect("reply");
        assert_eq!(reply["ok"], true, "{reply}; sent: {:?}", relay.sent());
    }
    assert!(
        !relay.timed_out(),
        "the LEAVE was sent to Redis only after the JOIN's reply"
    );
}

#[test]
fn concurrent_connections_and_one_user_joining_from_50() {
    concurrent_connections_on(&Backend::single());
}

fn concurrent_connections_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    let mut c = daemon.client();
    seed(&mut c);
    // 100 connections at once, each doing a little
    let socket = daemon.socket().to_path_buf();
    let workers: Vec<_> = (0..100)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).expect("connect");
                assert_eq!(c.ok("PING"), "PONG");
                c.ok(&format!("USER GET {}", 1 + i % 3))["id"].as_u64()
            })
        })
        .collect();
    for w in workers {
        assert!(w.join().expect("worker").is_some());
    }
    // 50 connections join the same user to the same instance at once
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(50));
    let joins: Vec<_> = (0..50)
        .map(|_| {
            let socket = socket.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).expect("connect");
                barrier.wait();
                let reply = c.request("JOIN 3 1/2");
                match reply["ok"].as_bool() {
                    Some(true) => "ok".to_string(),
                    _ => reply["error"]["code"].as_str().unwrap_or("?").to_string(),
                }
            })
        })
        .collect();
    let outcomes: Vec<String> = joins
        .into_iter()
        .map(|j| j.join().expect("join thread"))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "ok").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "already_joined").count(),
        49,
        "{outcomes:?}"
    );
    let events = c.ok("EVENTS 1/2");
    let joins_of_3 = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["user"] == 3 && e["type"] == "join")
        .count();
    assert_eq!(joins_of_3, 1);
}

/// A corpus of malformed lines: each gets its code, nothing is written, and
/// the same connection answers PING afterwards.
#[test]
fn malformed_input_changes_nothing() {
    malformed_input_changes_nothing_on(&Backend::single());
}

fn malformed_input_changes_nothing_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    let mut c = daemon.client();
    seed(&mut c);
    c.ok("JOIN 1 1");
    let digest = || backend.digest();
    let before = digest();
    let backwards = format!("INSTANCE SET 1 9 from {} to {}\n", at(60), at(0));
    let vague_start = format!("INSTANCE SET 1 9 from yesterday to {}\n", at(60));
    let over_u64 = format!("JOIN {} 1\n", u128::from(u64::MAX) + 1);
    let corpus: Vec<(&[u8], &str)> = vec![
        (b"JOIN 2 1 \xff\xfe\n", "bad_request"),
        (
            b"USER SET 4 name \xc3\x28 age 1 gender x email a@x\n",
            "bad_request",
        ),
        (b"POST 1 1 hi\x00there\n", "bad_request"),
        (b"PING\x00\n", "bad_request"),
        (b"POST 1 1 \"unterminated\n", "bad_request"),
        (b"POST 1 1 \"bad \\q escape\"\n", "bad_request"),
        (b"POST 1 1 \"bad \\u12 escape\"\n", "bad_request"),
        (b"JOIN 0 1\n", "bad_request"),
        (b"JOIN -1 1\n", "bad_request"),
        (over_u64.as_bytes(), "bad_request"),
        (b"JOIN 9007199254740992 1\n", "bad_request"),
        (b"JOIN 2 3/x\n", "bad_request"),
        (b"JOIN 2 1/2 extra\n", "bad_request"),
        (b"LEAVE 1\n", "bad_request"),
        (
            b"USER SET 4 name Dee age 151 gender x email d@x\n",
            "bad_request",
        ),
        (
            b"USER SET 4 name Dee age 15 gender x email no-at-sign\n",
            "bad_request",
        ),
        (
            b"USER SET 4 name \"Dee\\u0001\" age 15 gender x email d@x\n",
            "bad_request",
        ),
        (backwards.as_bytes(), "bad_request"),
        (vague_start.as_bytes(), "bad_request"),
        (
            b"MEETING SET 9 title T description d public maybe\n",
            "bad_request",
        ),
        (b"AUDIENCE ADD 2\n", "bad_request"),
        (b"POST 1 1 \"\"\n", "bad_request"),
        (b"\n", "bad_request"),
        (b"FROB 1 2\n", "unknown_command"),
    ];
    for (line, code) in &corpus {
        c.send(line);
        let reply = c.reply().expect("a reply, and the connection stays open");
        assert_eq!(
            reply["error"]["code"],
            *code,
            "{:?}: {reply}",
            String::from_utf8_lossy(line)
        );
        let message = reply["error"]["message"].as_str().unwrap_or("");
        assert!(
            !message.is_empty(),
            "{:?} explains itself",
            String::from_utf8_lossy(line)
        );
        assert_eq!(
            c.ok("PING"),
            "PONG",
            "after {:?}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(digest(), before, "no malformed request wrote anything");

    // a 70 KiB line: too_large, the connection may close, a new one works
    let mut long = b"POST 1 1 ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 70 * 1024));
    long.push(b'\n');
    c.send(&long);
    assert_eq!(c.reply().expect("too_large")["error"]["code"], "too_large");
    assert_eq!(digest(), before);
    let mut fresh = daemon.client();
    assert_eq!(fresh.ok("PING"), "PONG");
}

#[test]
fn a_non_admin_peer_is_denied_admin_commands_only() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running a client under another uid needs root (CI runs as root)");
        return;
    }
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_SOCKET__MODE", "0666")]);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let mut c = daemon.client();
    seed(&mut c);
    // a copy of meetingctl that uid 65534 may run
    let ctl = daemon.dir().join("meetingctl");
    std::fs::copy(env!("CARGO_BIN_EXE_meetingctl"), &ctl).expect("copy meetingctl");
    let run = |line: &str| -> (i32, String) {
        use std::os::unix::process::CommandExt;
        let out = crate::harness::output_of(
            std::process::Command::new(&ctl)
                .arg("--socket")
                .arg(daemon.socket())
                .arg("--json")
                .arg("raw")
                .arg(line)
                .uid(65534)
                .gid(65534),
        )
        .expect("run meetingctl as nobody");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for line in [
        "USER SET 9 name N age 1 gender x email n@x",
        "MEETING SET 9 title T description d public true",
        "AUDIENCE ADD 1 a@b",
        "AUDIENCE DEL 1 a@b",
        &format!("INSTANCE SET 1 9 from {} to {}", at(0), at(60)),
        "END 1",
        "TICK",
    ] {
        let (status, out) = run(line);
        assert_eq!(status, 1, "{line}: {out}");
        assert!(out.contains("\"permission_denied\""), "{line}: {out}");
        assert!(
            out.contains("uid 65534 is no admin")
                && out.contains("admin.uids")
                && out.contains("admin.gids"),
            "says who asked and who may: {out}"
        );
    }
    for line in [
        "PING",
        "USER GET 1",
        "JOIN 2 1",
        "PARTICIPANTS 1",
        "ACTIVE",
        "STATS",
    ] {
        let (status, out) = run(line);
        assert_eq!(status, 0, "{line}: {out}");
    }
    // the same uid listed as an admin is allowed
    drop(daemon);
    let daemon = Daemon::start(
        &redis,
        &[
            ("MEETINGD_SOCKET__MODE", "0666"),
            ("MEETINGD_ADMIN__UIDS", "65534"),
        ],
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let ctl = daemon.dir().join("meetingctl");
    std::fs::copy(env!("CARGO_BIN_EXE_meetingctl"), &ctl).expect("copy meetingctl");
    use std::os::unix::process::CommandExt;
    let out = crate::harness::output_of(
        std::process::Command::new(&ctl)
            .arg("--socket")
            .arg(daemon.socket())
            .arg("tick")
            .uid(65534)
            .gid(65534),
    )
    .expect("run meetingctl as nobody");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn redis_down_then_back_without_restarting_the_daemon() {
    let mut redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__TIMEOUT_MS", "500")]);
    let mut c = daemon.client();
    c.ok("USER SET 1 name Ada age 36 gender f email a@x");
    redis.stop();
    // an answer, not a hang (the client's read timeout fails the test if
    // none comes)
    assert_eq!(c.error_code("USER GET 1"), "unavailable");
    assert_eq!(c.error_code("PARTICIPANTS 1/1"), "unavailable");
    assert_eq!(c.ok("PING"), "PONG", "the daemon keeps serving");
    redis.restart();
    // an empty Redis: the library is loaded again, requests succeed
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = c.request("USER SET 1 name Ada age 36 gender f email a@x");
        if reply["ok"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis is back but requests still fail: {reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.ok("USER GET 1")["name"], "Ada");
}

/// A request that Redis would answer only after the daemon's Redis timeout
/// fails as unavailable: had the daemon waited for Redis, it would have got
/// the user.
#[test]
fn a_slow_redis_makes_requests_unavailable_instead_of_waiting() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__TIMEOUT_MS", "300")]);
    let mut c = daemon.client();
    c.ok("USER SET 1 name Ada age 36 gender f email a@x");
    let sleeper = redis.sleep_in_background(1.5);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.error_code("USER GET 1"), "unavailable");
    sleeper.join().expect("sleeper");
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.request("USER GET 1")["ok"] != true {
        assert!(Instant::now() < deadline, "requests succeed again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_connections_are_closed() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_SOCKET__IDLE_TIMEOUT_SECS", "2")]);
    let mut c = daemon.client();
    // a request every half second for three idle timeouts: a connection
    // in use stays open
    for _ in 0..12 {
        assert_eq!(c.ok("PING"), "PONG", "closed while in use");
        std::thread::sleep(Duration::from_millis(500));
    }
    // then silence: the daemon closes it (the client's 10 s read timeout
    // fails the test if it never does)
    assert!(c.reply().is_none(), "closed when idle");
    assert_eq!(daemon.client().ok("PING"), "PONG");
}

#[test]
fn connections_past_the_limit_get_unavailable_and_others_go_on() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_SOCKET__MAX_CONNECTIONS", "2")]);
    let mut a = daemon.client();
    // the start-up probe's connection may still hold its slot for a moment
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.ok("STATS")["connections"]["open"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the probe's connection is released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut b = daemon.client();
    assert_eq!(b.ok("PING"), "PONG");
    let mut third = daemon.client();
    let reply = third.reply().expect("a reply before the close");
    assert_eq!(reply["error"]["code"], "unavailable");
    assert!(third.reply().is_none());
    assert_eq!(a.ok("PING"), "PONG");
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = daemon.client();
        if again.try_request("PING").is_some_and(|r| r["ok"] == true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a slot frees up when a client leaves"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = a.ok("STATS");
    assert!(stats["connections"]["refused"].as_u64() >= Some(1));
}

#[test]
fn the_socket_is_0660_and_a_live_socket_is_never_stolen() {
    use std::os::unix::fs::PermissionsExt;
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mode = std::fs::metadata(daemon.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    // a second daemon on the same path refuses and leaves the first alone
    let dir = tempfile::tempdir().expect("dir");
    let mut second = Daemon::spawn(&redis, daemon.socket(), &[], dir);
    let status = second
        .wait(Duration::from_secs(10))
        .expect("the second daemon exits");
    assert!(!status.success());
    assert!(second.log().contains("already serving"), "{}", second.log());
    assert_eq!(daemon.client().ok("PING"), "PONG");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("stale.sock");
    // a socket file nobody listens on any more
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let daemon_dir = tempfile::tempdir().expect("dir");
    let daemon = Daemon::spawn(&redis, &path, &[], daemon_dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = Client::connect(&path) {
            if c.request("PING")["result"] == "PONG" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the daemon serves on the stale path: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // a regular file is never removed
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").expect("file");
    let mut refused = Daemon::spawn(&redis, &file, &[], tempfile::tempdir().expect("dir"));
    assert!(
        refused
            .wait(Duration::from_secs(10))
            .is_some_and(|s| !s.success())
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );
}

#[test]
fn stats_are_served_as_prometheus_text_when_configured() {
    use std::io::{Read, Write};
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_STATS__PROMETHEUS", &address)]);
    let mut c = daemon.client();
    c.ok("PING");
    c.error_code("USER GET 5");
    let get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    };
    let response = get("/metrics");
    assert!(
        response
            .to_ascii_lowercase()
            .starts_with("http/1.1 200 ok\r\n"),
        "{response}"
    );
    for line in [
        "meetingd_connections_open 1",
        r#"meetingd_requests_total{command="PING"} 2"#,
        r#"meetingd_requests_total{command="USER GET"} 1"#,
        r#"meetingd_errors_total{code="not_found"} 1"#,
        r#"meetingd_command_errors_total{command="USER GET"} 1"#,
        r#"meetingd_request_latency_count{command="USER GET"} 1"#,
        "# TYPE meetingd_watchers gauge",
        "meetingd_watchers 0",
    ] {
        assert!(
            response.lines().any(|l| l == line),
            "no {line:?} in\n{response}"
        );
    }
    assert!(
        response.lines().any(|l| l
            .starts_with(r#"meetingd_request_latency_seconds{command="PING",quantile="0.99"} "#)),
        "{response}"
    );
    assert!(
        response.contains("\nmeetingd_redis_rtt_seconds "),
        "{response}"
    );
    assert!(get("/nowhere").starts_with("HTTP/1.1 404 "));
}

/// What docs/protocol.md pins down, each as it says: what must be quoted
/// (a backslash in a bare word is itself, a quote inside one is refused),
/// a blank line is a request, the line limit counts no `\r`, requests
/// after QUIT are neither run nor answered, the text rules of every field,
/// and an audience kept on a public meeting decides once it is private.
#[test]
fn what_the_protocol_doc_pins_down() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    seed(&mut c);
    c.ok("JOIN 1 1");

    // quoting
    c.ok(r"POST 1 1 a\b");
    c.ok(r#"POST 1 1 "tab\there""#);
    c.ok("POST 1 1 éclair");
    let page = c.ok("MESSAGES 1");
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, [r"a\b", "tab\there", "éclair"]);
    assert_eq!(c.error_code(r#"POST 1 1 a"b"#), "bad_request");
    assert_eq!(c.error_code(r#"POST 1 1 "a"b"#), "bad_request");

    // a blank line is a request: one reply each, in order
    c.send(b"\n \t\nPING\n");
    for _ in 0..2 {
        let reply = c.reply().expect("a reply to a blank line");
        assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    }
    assert_eq!(c.reply().expect("the PING's reply")["result"], "PONG");

    // requests after QUIT are neither run nor answered
    let mut quitting = daemon.client();
    quitting.send(b"QUIT\nJOIN 2 1\n");
    assert_eq!(quitting.reply().expect("BYE")["result"], "BYE");
    assert!(quitting.reply().is_none(), "nothing after BYE");
    let people = c.ok("PARTICIPANTS 1");
    assert_eq!(people.as_array().map(Vec::len), Some(1), "{people}");

    // texts
    let name_1024 = "n".repeat(1024);
    c.ok(&format!(
        "USER SET 7 name {name_1024} age 0 gender g email g@x"
    ));
    c.ok(r#"MEETING SET 9 title t description "" public true"#);
    for line in [
        format!("USER SET 7 name {name_1024}n age 1 gender g email g@x"),
        "USER SET 7 name n age 151 gender g email g@x".to_string(),
        r#"USER SET 7 name "" age 1 gender g email g@x"#.to_string(),
        r#"USER SET 7 name "a\u0085b" age 1 gender g email g@x"#.to_string(),
        format!(
            r#"MEETING SET 9 title t description "{}" public true"#,
            "d".repeat(1025)
        ),
        r#"POST 1 1 """#.to_string(),
        "POST 1 1 hi ID bad/key".to_string(),
    ] {
        assert_eq!(c.error_code(&line), "bad_request", "{line}");
    }

    // the audience of a public meeting is kept, and decides once private
    c.ok("AUDIENCE ADD 1 bob@example.com");
    c.ok(r#"MEETING SET 1 title "Town hall" description "all hands" public false"#);
    c.ok("JOIN 2 1");
    assert_eq!(c.error_code("JOIN 3 1"), "not_allowed");

    // the line limit counts the line before its \r\n
    let small = Daemon::start(&redis, &[("MEETINGD_SOCKET__MAX_LINE_BYTES", "20")]);
    let mut c = small.client();
    let twenty = format!("POST 1 1 {}", "y".repeat(20 - "POST 1 1 ".len()));
    c.send(format!("{twenty}\r\n").as_bytes());
    assert_eq!(c.reply().expect("a reply")["ok"], true);
    c.send(format!("{twenty}y\r\n").as_bytes());
    assert_eq!(c.reply().expect("a reply")["error"]["code"], "too_large");
}
