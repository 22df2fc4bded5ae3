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

use crate::dbs::{ArchiveDb, Mariadb, Postgres, Server, Sqlite};
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
        format!(
            "coalesce(cast(round((julianday({column}) - 2440587.5) * 86400000) as integer), -1)"
        )
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
    call(
        conn,
        "meet_meeting_set",
        &key,
        &["Town hall", "All of us", "false"],
    );
    call(
        conn,
        "meet_audience_add",
        &key,
        &[
            "ada@example.com",
            "grace@example.com",
            "linus@example.com",
            "bob@example.com",
        ],
    );
    call(conn, "meet_audience_del", &key, &["bob@example.com"]);
    call(
        conn,
        "meet_instance_set",
        &key,
        &["1", &t(0), &to.to_string(), &t(-60_000)],
    );
    call(conn, "meet_tick", &due_key(1), &[&t(0)]);
    call(
        conn,
        "meet_join",
        &key,
        &["", "3", "linus@example.com", &t(10_000)],
    );
    call(conn, "meet_post", &key, &["", "3", "hi all", &t(11_000)]);
    call(
        conn,
        "meet_join",
        &key,
        &["", "1", "ada@example.com", &t(60_000)],
    );
    call(
        conn,
        "meet_post",
        &key,
        &["", "1", "hello", &t(61_000), "0", "k-1"],
    );
    call(conn, "meet_leave", &key, &["", "1", &t(120_000)]);
    call(
        conn,
        "meet_join",
        &key,
        &["", "1", "ada@example.com", &t(600_000)],
    );
    call(
        conn,
        "meet_post",
        &key,
        &["", "1", "back, \"again\"", &t(601_000)],
    );
    call(
        conn,
        "meet_join",
        &key,
        &["", "2", "grace@example.com", &(to - 400).to_string()],
    );
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
        // the instance's start and end are in its `instances` row, not in
        // `events`: the archive copies the users' events
        .filter(|e| e["user"].is_u64())
        .map(|e| {
            let (ms, seq) = e["id"]
                .as_str()
                .and_then(|id| id.split_once('-'))
                .expect("an id");
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
            let (ms, seq) = m["id"]
                .as_str()
                .and_then(|id| id.split_once('-'))
                .expect("an id");
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

    // REPORT, from Redis, says the same; and meetingctl's CSV
    let report = client.ok("REPORT 1/1");
    assert_eq!(report["state"], "ended", "{report}");
    assert_eq!(parse_ms(&report["ended_at"]), to);
    let rows = report["rows"].as_array().expect("rows");
    let reported: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}|{}|{}",
                r["user"],
                parse_ms(&r["first_join"]),
                parse_ms(&r["last_leave"]),
                (r["seconds_present"].as_f64().unwrap_or(-1.0) * 1000.0).round() as i64,
                r["joins"],
                r["messages"]
            )
        })
        .collect();
    assert_eq!(reported, attendance, "REPORT against the archive");
    let csv = crate::harness::meetingctl(daemon.socket(), &["report", "1/1", "--csv"]);
    assert_eq!(csv.status, 0, "{}", csv.stderr);
    let time = |r: &serde_json::Value, f: &str| r[f].as_str().unwrap_or_default().to_string();
    let expected_csv = format!(
        "meeting,order,user,first_join,last_leave,seconds_present,joins,messages\r\n\
         1,1,1,{},{},3060.0,2,2\r\n1,1,2,{},{},0.4,1,0\r\n1,1,3,{},{},3590.0,1,1\r\n",
        time(&rows[0], "first_join"),
        time(&rows[0], "last_leave"),
        time(&rows[1], "first_join"),
        time(&rows[1], "last_leave"),
        time(&rows[2], "first_join"),
        time(&rows[2], "last_leave"),
    );
    assert_eq!(csv.stdout, expected_csv);

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
    let audience =
        db.rows("SELECT email FROM audience WHERE meeting_id = 1 AND in_audience ORDER BY email");
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

/// `more` of a meet_tick reply.
fn more(reply: &redis::Value) -> bool {
    let redis::Value::Array(items) = reply else {
        return false;
    };
    items
        .iter()
        .position(|v| matches!(v, redis::Value::BulkString(b) if b == b"more"))
        .and_then(|i| items.get(i + 1))
        .is_some_and(|v| matches!(v, redis::Value::Int(n) if *n > 0))
}

/// Tick every partition of `meetings` at `now` until nothing is due.
fn tick_all(conn: &mut redis::Connection, meetings: std::ops::RangeInclusive<u64>, now: i64) {
    let partitions: std::collections::BTreeSet<u64> = meetings.map(|m| m % 64).collect();
    for p in partitions {
        let key = format!("meetingd:{{p{p}}}:due");
        while more(&call(
            conn,
            "meet_tick",
            &key,
            &[&now.to_string(), "", "1000"],
        )) {}
    }
}

/// Public meetings `meetings`, each with instance 1 over [from, from + 1h)
/// that `users` users join and `messages` messages are posted to, ended by
/// the tick at its end: per instance, 2 * users events (joins and
/// timeouts) and `messages` messages. Written in pipelines.
fn bulk(
    conn: &mut redis::Connection,
    meetings: std::ops::RangeInclusive<u64>,
    from: i64,
    users: u64,
    messages: u64,
) {
    let to = from + 3_600_000;
    for m in meetings.clone() {
        let key = meeting_key(m);
        call(
            conn,
            "meet_meeting_set",
            &key,
            &[&format!("Meeting {m}"), "", "true"],
        );
        call(
            conn,
            "meet_instance_set",
            &key,
            &[
                "1",
                &from.to_string(),
                &to.to_string(),
                &(from - 60_000).to_string(),
            ],
        );
    }
    tick_all(conn, meetings.clone(), from);
    for m in meetings.clone() {
        let key = meeting_key(m);
        let mut pipe = redis::pipe();
        for u in 1..=users {
            let at = (from + u as i64 * 100).to_string();
            pipe.cmd("FCALL")
                .arg("meet_join")
                .arg(1)
                .arg(&key)
                .arg(&["", &u.to_string(), &format!("u{u}@example.com"), &at][..]);
        }
        for i in 0..messages {
            let at = (from + users as i64 * 100 + i as i64).to_string();
            let user = (1 + i % users).to_string();
            pipe.cmd("FCALL")
                .arg("meet_post")
                .arg(1)
                .arg(&key)
                .arg(&["", &user, &format!("message {i} of {m}"), &at][..]);
        }
        let _: Vec<redis::Value> = pipe.query(conn).expect("the pipeline");
    }
    tick_all(conn, meetings, to + 5_000);
}

