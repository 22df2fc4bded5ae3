//! The archive against real databases started by the tests (`dbs.rs`):
//! an ended instance's rows equal what EVENTS and MESSAGES say, with the
//! attendance of hand-computed cases; meetings, audiences and instances
//! as written; a daemon killed with SIGKILL mid-archive loses and doubles
//! nothing; a database stopped under load and started again; two daemons
//! archive each entry once; a schema newer than the daemon's is refused.
//!
//! The data is written with redis-cli's FCALLs at chosen times a day
//! ahead of now, so the numbers are known in advance and the daemons' own
//! ticks (on the real clock) never touch it.

use std::time::Duration;

use crate::dbs::{ArchiveDb, Mariadb, Postgres, Sqlite};
use crate::harness::{Daemon, Redis, wait_until};

/// A sync connection to the test's Redis.
fn conn(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url())
        .expect("client")
        .get_connection()
        .expect("connect")
}

/// FCALL with one key, every argument a string.
fn call(conn: &mut redis::Connection, function: &str, key: &str, args: &[&str]) -> redis::Value {
    redis::cmd("FCALL")
        .arg(function)
        .arg(1)
        .arg(key)
        .arg(args)
        .query(conn)
        .unwrap_or_else(|e| panic!("{function} {key} {args:?}: {e}"))
}

/// A minute boundary a day from now: the start of the test's windows.
fn base() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    (now / 60_000 + 24 * 60) * 60_000
}

fn meeting_key(m: u64) -> String {
    format!("meetingd:{{p{}}}:meeting:{m}", m % 64)
}

fn due_key(m: u64) -> String {
    format!("meetingd:{{p{}}}:due", m % 64)
}

/// The settings of an archiving daemon.
fn env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MEETINGD_ARCHIVE__URL", url.to_string()),
        ("MEETINGD_ARCHIVE__POLL_MS", "50".into()),
        ("MEETINGD_ARCHIVE__RETRY_MAX_MS", "400".into()),
        ("MEETINGD_ARCHIVE__CLAIM_AFTER_SECS", "2".into()),
    ]
}