/// Every instance of `meetings` archived whole, once: events, messages
/// and attendance rows, counted per instance and in all.
fn assert_whole(db: &dyn ArchiveDb, meetings: u64, users: u64, messages: u64) {
    let per = |table: &str| {
        db.rows(&format!(
            "SELECT meeting_id, count(*) FROM {table} GROUP BY meeting_id ORDER BY meeting_id"
        ))
    };
    let expect = |n: u64| -> Vec<String> { (1..=meetings).map(|m| format!("{m}|{n}")).collect() };
    assert_eq!(per("events"), expect(2 * users), "events per instance");
    assert_eq!(per("messages"), expect(messages), "messages per instance");
    assert_eq!(
        per("attendance"),
        expect(users),
        "attendance rows per instance"
    );
    let joins = db.rows("SELECT DISTINCT joins FROM attendance");
    assert_eq!(joins, vec!["1"], "one join each");
}

fn outbox_drained(redis: &Redis) {
    for p in 0..64 {
        let key = format!("meetingd:{{p{p}}}:outbox");
        assert_eq!(redis.cli(&["XLEN", &key]).trim(), "0", "{key}");
        let pending = redis.cli(&["XPENDING", &key, "archive"]);
        assert!(pending.starts_with('0'), "{key}: {pending}");
    }
}

#[test]
fn archive_loses_and_doubles_nothing_when_daemons_are_killed_mid_archive() {
    let db = Postgres::start();
    let redis = Redis::start();
    let env = env(&db.url());
    // a first daemon turns archiving on; the data is written while none
    // runs, so that the next ones find a backlog to be killed in
    let mut first = start(&redis, &env);
    first.signal(libc::SIGTERM);
    assert!(first.wait(Duration::from_secs(20)).is_some());
    let mut c = conn(&redis);
    let (meetings, users, messages) = (60, 60, 60);
    bulk(&mut c, 1..=meetings, base(), users, messages);
    let archived = || {
        one(
            &db,
            "SELECT count(*) FROM instances WHERE archived_at IS NOT NULL",
        )
        .parse::<u64>()
        .unwrap_or(0)
    };
    let mut kills = Vec::new();
    for round in 1..=2u64 {
        let daemon = start(&redis, &env);
        let goal = round * meetings / 3;
        wait_until("some instances archived", Duration::from_secs(90), || {
            archived() >= goal
        });
        // SIGKILL: a batch may be committed and not acknowledged, or half
        // written; the entries stay pending, and the next daemon takes them
        // over after archive.claim_after_secs
        daemon.signal(libc::SIGKILL);
        kills.push(archived());
        drop(daemon);
    }
    eprintln!("instances archived when the daemons were killed: {kills:?} of {meetings}");
    assert!(
        kills.iter().all(|n| *n < meetings),
        "killed while archiving: {kills:?} of {meetings}"
    );
    let last = start(&redis, &env);
    wait_archived(&db, meetings as usize, &last);
    assert_whole(&db, meetings, users, messages);
    wait_until("the outboxes drained", Duration::from_secs(30), || {
        last.client().ok("STATS")["archive"]["waiting"] == 0
    });
    outbox_drained(&redis);
}

#[test]
fn archive_waits_for_a_stopped_postgres_and_catches_up() {
    waits_for_a_stopped_database(&mut Postgres::start());
}

#[test]
fn archive_waits_for_a_stopped_mariadb_and_catches_up() {
    waits_for_a_stopped_database(&mut Mariadb::start());
}

fn waits_for_a_stopped_database(db: &mut dyn Server) {
    let redis = Redis::start();
    let daemon = start(&redis, &env(&db.url()));
    db.stop();
    let mut c = conn(&redis);
    bulk(&mut c, 1..=5, base(), 10, 10);
    // meeting, instance and end entries of 5 instances wait; the daemon
    // serves meanwhile and says so
    let mut client = daemon.client();
    wait_until("failures counted", Duration::from_secs(30), || {
        let stats = client.ok("STATS");
        stats["archive"]["failures"].as_u64().unwrap_or(0) >= 2
            && stats["archive"]["waiting"].as_u64().unwrap_or(0) >= 15
    });
    let stats = client.ok("STATS");
    assert!(
        stats["archive"]["oldest_age_s"].as_f64().unwrap_or(-1.0) >= 0.0,
        "{stats}"
    );
    assert_eq!(
        client.ok("EVENTS 3/1 LIMIT 5")["events"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
    db.start_again();
    wait_archived(db, 5, &daemon);
    assert_whole(db, 5, 10, 10);
    wait_until("the backlog shown empty", Duration::from_secs(30), || {
        client.ok("STATS")["archive"]["waiting"] == 0
    });
    outbox_drained(&redis);
}

#[test]
fn archive_two_daemons_archive_each_entry_once() {
    let db = Postgres::start();
    let redis = Redis::start();
    let mut env = env(&db.url());
    // no takeover within the test: an entry archived twice would count
    // twice below
    env.retain(|(k, _)| *k != "MEETINGD_ARCHIVE__CLAIM_AFTER_SECS");
    let a = start(&redis, &env);
    let b = start(&redis, &env);
    let mut c = conn(&redis);
    let meetings = 40;
    bulk(&mut c, 1..=meetings, base(), 20, 20);
    wait_archived(&db, meetings as usize, &a);
    assert_whole(&db, meetings, 20, 20);
    // meeting, instance and end entries: each archived by one daemon
    let entries = |d: &Daemon| {
        d.client().ok("STATS")["archive"]["entries"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until("every entry counted", Duration::from_secs(30), || {
        entries(&a) + entries(&b) == 3 * meetings
    });
    outbox_drained(&redis);
}

#[test]
fn archive_history_expires_only_once_archived() {
    let db = Sqlite::new();
    let redis = Redis::start();
    let mut env = env(&db.url());
    env.push(("MEETINGD_RETENTION__DAYS", "1".into()));
    let daemon = start(&redis, &env);
    let mut c = conn(&redis);
    let from = base();
    let to = hand_computed(&mut c, from);
    // a write that asks for an expiry while the partition archives sets
    // none (the instance above has ended; a second one runs now)
    let key = meeting_key(1);
    let t = |offset: i64| (to + offset).to_string();
    call(
        &mut c,
        "meet_instance_set",
        &key,
        &["2", &t(60_000), &t(120_000), &t(0)],
    );
    call(&mut c, "meet_tick", &due_key(1), &[&t(60_000)]);
    call(
        &mut c,
        "meet_join",
        &key,
        &["", "1", "ada@example.com", &t(61_000), "86400000"],
    );
    call(
        &mut c,
        "meet_post",
        &key,
        &["", "1", "later", &t(62_000), "86400000"],
    );
    for k in ["events:1/2", "chat:1/2", "chat:1/2:by:1"] {
        let k = format!("meetingd:{{p1}}:{k}");
        assert_eq!(
            redis.cli(&["PTTL", &k]).trim(),
            "-1",
            "{k} kept while not archived"
        );
    }
    wait_archived(&db, 1, &daemon);
    // archived: instance 1/1's history expires a day after its end
    let expire_at = (to + 86_400_000).to_string();
    for k in [
        "events:1/1",
        "chat:1/1",
        "posted:1/1",
        "chat:1/1:by:1",
        "chat:1/1:by:3",
    ] {
        let k = format!("meetingd:{{p1}}:{k}");
        wait_until(&format!("{k} expiring"), Duration::from_secs(10), || {
            redis.cli(&["PEXPIRETIME", &k]).trim() == expire_at
        });
    }
}

#[test]
fn archive_refuses_a_schema_newer_than_it_knows() {
    let db = Sqlite::new();
    let redis = Redis::start();
    let env = env(&db.url());
    let mut daemon = start(&redis, &env);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some());
    assert_eq!(
        db.rows("SELECT max(version) FROM _sqlx_migrations"),
        vec!["2"]
    );
    db.rows(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (3, 'from a newer meetingd', 1, x'00', 0)",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("meetingd.sock");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut newer = Daemon::spawn(&redis, &socket, &env, dir);
    let status = newer.wait(Duration::from_secs(30)).expect("it exits");
    assert_eq!(status.code(), Some(2), "{}", newer.log());
    assert!(
        newer
            .log()
            .contains("schema version 3, newer than this meetingd knows (2)"),
        "{}",
        newer.log()
    );
}

#[test]
fn archive_repartition_waits_for_the_outboxes_and_drops_those_of_gone_partitions() {
    let db = Sqlite::new();
    let redis = Redis::start();
    let url = redis.url();
    let mut env = env(&db.url());
    env.push(("MEETINGD_REDIS__PARTITIONS", "16".into()));
    let mut daemon = start(&redis, &env);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some());
    // an entry written while no daemon archives
    let mut c = conn(&redis);
    call(
        &mut c,
        "meet_meeting_set",
        "meetingd:{p5}:meeting:5",
        &["Five", "", "true"],
    );
    let (code, out) =
        crate::harness::meetingd_run("repartition", &["--redis", &url, "--partitions", "8"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("meetingd:{p5}:outbox holds entries not yet archived"),
        "{out}"
    );
    // archived, the daemon stopped: 16 -> 8 runs, and the outboxes of
    // partitions 8..15 go
    let mut daemon = start(&redis, &env);
    wait_until("the entry archived", Duration::from_secs(30), || {
        db.rows("SELECT title FROM meetings WHERE meeting_id = 5") == ["Five"]
    });
    wait_until("the outbox acknowledged", Duration::from_secs(30), || {
        redis.cli(&["XLEN", "meetingd:{p5}:outbox"]).trim() == "0"
    });
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some());
    wait_until(
        "the daemon's serving entry gone",
        Duration::from_secs(30),
        || {
            let (code, _) = crate::harness::meetingd_run(
                "repartition",
                &["--redis", &url, "--partitions", "8"],
            );
            code == 0
        },
    );
    assert_eq!(redis.cli(&["EXISTS", "meetingd:{p12}:outbox"]).trim(), "0");
    assert_eq!(redis.cli(&["EXISTS", "meetingd:{p5}:outbox"]).trim(), "1");
    let (code, out) = crate::harness::meetingd_check(&["--redis", &url]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn archive_survives_a_redis_restart_with_entries_taken_and_unfinished() {
    let mut db = Postgres::start();
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let daemon = start(&redis, &env(&db.url()));
    db.stop();
    let mut c = conn(&redis);
    bulk(&mut c, 1..=4, base(), 5, 5);
    // the daemon takes entries and cannot finish them: they are pending
    wait_until("entries taken", Duration::from_secs(30), || {
        (0..64).any(|p| {
            let key = format!("meetingd:{{p{p}}}:outbox");
            !redis.cli(&["XPENDING", &key, "archive"]).starts_with('0')
        })
    });
    // SIGKILL; the append-only file brings the streams and the group back
    redis.restart();
    db.start_again();
    wait_archived(&db, 4, &daemon);
    assert_whole(&db, 4, 5, 5);
    wait_until("the backlog shown empty", Duration::from_secs(30), || {
        daemon.client().ok("STATS")["archive"]["waiting"] == 0
    });
    outbox_drained(&redis);
}

#[test]
fn archive_an_outbox_deleted_under_a_daemon_is_made_again() {
    let db = Sqlite::new();
    let redis = Redis::start();
    let daemon = start(&redis, &env(&db.url()));
    assert_eq!(redis.cli(&["DEL", "meetingd:{p7}:outbox"]).trim(), "1");
    wait_until("the outbox made again", Duration::from_secs(30), || {
        redis.cli(&["EXISTS", "meetingd:{p7}:outbox"]).trim() == "1"
    });
    let mut c = conn(&redis);
    call(
        &mut c,
        "meet_meeting_set",
        &meeting_key(7),
        &["Seven", "", "true"],
    );
    wait_until("the meeting archived", Duration::from_secs(30), || {
        db.rows("SELECT title FROM meetings WHERE meeting_id = 7") == ["Seven"]
    });
    assert!(
        daemon.log().contains("an outbox was gone"),
        "{}",
        daemon.log()
    );
}

/// A measurement, not a check (run by hand, `--ignored --nocapture`): one
/// instance of 5,000 users (10,000 events) and 10,000 messages archived
/// into SQLite and PostgreSQL by a daemon started on the backlog; prints
/// rows per second (the daemon's start-up included).
#[test]
#[ignore]
fn archive_measure_rows_per_second() {
    fn measure(db: &dyn ArchiveDb) {
        let redis = Redis::start();
        let env = env(&db.url());
        let mut first = start(&redis, &env);
        first.signal(libc::SIGTERM);
        assert!(first.wait(Duration::from_secs(20)).is_some());
        let mut c = conn(&redis);
        bulk(&mut c, 1..=1, base(), 5_000, 10_000);
        let started = std::time::Instant::now();
        let daemon = start(&redis, &env);
        wait_archived(db, 1, &daemon);
        let took = started.elapsed();
        let rows = daemon.client().ok("STATS")["archive"]["rows"]
            .as_u64()
            .unwrap_or(0);
        eprintln!(
            "{}: {rows} rows in {:.2} s: {:.0} rows/s",
            db.url().split(':').next().unwrap_or_default(),
            took.as_secs_f64(),
            rows as f64 / took.as_secs_f64()
        );
    }
    measure(&Sqlite::new());
    measure(&Postgres::start());
    measure(&Mariadb::start());
}

#[test]
fn archive_report_of_a_running_instance_counts_a_user_still_in_until_now() {
    // no archive at all: REPORT reads Redis
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = conn(&redis);
    let now = chrono::Utc::now().timestamp_millis();
    let (from, to) = (now - 600_000, now + 3_000_000);
    let key = meeting_key(1);
    call(&mut c, "meet_meeting_set", &key, &["Now", "", "true"]);
    call(
        &mut c,
        "meet_instance_set",
        &key,
        &[
            "1",
            &from.to_string(),
            &to.to_string(),
            &(from - 60_000).to_string(),
        ],
    );
    call(&mut c, "meet_tick", &due_key(1), &[&from.to_string()]);
    let at = |offset: i64| (from + offset).to_string();
    call(
        &mut c,
        "meet_join",
        &key,
        &["", "1", "a@example.com", &at(60_000)],
    );
    call(
        &mut c,
        "meet_join",
        &key,
        &["", "2", "b@example.com", &at(120_000)],
    );
    call(&mut c, "meet_post", &key, &["", "2", "bye", &at(121_000)]);
    call(&mut c, "meet_leave", &key, &["", "2", &at(180_000)]);
    let report = daemon.client().ok("REPORT 1");
    assert_eq!(report["state"], "active", "{report}");
    assert_eq!(report["ended_at"], serde_json::Value::Null, "{report}");
    let rows = report["rows"].as_array().expect("rows");
    // user 1 is still in: no last leave, and at least the 540 s from the
    // join to the moment the test began
    assert_eq!(rows[0]["user"], 1);
    assert_eq!(rows[0]["last_leave"], serde_json::Value::Null);
    assert!(
        rows[0]["seconds_present"].as_f64().unwrap_or(0.0) >= 540.0,
        "{report}"
    );
    assert_eq!(rows[1]["user"], 2);
    assert_eq!(rows[1]["seconds_present"], 60.0);
    assert_eq!(rows[1]["messages"], 1);
    let table = crate::harness::meetingctl(daemon.socket(), &["report", "1/1"]);
    assert_eq!(table.status, 0, "{}", table.stderr);
    assert!(table.stdout.contains("SECONDS_PRESENT"), "{}", table.stdout);
    let missing = daemon.client().error_code("REPORT 1/9");
    assert_eq!(missing, "not_found");
}

/// REPORT pages by user: `LIMIT` rows after `AFTER`, cut short by the
/// reply limit with `next` set, the pages together the whole report; bad
/// paging arguments are refused; meetingctl fetches every page (table,
/// `--json` and CSV).
#[test]
fn archive_report_pages_by_user_within_the_reply_limit() {
    const REPLY_BYTES: usize = 900;
    let redis = Redis::start();
    let bytes = REPLY_BYTES.to_string();
    let daemon = Daemon::start(&redis, &[("MEETINGD_LIMITS__REPLY_BYTES", bytes.as_str())]);
    let mut c = daemon.client();
    c.ok("MEETING SET 1 title Paged description \"\" public true");
    c.ok(&format!(
        "INSTANCE SET 1 1 from {} to {}",
        crate::harness::at(-5),
        crate::harness::at(60)
    ));
    c.ok("TICK");
    let users: Vec<u64> = (1..=12).map(|u| u * 7).collect();
    for u in &users {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@example.com"
        ));
        c.ok(&format!("JOIN {u} 1/1"));
    }
    c.ok("POST 14 1/1 hello");
    let users_of = |page: &serde_json::Value| -> Vec<u64> {
        page["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["user"].as_u64())
            .collect()
    };
    // LIMIT pages: next is the page's last user until the last page
    let first = c.ok("REPORT 1/1 LIMIT 5");
    assert_eq!(users_of(&first), users[..5], "{first}");
    assert_eq!(first["next"], 35, "{first}");
    assert_eq!(
        (first["meeting"].as_u64(), first["order"].as_u64()),
        (Some(1), Some(1))
    );
    let second = c.ok("REPORT 1/1 AFTER 35 LIMIT 5");
    assert_eq!(users_of(&second), users[5..10], "{second}");
    assert_eq!(second["next"], 70);
    let last = c.ok("REPORT 1/1 AFTER 70 LIMIT 5");
    assert_eq!(users_of(&last), users[10..], "{last}");
    assert_eq!(last["next"], serde_json::Value::Null);
    // between two users, and after the last
    assert_eq!(users_of(&c.ok("REPORT 1/1 AFTER 36 LIMIT 1")), [42]);
    let beyond = c.ok("REPORT 1/1 AFTER 9000");
    assert_eq!(users_of(&beyond), Vec::<u64>::new());
    assert_eq!(beyond["next"], serde_json::Value::Null);
    // no LIMIT: the reply limit cuts the pages; together, every user once
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut line = "REPORT 1/1".to_string();
    loop {
        let mut raw = daemon.client();
        raw.send(format!("{line}\n").as_bytes());
        let reply = raw.reply().expect("a reply");
        let text = serde_json::to_string(&reply).expect("JSON");
        assert!(text.len() <= REPLY_BYTES, "{line}: {} bytes", text.len());
        let page = &reply["result"];
        pages += 1;
        seen.extend(users_of(page));
        match page["next"].as_u64() {
            Some(next) => line = format!("REPORT 1/1 AFTER {next}"),
            None => break,
        }
    }
    assert_eq!(seen, users);
    assert!(pages > 1, "the reply limit cut the report into pages");
    // refused, nothing else happens
    for bad in [
        "REPORT 1/1 LIMIT 0",
        "REPORT 1/1 LIMIT 1001",
        "REPORT 1/1 AFTER 0",
        "REPORT 1/1 AFTER 1795341600000-0",
        "REPORT 1/1 USER 7",
    ] {
        assert_eq!(c.error_code(bad), "bad_request", "{bad}");
    }
    // meetingctl: every page
    let csv = crate::harness::meetingctl(daemon.socket(), &["report", "1", "--csv"]);
    assert_eq!(csv.status, 0, "{}", csv.stderr);
    let lines: Vec<&str> = csv.stdout.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1 + users.len(), "{}", csv.stdout);
    let listed: Vec<u64> = lines[1..]
        .iter()
        .filter_map(|l| l.split(',').nth(2)?.parse().ok())
        .collect();
    assert_eq!(listed, users);
    let json = crate::harness::meetingctl(daemon.socket(), &["--json", "report", "1/1"]);
    assert_eq!(json.status, 0, "{}", json.stderr);
    assert_eq!(json.stdout.lines().count(), 1, "{}", json.stdout);
    let merged: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("JSON");
    assert_eq!(users_of(&merged["result"]), users);
    assert_eq!(merged["result"]["next"], serde_json::Value::Null);
    let table = crate::harness::meetingctl(daemon.socket(), &["report", "1/1"]);
    assert_eq!(table.status, 0, "{}", table.stderr);
    // the rows' table: its USER column lists every user
    let mut lines = table.stdout.lines().skip_while(|l| !l.contains("USER"));
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    let column = header
        .iter()
        .position(|h| *h == "USER")
        .expect("a USER column");
    let listed: Vec<u64> = lines
        .filter_map(|l| l.split_whitespace().nth(column)?.parse().ok())
        .collect();
    assert_eq!(listed, users, "{}", table.stdout);
    assert!(!table.stdout.contains("next"), "{}", table.stdout);
}

#[test]
fn archive_backfill_archives_what_ended_before_then_live_and_nothing_twice() {
    let db = Sqlite::new();
    let redis = Redis::start();
    let url = redis.url();
    // a daemon without an archive loads the library, and goes
    let mut daemon = Daemon::start(&redis, &[]);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some());
    let mut c = conn(&redis);
    // written while nothing archives: no outbox, nothing queued
    let from = base();
    let to = hand_computed(&mut c, from);
    bulk(&mut c, 2..=4, from, 5, 5);
    assert_eq!(redis.cli(&["EXISTS", "meetingd:{p1}:outbox"]).trim(), "0");
    let env_url = db.url();
    // the archive's URL comes from the environment, as a daemon's does
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meetingd"))
            .args(args)
            .env("MEETINGD_ARCHIVE__URL", &env_url)
            .env("MEETINGD_ARCHIVE__POLL_MS", "50")
            .output()
            .expect("meetingd runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run(&["archive", "--backfill", "--redis", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("4 ended instances: 0 archived before, 4 queued"),
        "{out}"
    );
    assert_eq!(
        db.rows(&format!(
            "SELECT user_id, {} FROM attendance WHERE meeting_id = 1 ORDER BY user_id",
            int_sql(&db, "round(seconds_present * 1000)")
        )),
        vec!["1|3060000", "2|400", "3|3590000"]
    );
    assert_eq!(
        db.rows(&format!(
            "SELECT {} FROM instances WHERE meeting_id = 1",
            ms_sql(&db, "ended_at")
        )),
        vec![to.to_string()]
    );
    let per =
        db.rows("SELECT meeting_id, count(*) FROM events GROUP BY meeting_id ORDER BY meeting_id");
    assert_eq!(per, vec!["1|8", "2|10", "3|10", "4|10"]);
    // again: everything is archived, nothing queued or written twice
    let (code, out) = run(&["archive", "--backfill", "--redis", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("4 ended instances: 4 archived before, 0 queued"),
        "{out}"
    );
    assert_eq!(
        db.rows("SELECT meeting_id, count(*) FROM events GROUP BY meeting_id ORDER BY meeting_id"),
        per
    );
    outbox_drained(&redis);
    // then live: a serving daemon archives what ends from now on, and a
    // backfill beside it finds nothing to queue
    let daemon = start(&redis, &env(&db.url()));
    bulk(&mut c, 5..=5, from + 7_200_000, 5, 5);
    wait_archived(&db, 5, &daemon);
    let (code, out) = run(&["archive", "--backfill", "--redis", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("5 ended instances: 5 archived before, 0 queued"),
        "{out}"
    );
    drop(daemon);
    // without an archive configured it cannot run
    let (code, out) = crate::harness::meetingd_run("archive", &["--backfill", "--redis", &url]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no archive is configured"), "{out}");
}

/// Bring `db` to schema version 1 as meetingd 0.2 left it (its migration
/// alone, run by sqlx as the daemon runs it), holding one user row written
/// from a hash: user 7, "Old".
fn schema_version_1(db: &dyn ArchiveDb) {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;
    let (backend, url) = meetingd::archive::Backend::of_url(&db.url()).expect("a url");
    let sql = match backend {
        meetingd::archive::Backend::Postgres => {
            include_str!("../../migrations/postgres/0001_archive.sql")
        }
        meetingd::archive::Backend::MySql => {
            include_str!("../../migrations/mysql/0001_archive.sql")
        }
        meetingd::archive::Backend::Sqlite => {
            include_str!("../../migrations/sqlite/0001_archive.sql")
        }
    };
    let migrator = Migrator {
        migrations: Cow::Owned(vec![Migration::new(
            1,
            Cow::Borrowed("archive"),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )]),
        ..Migrator::DEFAULT
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        match backend {
            meetingd::archive::Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&url).await.expect("postgres");
                migrator.run(&pool).await.expect("migration 1");
            }
            meetingd::archive::Backend::MySql => {
                let pool = sqlx::MySqlPool::connect(&url).await.expect("mariadb");
                migrator.run(&pool).await.expect("migration 1");
            }
            meetingd::archive::Backend::Sqlite => {
                let options =
                    <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
                        .expect("sqlite url")
                        .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(options)
                    .await
                    .expect("sqlite");
                migrator.run(&pool).await.expect("migration 1");
            }
        }
    });
    let now = if db.url().starts_with("sqlite") {
        "'2000-01-01T00:00:00.000+00:00'"
    } else {
        "'2000-01-01 00:00:00'"
    };
    db.rows(&format!(
        "INSERT INTO users (user_id, name, age, gender, email, archived_at) \
         VALUES (7, 'Old', 99, 'x', 'old@example.com', {now})"
    ));
    assert_eq!(
        db.rows("SELECT max(version) FROM _sqlx_migrations"),
        vec!["1"]
    );
}

/// A user's row in the archive, `name|age|gender|email`.
fn user_row(db: &dyn ArchiveDb, user: u64) -> String {
    one(
        db,
        &format!("SELECT name, age, gender, email FROM users WHERE user_id = {user}"),
    )
}

/// Wait until user `user`'s row in the archive reads `row`.
fn wait_user(db: &dyn ArchiveDb, user: u64, row: &str, daemon: &Daemon) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while user_row(db, user) != row {
        assert!(
            std::time::Instant::now() < deadline,
            "user {user} is {:?}, not {row}: {}",
            user_row(db, user),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Users archived as USER SET writes them, on a database brought from
/// schema version 1: the migration keeps the old row (version 0, so any
/// entry replaces it); a USER SET is in `users` without any instance, a
/// second one replaces it; a row of a later entry is not replaced by an
/// earlier one; a user queued by its first call whose hash still holds
/// older values (the second call not yet made) keeps the queued values
/// when an instance they were in is archived from the hash; a user
/// written before archiving is archived from its hash with its instance.
fn users_as_written(db: &dyn ArchiveDb) {
    schema_version_1(db);
    let redis = Redis::start();
    let daemon = start(&redis, &env(&db.url()));
    wait_until("schema version 2", Duration::from_secs(30), || {
        one(db, "SELECT max(version) FROM _sqlx_migrations") == "2"
    });
    assert_eq!(
        one(
            db,
            "SELECT name, source_ms, source_seq FROM users WHERE user_id = 7"
        ),
        "Old|0|0"
    );
    let mut client = daemon.client();
    client.ok("USER SET 7 name Ada age 036 gender female email Ada@Example.com");
    wait_user(db, 7, "Ada|36|female|ada@example.com", &daemon);
    assert_eq!(one(db, "SELECT count(*) FROM instances"), "0");
    client.ok("USER SET 7 name Grace age 40 gender female email grace@example.com");
    wait_user(db, 7, "Grace|40|female|grace@example.com", &daemon);
    // a later entry's row stands; 71 shares user 7's outbox (partition 7
    // of 64), so once its entry is archived, 7's before it was too
    let shift = "1000000000000";
    db.rows(&format!(
        "UPDATE users SET source_ms = source_ms + {shift} WHERE user_id = 7"
    ));
    client.ok("USER SET 7 name Stale age 1 gender x email stale@example.com");
    client.ok("USER SET 71 name Marker age 2 gender x email marker@example.com");
    wait_user(db, 71, "Marker|2|x|marker@example.com", &daemon);
    assert_eq!(user_row(db, 7), "Grace|40|female|grace@example.com");
    // user 8: its hash says Hash, the entry of a USER SET whose second
    // call has not run yet says Queued; user 9: written before (no entry)
    let mut c = conn(&redis);
    call(
        &mut c,
        "meet_user_set",
        "meetingd:{u8}:user",
        &["Hash", "30", "m", "hash@example.com"],
    );
    call(
        &mut c,
        "meet_user_index",
        "meetingd:{p8}:users",
        &["8", "Queued", "31", "m", "queued@example.com"],
    );
    call(
        &mut c,
        "meet_user_set",
        "meetingd:{u9}:user",
        &["Nine", "9", "f", "nine@example.com"],
    );
    wait_user(db, 8, "Queued|31|m|queued@example.com", &daemon);
    assert_eq!(user_row(db, 9), "");
    let from = base();
    let key = meeting_key(3);
    call(&mut c, "meet_meeting_set", &key, &["Three", "", "true"]);
    let (f, t) = (from.to_string(), (from + 60_000).to_string());
    call(
        &mut c,
        "meet_instance_set",
        &key,
        &["1", &f, &t, &(from - 60_000).to_string()],
    );
    tick_all(&mut c, 3..=3, from);
    for (u, email) in [("8", "hash@example.com"), ("9", "nine@example.com")] {
        call(
            &mut c,
            "meet_join",
            &key,
            &["", u, email, &(from + 1000).to_string()],
        );
    }
    tick_all(&mut c, 3..=3, from + 65_000);
    wait_archived(db, 1, &daemon);
    assert_eq!(user_row(db, 8), "Queued|31|m|queued@example.com");
    assert_eq!(user_row(db, 9), "Nine|9|f|nine@example.com");
    assert_eq!(
        one(
            db,
            "SELECT source_ms, source_seq FROM users WHERE user_id = 9"
        ),
        "0|0"
    );
}

#[test]
fn archive_users_as_written_sqlite() {
    users_as_written(&Sqlite::new());
}

#[test]
fn archive_users_as_written_postgres() {
    users_as_written(&Postgres::start());
}

#[test]
fn archive_users_as_written_mariadb() {
    users_as_written(&Mariadb::start());
}

/// USER SETs sent one after the other while the daemon is killed with
/// SIGKILL (between writes, or inside one, and before its archiver took
/// every entry): another daemon archives every USER SET that was
/// acknowledged, with its values; at most the one in flight besides.
#[test]
fn archive_users_acknowledged_survive_a_killed_daemon() {
    let db = Postgres::start();
    let redis = Redis::start();
    let env = env(&db.url());
    let daemon = start(&redis, &env);
    let socket = daemon.socket().to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut client = crate::harness::Client::connect(&socket).expect("connect");
        let mut acked = Vec::new();
        for u in 1..=100_000u64 {
            let line = format!(
                "USER SET {u} name N{u} age {} gender g email u{u}@example.com",
                u % 151
            );
            match client.try_request(&line) {
                Some(reply) if reply.get("error").is_none() => acked.push(u),
                _ => break,
            }
        }
        acked
    });
    wait_until("some users archived", Duration::from_secs(60), || {
        one(&db, "SELECT count(*) FROM users")
            .parse::<u64>()
            .unwrap_or(0)
            >= 200
    });
    daemon.signal(libc::SIGKILL);
    let acked = writer.join().expect("the writer");
    drop(daemon);
    let archived_at_kill = one(&db, "SELECT count(*) FROM users");
    eprintln!(
        "{} USER SETs acknowledged, {archived_at_kill} archived when killed",
        acked.len()
    );
    let last = start(&redis, &env);
    let expected: Vec<String> = acked
        .iter()
        .map(|u| format!("{u}|N{u}|{}|u{u}@example.com", u % 151))
        .collect();
    let sql = "SELECT user_id, name, age, email FROM users ORDER BY user_id";
    wait_until(
        "every acknowledged user archived",
        Duration::from_secs(90),
        || {
            let rows = db.rows(sql);
            expected.iter().all(|row| rows.contains(row))
        },
    );
    wait_until("the outboxes drained", Duration::from_secs(30), || {
        last.client().ok("STATS")["archive"]["waiting"] == 0
    });
    let rows = db.rows(sql);
    assert!(
        rows.len() <= acked.len() + 1,
        "{} rows for {} acknowledged",
        rows.len(),
        acked.len()
    );
    outbox_drained(&redis);
}

/// An archiver held to a share of its time (`archive.busy_percent`)
/// pauses only while requests keep the daemon busy: with none in progress
/// it never pauses; beside a steady stream of requests it pauses between
/// pages (STATS' `paused_s`), and still archives every instance whole,
/// once: instances of several pages of messages each.
#[test]
fn archive_a_paced_archiver_pauses_for_requests_only_and_archives_everything_whole() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = Sqlite::new();
    let redis = Redis::start();
    let mut env = env(&db.url());
    env.push(("MEETINGD_ARCHIVE__BUSY_PERCENT", "20".into()));
    let daemon = start(&redis, &env);
    let mut c = conn(&redis);
    let (users, messages) = (40, 2_500);
    let from = base();
    bulk(&mut c, 1..=2, from, users, messages);
    wait_archived(&db, 2, &daemon);
    let paused = |d: &Daemon| {
        d.client().ok("STATS")["archive"]["paused_s"]
            .as_f64()
            .expect("paused_s")
    };
    assert_eq!(paused(&daemon), 0.0, "no request in progress: no pause");
    // requests without a break on four connections (EVENTS reads Redis)
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let socket = daemon.socket().to_path_buf();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = crate::harness::Client::connect(&socket).expect("connect");
                while !stop.load(Ordering::SeqCst) {
                    client.ok("EVENTS 1/1 LIMIT 50");
                }
            })
        })
        .collect();
    bulk(&mut c, 3..=4, from + 7_200_000, users, messages);
    wait_archived(&db, 4, &daemon);
    stop.store(true, Ordering::SeqCst);
    for thread in load {
        thread.join().expect("a load thread");
    }
    assert!(paused(&daemon) > 0.0, "busy: it paused");
    assert_whole(&db, 4, users, messages);
    outbox_drained(&redis);
}