fn start(redis: &Redis, env: &[(&'static str, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start(redis, &env)
}

/// An expression for a timestamp column as ms since the epoch, per
/// database (read back from the text each client prints).
fn ms_sql(db: &dyn ArchiveDb, column: &str) -> String {
    let url = db.url();
    if url.starts_with("postgres") {
        format!("coalesce((extract(epoch from {column}) * 1000)::bigint, -1)")
    } else if url.starts_with("sqlite") {
        format!("coalesce(cast(round((julianday({column}) - 2440587.5) * 86400000) as integer), -1)")
    } else {
        format!("coalesce(cast(round(unix_timestamp({column}) * 1000) as signed), -1)")
    }
}

/// An expression for a number as an integer, per database.
fn int_sql(db: &dyn ArchiveDb, expr: &str) -> String {
    if db.url().starts_with("mysql") {
        format!("cast({expr} as signed)")
    } else {
        format!("cast({expr} as bigint)")
    }
}

fn one(db: &dyn ArchiveDb, sql: &str) -> String {
    db.rows(sql).into_iter().next().unwrap_or_default()
}

fn wait_archived(db: &dyn ArchiveDb, instances: usize, daemon: &Daemon) {
    let sql = "SELECT count(*) FROM instances WHERE archived_at IS NOT NULL";
    wait_until(
        &format!("{instances} instances archived"),
        Duration::from_secs(90),
        || {
            let done = one(db, sql);
            if done == instances.to_string() {
                return true;
            }
            assert!(
                done.parse::<usize>().unwrap_or(0) <= instances,
                "{done} archived: {}",
                daemon.log()
            );
            false
        },
    );
}

/// The hand-computed instance: meeting 1, order 1, window [from, to):
///   user 3 joins at +10 s, posts at +11 s, never leaves (times out at to);
///   user 1 joins at +60 s, posts with key k-1, leaves at +120 s, joins
///     again at +600 s, posts, times out at to;
///   user 2 joins 400 ms before the end and times out at to.
/// Expected: user 1 3060 s (60 + 3000), 2 joins, 2 messages; user 2 0.4 s;
/// user 3 3590 s.
fn hand_computed(conn: &mut redis::Connection, from: i64) -> i64 {
    let to = from + 3_600_000;
    let t = |offset: i64| (from + offset).to_string();
    for (u, name, email) in [
        (1, "Ada", "ada@example.com"),
        (2, "Grace", "grace@example.com"),
        (3, "Linus", "linus@example.com"),
    ] {
        call(
            conn,
            "meet_user_set",
            &format!("meetingd:{{u{u}}}:user"),
            &[name, "40", "female", email],
        );
    }
    let key = meeting_key(1);
    call(conn, "meet_meeting_set", &key, &["Town hall", "All of us", "false"]);
    call(
        conn,
        "meet_audience_add",
        &key,
        &["ada@example.com", "grace@example.com", "linus@example.com", "bob@example.com"],
    );
    call(conn, "meet_audience_del", &key, &["bob@example.com"]);
    call(
        conn,
        "meet_instance_set",
        &key,
        &["1", &t(0), &to.to_string(), &t(-60_000)],
    );
    call(conn, "meet_tick", &due_key(1), &[&t(0)]);
    call(conn, "meet_join", &key, &["", "3", "linus@example.com", &t(10_000)]);
    call(conn, "meet_post", &key, &["", "3", "hi all", &t(11_000)]);
    call(conn, "meet_join", &key, &["", "1", "ada@example.com", &t(60_000)]);
    call(conn, "meet_post", &key, &["", "1", "hello", &t(61_000), "0", "k-1"]);
    call(conn, "meet_leave", &key, &["", "1", &t(120_000)]);
    call(conn, "meet_join", &key, &["", "1", "ada@example.com", &t(600_000)]);
    call(conn, "meet_post", &key, &["", "1", "back, \"again\"", &t(601_000)]);
    call(conn, "meet_join", &key, &["", "2", "grace@example.com", &(to - 400).to_string()]);
    call(conn, "meet_tick", &due_key(1), &[&(to + 5_000).to_string()]);
    to
}

fn parse_ms(value: &serde_json::Value) -> i64 {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map_or(-1, |t| t.timestamp_millis())
}

/// The whole check of one database.
fn rows_equal_what_redis_said(db: &dyn ArchiveDb) {
    let redis = Redis::start();
    let daemon = start(&redis, &env(&db.url()));
    let mut c = conn(&redis);
    let from = base();
    let to = hand_computed(&mut c, from);
    wait_archived(db, 1, &daemon);

    let mut client = daemon.client();
    let events = client.ok("EVENTS 1/1 LIMIT 1000");
    let expected: Vec<String> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let (ms, seq) = e["id"].as_str().and_then(|id| id.split_once('-')).expect("an id");
            format!(
                "{ms}|{seq}|{}|{}|{}|{}|{}",
                e["type"].as_str().unwrap_or_default(),
                e["user"],
                parse_ms(&e["at"]),
                parse_ms(&e["scheduled_end"]),
                parse_ms(&e["processed_at"]),
            )
        })
        .collect();
    assert_eq!(expected.len(), 8, "{events}");
    let archived = db.rows(&format!(
        "SELECT entry_ms, entry_seq, kind, user_id, {}, {}, {} FROM events \
         WHERE meeting_id = 1 AND order_id = 1 ORDER BY entry_ms, entry_seq",
        ms_sql(db, "happened_at"),
        ms_sql(db, "scheduled_end"),
        ms_sql(db, "processed_at"),
    ));
    assert_eq!(archived, expected, "events: archive vs EVENTS");

    let messages = client.ok("MESSAGES 1/1 LIMIT 1000");
    let expected: Vec<String> = messages["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let (ms, seq) = m["id"].as_str().and_then(|id| id.split_once('-')).expect("an id");
            let key = if m["text"] == "hello" { "k-1" } else { "" };
            format!(
                "{ms}|{seq}|{}|{}|{}|{key}",
                m["user"],
                parse_ms(&m["at"]),
                m["text"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(expected.len(), 3, "{messages}");
    let archived = db.rows(&format!(
        "SELECT entry_ms, entry_seq, user_id, {}, body, coalesce(post_id, '') FROM messages \
         WHERE meeting_id = 1 AND order_id = 1 ORDER BY entry_ms, entry_seq",
        ms_sql(db, "posted_at")
    ));
    assert_eq!(archived, expected, "messages: archive vs MESSAGES");

    let attendance = db.rows(&format!(
        "SELECT user_id, {}, {}, {}, joins, messages \
         FROM attendance WHERE meeting_id = 1 AND order_id = 1 ORDER BY user_id",
        ms_sql(db, "first_join"),
        ms_sql(db, "last_leave"),
        int_sql(db, "round(seconds_present * 1000)"),
    ));
    assert_eq!(
        attendance,
        vec![
            format!("1|{}|{to}|3060000|2|2", from + 60_000),
            format!("2|{}|{to}|400|1|0", to - 400),
            format!("3|{}|{to}|3590000|1|1", from + 10_000),
        ],
        "attendance, computed by hand"
    );

    assert_eq!(
        db.rows(&format!(
            "SELECT meeting_id, order_id, {}, {}, {} FROM instances",
            ms_sql(db, "starts_at"),
            ms_sql(db, "ends_at"),
            ms_sql(db, "ended_at")
        )),
        vec![format!("1|1|{from}|{to}|{to}")]
    );
    let meeting = db.rows("SELECT meeting_id, title, description FROM meetings");
    assert_eq!(meeting, vec!["1|Town hall|All of us".to_string()]);
    let audience = db.rows(
        "SELECT email FROM audience WHERE meeting_id = 1 AND in_audience ORDER BY email",
    );
    assert_eq!(
        audience,
        vec!["ada@example.com", "grace@example.com", "linus@example.com"]
    );
    assert_eq!(
        db.rows("SELECT email FROM audience WHERE NOT in_audience"),
        vec!["bob@example.com"]
    );
    assert_eq!(
        db.rows("SELECT user_id, name, email FROM users ORDER BY user_id"),
        vec![
            "1|Ada|ada@example.com",
            "2|Grace|grace@example.com",
            "3|Linus|linus@example.com"
        ]
    );

    // every outbox entry archived and acknowledged: meeting, two audience
    // changes, instance, end
    let stats = client.ok("STATS");
    wait_until("the backlog shown empty", Duration::from_secs(30), || {
        daemon.client().ok("STATS")["archive"]["waiting"] == 0
    });
    assert_eq!(stats["archive"]["entries"], 5, "{stats}");
    assert_eq!(redis.cli(&["XLEN", "meetingd:{p1}:outbox"]).trim(), "0");
}

#[test]
fn archive_sqlite_rows_equal_events_messages_and_hand_computed_attendance() {
    rows_equal_what_redis_said(&Sqlite::new());
}

#[test]
fn archive_postgres_rows_equal_events_messages_and_hand_computed_attendance() {
    rows_equal_what_redis_said(&Postgres::start());
}

#[test]
fn archive_mariadb_rows_equal_events_messages_and_hand_computed_attendance() {
    rows_equal_what_redis_said(&Mariadb::start());
}