/// Calls of each command Redis ran since the last `CONFIG RESETSTAT`.
fn command_calls(redis: &Redis) -> std::collections::BTreeMap<String, u64> {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_string(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

/// The commands the archiver reads its outboxes with.
const OUTBOX_READS: [&str; 5] = ["xreadgroup", "xautoclaim", "xlen", "xrange", "xclaim"];

/// Wait until the archiver started last (since the last reset of the
/// counts) is done with its start: it has looked at every outbox and at
/// each one its subscription woke it for (what was announced before the
/// subscription went unseen: 64 XREADGROUPs), every outbox channel has
/// `daemons` subscribers, and for a second no outbox was read from.
fn settled(redis: &Redis, daemons: u64) {
    wait_until("the start-up reads", Duration::from_secs(30), || {
        let reads = command_calls(redis).get("xreadgroup").copied().unwrap_or(0);
        let channels: Vec<String> = (0..64)
            .map(|p| format!("meetingd:{{p{p}}}:outbox"))
            .collect();
        let mut args = vec!["PUBSUB", "SHARDNUMSUB"];
        args.extend(channels.iter().map(String::as_str));
        let counts = redis.cli(&args);
        let subscribed = counts
            .lines()
            .skip(1)
            .step_by(2)
            .filter(|n| n.trim() == daemons.to_string())
            .count();
        reads >= 64 && subscribed == 64
    });
    let mut last = command_calls(redis);
    wait_until("the archivers idle", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_secs(1));
        let now = command_calls(redis);
        // (a look at every outbox counts them, XLEN: a quick
        // archive.poll_ms goes on doing that)
        let same = ["xreadgroup", "xautoclaim", "xclaim"]
            .iter()
            .all(|r| now.get(*r) == last.get(*r));
        last = now;
        same
    });
}

/// With the look at every outbox far away (`archive.poll_ms` at its most,
/// 10 minutes), an idle archiver sends Redis nothing, and an ended
/// instance is archived at once all the same: its outbox entry wakes the
/// archiver (the library announces it on the partition's channel), which
/// then reads that partition's outbox only.
#[test]
fn archive_is_woken_by_new_entries_and_idle_reads_nothing() {
    let db = Sqlite::new();
    let redis = Redis::start();
    let mut env = env(&db.url());
    env.retain(|(k, _)| *k != "MEETINGD_ARCHIVE__POLL_MS");
    env.push(("MEETINGD_ARCHIVE__POLL_MS", "600000".into()));
    let daemon = start(&redis, &env);
    settled(&redis, 1);
    // idle: a few seconds pass
    redis.cli(&["CONFIG", "RESETSTAT"]);
    std::thread::sleep(Duration::from_secs(3));
    let idle = command_calls(&redis);
    for read in OUTBOX_READS {
        assert_eq!(idle.get(read), None, "{read} while idle: {idle:?}");
    }
    // the subscription that wakes it: one connection, 64 channels
    let subscribed = redis.cli(&["PUBSUB", "SHARDNUMSUB", "meetingd:{p3}:outbox"]);
    assert!(subscribed.lines().nth(1) == Some("1"), "{subscribed}");
    // an instance in partition 3 ends: archived long before any look at
    // every outbox
    let mut c = conn(&redis);
    bulk(&mut c, 3..=3, base(), 4, 4);
    wait_archived(&db, 1, &daemon);
    assert_whole_one(&db, 3, 4, 4);
    let woken = command_calls(&redis);
    assert!(
        woken.get("spublish").copied().unwrap_or(0) >= 3,
        "{woken:?}"
    );
    // the outboxes read: partition 3's (and no sweep over all 64)
    assert!(
        woken.get("xreadgroup").copied().unwrap_or(0) < 16,
        "{woken:?}"
    );
    assert!(woken.get("xlen").copied().unwrap_or(0) < 16, "{woken:?}");
    outbox_drained(&redis);
}

/// `assert_whole` for one meeting `m`.
fn assert_whole_one(db: &dyn ArchiveDb, m: u64, users: u64, messages: u64) {
    let count = |table: &str| {
        one(
            db,
            &format!("SELECT count(*) FROM {table} WHERE meeting_id = {m}"),
        )
    };
    assert_eq!(count("events"), (2 * users).to_string());
    assert_eq!(count("messages"), messages.to_string());
    assert_eq!(count("attendance"), users.to_string());
}

/// A wake-up that never came only delays: an entry appended without its
/// announcement (as if the announcement were lost) is archived once the
/// subscriber connection is lost and subscribed again (every channel
/// subscribed anew is a wake-up), and, by a second daemon, at its next look
/// at every outbox (`archive.poll_ms`).
#[test]
fn archive_a_lost_wake_up_only_delays() {
    let db = Sqlite::new();
    let redis = Redis::start();
    let mut env = env(&db.url());
    env.retain(|(k, _)| *k != "MEETINGD_ARCHIVE__POLL_MS");
    let mut slow = env.clone();
    slow.push(("MEETINGD_ARCHIVE__POLL_MS", "600000".into()));
    let first = start(&redis, &slow);
    settled(&redis, 1);
    let unannounced = |m: u64, title: &str| {
        let key = format!("meetingd:{{p{}}}:outbox", m % 64);
        let m = m.to_string();
        redis.cli(&[
            "XADD",
            &key,
            "*",
            "k",
            "meeting",
            "m",
            &m,
            "title",
            title,
            "description",
            "",
            "public",
            "true",
        ])
    };
    let title_of = |m: u64| {
        db.rows(&format!(
            "SELECT title FROM meetings WHERE meeting_id = {m}"
        ))
    };
    unannounced(7, "Seven");
    // the subscriber connection lost: subscribed again, every partition
    // looked at
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.trim().parse::<u64>().unwrap_or(0) > 0,
        "a subscriber connection killed: {killed}"
    );
    wait_until(
        "the unannounced entry archived",
        Duration::from_secs(60),
        || title_of(7) == ["Seven"],
    );
    assert!(
        first.log().contains("subscriber connection was lost"),
        "{}",
        first.log()
    );
    // a daemon that looks every second: its first look over, an
    // unannounced entry waits for the next
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let mut quick = env.clone();
    quick.push(("MEETINGD_ARCHIVE__POLL_MS", "1000".into()));
    let _second = start(&redis, &quick);
    settled(&redis, 2);
    unannounced(8, "Eight");
    wait_until("archived at a later look", Duration::from_secs(60), || {
        title_of(8) == ["Eight"]
    });
    outbox_drained(&redis);
}

/// On a Redis Cluster, two daemons archive instances whose partitions are
/// held by different masters, each outbox entry once: the wake-ups reach
/// both (one subscriber connection per master each), the consumer group
/// gives each entry to one of them.
#[test]
fn archive_on_a_cluster_two_daemons_archive_each_entry_once() {
    use crate::cluster::Cluster;
    let cluster = Cluster::start(3);
    let db = Postgres::start();
    let mut env = env(&db.url());
    // no takeover: an entry archived twice would count twice below
    env.retain(|(k, _)| *k != "MEETINGD_ARCHIVE__CLAIM_AFTER_SECS");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Daemon::start_on_cluster(&cluster.urls(), &env);
    let b = Daemon::start_on_cluster(&cluster.urls(), &env);
    let meetings: Vec<u64> = (1..=9).collect();
    let owners: std::collections::BTreeSet<u16> = meetings
        .iter()
        .map(|m| cluster.owner(&format!("meetingd:{{p{m}}}:outbox")))
        .collect();
    assert!(
        owners.len() >= 2,
        "partitions on one master only: {owners:?}"
    );
    let users = 5u64;
    let mut c = a.client();
    for u in 1..=users {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@example.com"
        ));
    }
    for m in &meetings {
        c.ok(&format!(
            "MEETING SET {m} title M{m} description \"\" public true"
        ));
        c.ok(&format!(
            "INSTANCE SET {m} 1 from {} to {}",
            crate::harness::at(-5),
            crate::harness::at(60)
        ));
    }
    c.ok("TICK");
    for m in &meetings {
        for u in 1..=users {
            c.ok(&format!("JOIN {u} {m}/1"));
        }
        c.ok(&format!("POST 1 {m}/1 \"hello {m}\""));
        c.ok(&format!("LEAVE 2 {m}/1"));
        c.ok(&format!("END {m}/1"));
    }
    wait_archived(&db, meetings.len(), &a);
    // each instance whole, as the daemon tells it
    for m in &meetings {
        let events = crate::harness::all_pages(&mut c, &format!("EVENTS {m}/1"), "events");
        let messages = crate::harness::all_pages(&mut c, &format!("MESSAGES {m}/1"), "messages");
        let count = |table: &str| {
            one(
                &db,
                &format!("SELECT count(*) FROM {table} WHERE meeting_id = {m} AND order_id = 1"),
            )
        };
        // the start and end entries live in the instance's row
        let of_users = events.iter().filter(|e| !e["user"].is_null()).count();
        assert_eq!(count("events"), of_users.to_string(), "events of {m}/1");
        assert_eq!(
            count("messages"),
            messages.len().to_string(),
            "messages of {m}/1"
        );
        assert_eq!(
            count("attendance"),
            users.to_string(),
            "attendance of {m}/1"
        );
        assert_eq!(
            events.len() as u64,
            2 * users + 2,
            "the start, joins, a leave, the end, timeouts"
        );
    }
    // every entry (a user's, a meeting's, an instance's, an end) archived
    // by one daemon or the other, once
    let expected = users + 3 * meetings.len() as u64;
    let entries = |d: &Daemon| {
        d.client().ok("STATS")["archive"]["entries"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until("every entry counted", Duration::from_secs(30), || {
        entries(&a) + entries(&b) >= expected
    });
    assert_eq!(entries(&a) + entries(&b), expected);
    for p in 0..64 {
        let key = format!("meetingd:{{p{p}}}:outbox");
        assert_eq!(cluster.cli_cluster(&["XLEN", &key]).trim(), "0", "{key}");
    }
    // the wake-ups rode on one subscriber connection per master each
    for d in [&a, &b] {
        let readers = d.client().ok("STATS")["watch"]["readers"].as_u64();
        assert!(readers <= Some(3), "{readers:?} subscriber connections");
    }
}

/// An instance archived again (queued once more, as a backfill does)
/// over a partial copy of it: the pages find some of their rows there
/// already (PostgreSQL's plain insert then falls back to skipping them),
/// and the archive ends whole, each row once.
fn archived_again_over_a_partial_copy(db: &dyn ArchiveDb) {
    let redis = Redis::start();
    let daemon = start(&redis, &env(&db.url()));
    let mut c = conn(&redis);
    let (users, messages) = (30, 1_500);
    bulk(&mut c, 1..=2, base(), users, messages);
    wait_archived(db, 2, &daemon);
    assert_whole(db, 2, users, messages);
    // half of meeting 1's rows lost, and its instance not archived whole
    for table in ["events", "messages"] {
        db.rows(&format!(
            "DELETE FROM {table} WHERE meeting_id = 1 AND user_id % 2 = 0"
        ));
    }
    db.rows("UPDATE instances SET archived_at = NULL WHERE meeting_id = 1");
    let queued = call(&mut c, "meet_archive_enqueue", &meeting_key(1), &["1"]);
    assert_eq!(queued, redis::Value::Int(1));
    wait_archived(db, 2, &daemon);
    assert_whole(db, 2, users, messages);
    outbox_drained(&redis);
}

#[test]
fn archive_again_over_a_partial_copy_postgres() {
    archived_again_over_a_partial_copy(&Postgres::start());
}

#[test]
fn archive_again_over_a_partial_copy_sqlite() {
    archived_again_over_a_partial_copy(&Sqlite::new());
}
