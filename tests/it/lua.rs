//! Every function of the library, and every error code it raises, through
//! FCALL exactly as redis-cli sends it (all arguments strings), on a real
//! redis-server. Bad input gets its code and changes nothing (the dataset's
//! digest is the same before and after).

use meetingd::store::Library;
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::harness::{MIN, Redis, code_of, fcall, field, t0, text};

const U1: &str = "meetingd:{u1}:user";
const U2: &str = "meetingd:{u2}:user";
const MEETING: &str = "meetingd:{p1}:meeting:1";
const SCHEDULE: &str = "meetingd:{p1}:schedule:1";
const DUE: &str = "meetingd:{p1}:due";
const ACTIVE: &str = "meetingd:{p1}:active";
const PRESENT: &str = "meetingd:{p1}:present:1/1";
const EVENTS: &str = "meetingd:{p1}:events:1/1";
const CHAT: &str = "meetingd:{p1}:chat:1/1";
const CHAT_BY_1: &str = "meetingd:{p1}:chat:1/1:by:1";

fn ms(t: i64) -> String {
    t.to_string()
}

/// The library for 16 partitions (the README's examples use 16 too).
fn library() -> Library {
    Library::new(16)
}

async fn load(redis: &Redis) -> MultiplexedConnection {
    let mut conn = redis.conn().await;
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&library().source)
        .query_async(&mut conn)
        .await
        .expect("the library loads");
    assert_eq!(name, "meetingd");
    conn
}

/// Users 1 (in the audience) and 2 (not), private meeting 1 with instance
/// 1/1 from t0 to t0+60min, started by a tick at t0.
async fn seed(conn: &mut MultiplexedConnection) {
    let start = ms(t0());
    for (key, email) in [(U1, "Ada@Example.com"), (U2, "bob@example.com")] {
        fcall(conn, "meet_user_set", &[key], &["Name", "30", "x", email])
            .await
            .expect("user set");
    }
    fcall(
        conn,
        "meet_meeting_set",
        &[MEETING],
        &["Standup", "daily", "false"],
    )
    .await
    .expect("meeting set");
    fcall(conn, "meet_audience_add", &[MEETING], &["ADA@example.com"])
        .await
        .expect("audience add");
    fcall(
        conn,
        "meet_instance_set",
        &[MEETING],
        &["1", &start, &ms(t0() + 60 * MIN), &start],
    )
    .await
    .expect("instance set");
    let ticked = fcall(conn, "meet_tick", &[DUE], &[&start])
        .await
        .expect("tick");
    assert_eq!(
        field(&ticked, "activated"),
        Value::Array(vec![Value::BulkString(b"1/1".to_vec())])
    );
}

async fn join(
    conn: &mut MultiplexedConnection,
    user: &str,
    email: &str,
    now: i64,
) -> redis::RedisResult<Value> {
    fcall(conn, "meet_join", &[MEETING], &["", user, email, &ms(now)]).await
}

/// `"<order> <id>"` as its two parts.
fn placed(value: &Value) -> (String, String) {
    let reply = text(value);
    let (order, id) = reply.split_once(' ').expect("order and id");
    (order.to_string(), id.to_string())
}

/// The entries of a page reply's list `name`: (id, fields).
fn entries(reply: &Value, name: &str) -> Vec<(String, Value)> {
    let Value::Array(entries) = field(reply, name) else {
        panic!("{reply:?}")
    };
    entries
        .into_iter()
        .map(|e| match e {
            Value::Array(mut parts) => {
                let fields = parts.pop().expect("fields");
                (text(&parts[0]), fields)
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn version_is_the_crate_version_with_a_digest_and_the_partitions() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    let version = fcall(&mut conn, "meet_version", &[], &[])
        .await
        .expect("version");
    assert_eq!(text(&version), library().version);
    assert!(
        library()
            .version
            .starts_with(concat!(env!("CARGO_PKG_VERSION"), "+"))
    );
    assert!(
        library()
            .version
            .ends_with(&format!("/p16/api{}", meetingd::store::API_LEVEL))
    );
    assert_ne!(Library::new(16).version, Library::new(64).version);
}

#[tokio::test]
async fn read_only_functions_carry_no_writes() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    let listing: Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg("meetingd")
        .query_async(&mut conn)
        .await
        .expect("FUNCTION LIST");
    let Value::Array(libraries) = listing else {
        panic!("{listing:?}")
    };
    let functions = field(&libraries[0], "functions");
    let Value::Array(functions) = functions else {
        panic!("{functions:?}")
    };
    let read_only = [
        "meet_version",
        "meet_user_get",
        "meet_meeting_get",
        "meet_ids",
        "meet_meetings",
        "meet_current",
        "meet_instance_get",
        "meet_participants",
        "meet_active",
        "meet_attendance",
        "meet_messages",
        "meet_events",
        "meet_feed",
        "meet_transitions",
    ];
    assert_eq!(functions.len(), 29, "every operation is registered");
    for function in &functions {
        let name = text(&field(function, "name"));
        assert!(name.starts_with("meet_"), "{name} is prefixed meet_");
        let flags = match field(function, "flags") {
            Value::Array(flags) | Value::Set(flags) => flags.iter().map(text).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let expected: Vec<String> = if read_only.contains(&name.as_str()) {
            vec!["no-writes".into()]
        } else {
            vec![]
        };
        assert_eq!(flags, expected, "flags of {name}");
    }
}

#[tokio::test]
async fn users_are_set_lower_cased_and_read() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    let set = fcall(
        &mut conn,
        "meet_user_set",
        &[U1],
        &["Ada", "36", "female", "ADA@Example.COM"],
    )
    .await
    .expect("set");
    assert_eq!(text(&field(&set, "email")), "ada@example.com");
    assert_eq!(text(&field(&set, "id")), "1");
    let got = fcall(&mut conn, "meet_user_get", &[U1], &[])
        .await
        .expect("get");
    assert_eq!(got, set);
    assert_eq!(text(&field(&got, "name")), "Ada");
    assert_eq!(text(&field(&got, "age")), "36");
    assert_eq!(
        code_of(fcall(&mut conn, "meet_user_get", &[U2], &[]).await),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn meetings_audiences_and_instances() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    let added = fcall(
        &mut conn,
        "meet_audience_add",
        &[MEETING],
        &["c@x.org", "ada@example.com"],
    )
    .await
    .expect("add");
    assert_eq!(field(&added, "changed"), Value::Int(1));
    let deleted = fcall(&mut conn, "meet_audience_del", &[MEETING], &["C@X.ORG"])
        .await
        .expect("del");
    assert_eq!(field(&deleted, "changed"), Value::Int(1));
    assert_eq!(field(&deleted, "audience_total"), Value::Int(1));
    fcall(
        &mut conn,
        "meet_instance_set",
        &[MEETING],
        &["2", &ms(t0() + 120 * MIN), &ms(t0() + 180 * MIN)],
    )
    .await
    .expect("second instance");
    let got = fcall(&mut conn, "meet_meeting_get", &[MEETING], &[])
        .await
        .expect("meeting get");
    assert_eq!(text(&field(&got, "title")), "Standup");
    assert_eq!(text(&field(&got, "public")), "false");
    assert_eq!(field(&got, "instances_total"), Value::Int(2));
    let Value::Array(instances) = field(&got, "instances") else {
        panic!()
    };
    let states: Vec<String> = instances
        .iter()
        .map(|row| match row {
            Value::Array(cols) => format!("{}:{}", text(&cols[0]), text(&cols[3])),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(states, ["1:active", "2:scheduled"]);
    let current = fcall(&mut conn, "meet_current", &[MEETING], &[])
        .await
        .expect("current");
    assert_eq!(text(&current), "1");
    let active = fcall(&mut conn, "meet_active", &[ACTIVE], &[])
        .await
        .expect("active");
    assert_eq!(field(&active, "next"), Value::Nil);
    let Value::Array(rows) = field(&active, "rows") else {
        panic!("{active:?}")
    };
    let row: Vec<String> = match &rows[..] {
        [Value::Array(cols)] => cols.iter().map(text).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        row,
        [
            "1".to_string(),
            "1".into(),
            "Standup".into(),
            "daily".into(),
            "false".into(),
            ms(t0()),
            ms(t0() + 60 * MIN),
            "0".into()
        ]
    );
}

#[tokio::test]
async fn join_post_read_leave_end() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    let joined = join(&mut conn, "1", "ada@example.com", t0() + 1000)
        .await
        .expect("join");
    assert_eq!(
        placed(&joined),
        ("1".to_string(), format!("{}-0", t0() + 1000))
    );
    let posted = fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["1", "1", "hello \"all\"\n", &ms(t0() + 1000)],
    )
    .await
    .expect("post");
    // same millisecond as the join: the shared sequence goes on
    assert_eq!(placed(&posted).1, format!("{}-1", t0() + 1000));
    let page = fcall(&mut conn, "meet_participants", &[MEETING], &[""])
        .await
        .expect("participants");
    assert_eq!(text(&field(&page, "order")), "1");
    assert_eq!(
        field(&page, "participants"),
        Value::Array(vec![
            Value::BulkString(b"1".to_vec()),
            Value::BulkString(ms(t0() + 1000).into_bytes())
        ])
    );
    let attendance = fcall(&mut conn, "meet_attendance", &[ACTIVE], &[])
        .await
        .expect("attendance");
    assert_eq!(field(&attendance, "next"), Value::Nil);
    let mine = fcall(&mut conn, "meet_messages", &[MEETING], &["1", "1"])
        .await
        .expect("messages by user");
    let all = fcall(&mut conn, "meet_messages", &[MEETING], &[""])
        .await
        .expect("messages");
    assert_eq!(mine, all);
    let messages = entries(&all, "messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(text(&field(&messages[0].1, "text")), "hello \"all\"\n");
    let left = fcall(
        &mut conn,
        "meet_leave",
        &[MEETING],
        &["1", "1", &ms(t0() + 2000)],
    )
    .await
    .expect("leave");
    assert_eq!(placed(&left).1, format!("{}-0", t0() + 2000));
    join(&mut conn, "1", "ada@example.com", t0() + 3000)
        .await
        .expect("join again");
    let ended = fcall(&mut conn, "meet_end", &[MEETING], &["", &ms(t0() + 4000)])
        .await
        .expect("end");
    assert_eq!(text(&field(&ended, "ended_at")), ms(t0() + 4000));
    assert_eq!(
        field(&ended, "timed_out"),
        Value::Array(vec![Value::BulkString(b"1".to_vec())])
    );
    let events = fcall(&mut conn, "meet_events", &[MEETING], &["1"])
        .await
        .expect("events");
    let kinds: Vec<String> = entries(&events, "events")
        .iter()
        .map(|(_, f)| text(&field(f, "t")))
        .collect();
    // start, join, leave, join, end, timeout
    assert_eq!(kinds, ["4", "1", "2", "1", "5", "3"]);
    let ticked = fcall(&mut conn, "meet_tick", &[DUE], &[&ms(t0() + 600 * MIN)])
        .await
        .expect("tick");
    assert_eq!(
        field(&ticked, "handled"),
        Value::Int(0),
        "an ended instance is no longer due"
    );
}

/// Every error code the library raises, each from the call that should
/// raise it, and nothing written by any of them (but the end that the clock
/// made due, which the first late call applies).
#[tokio::test]
async fn every_error_code_and_nothing_written() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    join(&mut conn, "1", "ada@example.com", t0() + 1000)
        .await
        .expect("join");
    let before = redis.digest().await;
    let t = ms(t0() + 2000);
    let max_u64 = u64::MAX.to_string();
    let over_u64 = format!("0-{}0", u64::MAX / 10 + 1);
    let over_ms = format!("{max_u64}1-0");
    let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
        // BAD_REQUEST: arity, ids, times, e-mails, texts, keys, cursors
        ("meet_join", MEETING, vec!["", "1"], "BAD_REQUEST"),
        (
            "meet_join",
            MEETING,
            vec!["", "x", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            MEETING,
            vec!["", "0", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            MEETING,
            vec!["", "-1", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            MEETING,
            vec!["", "9007199254740992", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            MEETING,
            vec!["", "2", "no-at-sign", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            MEETING,
            vec!["", "2", "b@x", "soon"],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            MEETING,
            vec!["", "2", "b@x", "1.5e12"],
            "BAD_REQUEST",
        ),
        ("meet_join", U1, vec!["", "2", "b@x", &t], "BAD_REQUEST"),
        // a JOIN's or LEAVE's key of other bytes than A-Za-z0-9._:-
        (
            "meet_join",
            MEETING,
            vec!["", "2", "b@x", &t, "0", "bad/key"],
            "BAD_REQUEST",
        ),
        (
            "meet_leave",
            MEETING,
            vec!["", "1", &t, "0", "bad key"],
            "BAD_REQUEST",
        ),
        // a meeting under another partition's tag, or a tag that is no
        // partition's name
        (
            "meet_join",
            "meetingd:{p5}:meeting:1",
            vec!["", "2", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_meeting_set",
            "meetingd:{p5}:meeting:1",
            vec!["EVIL", "d", "true"],
            "BAD_REQUEST",
        ),
        (
            "meet_meeting_set",
            "meetingd:{p01}:meeting:1",
            vec!["EVIL", "d", "true"],
            "BAD_REQUEST",
        ),
        (
            "meet_meeting_set",
            "meetingd:{p99}:meeting:99",
            vec!["EVIL", "d", "true"],
            "BAD_REQUEST",
        ),
        ("meet_tick", "meetingd:{p16}:due", vec![&t], "BAD_REQUEST"),
        ("meet_tick", "meetingd:{p01}:due", vec![&t], "BAD_REQUEST"),
        (
            "meet_active",
            "meetingd:{p99}:active",
            vec![],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            U2,
            vec!["Bob", "151", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            U2,
            vec!["Bob", "-1", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            U2,
            vec!["Bo\x01b", "30", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            U2,
            vec!["", "30", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            "meetingd:{u0}:user",
            vec!["Bob", "30", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_meeting_set",
            MEETING,
            vec!["T", "d", "maybe"],
            "BAD_REQUEST",
        ),
        (
            "meet_meeting_set",
            MEETING,
            vec!["T\n", "d", "true"],
            "BAD_REQUEST",
        ),
        (
            "meet_audience_add",
            MEETING,
            vec!["ok@x", "bad"],
            "BAD_REQUEST",
        ),
        ("meet_audience_add", MEETING, vec![], "BAD_REQUEST"),
        (
            "meet_instance_set",
            MEETING,
            vec!["2", "2000", "2000"],
            "BAD_REQUEST",
        ),
        (
            "meet_instance_set",
            MEETING,
            vec!["2", "3000", "2000"],
            "BAD_REQUEST",
        ),
        (
            "meet_instance_set",
            MEETING,
            vec!["2", "2026-11-22", "2000"],
            "BAD_REQUEST",
        ),
        ("meet_post", MEETING, vec!["1", "1", "", &t], "BAD_REQUEST"),
        (
            "meet_post",
            MEETING,
            vec!["1", "1", "bell\x07", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_post",
            MEETING,
            vec!["1", "1", "hi", &t, "0", "bad key!"],
            "BAD_REQUEST",
        ),
        (
            "meet_participants",
            MEETING,
            vec!["1", "", "1001"],
            "BAD_REQUEST",
        ),
        (
            "meet_participants",
            MEETING,
            vec!["1", "", "0"],
            "BAD_REQUEST",
        ),
        (
            "meet_messages",
            MEETING,
            vec!["1", "", "yesterday"],
            "BAD_REQUEST",
        ),
        // a reply shape other than 'packed'
        (
            "meet_messages",
            MEETING,
            vec!["1", "", "", "", "", "flat"],
            "BAD_REQUEST",
        ),
        (
            "meet_participants",
            MEETING,
            vec!["1", "", "", "rows"],
            "BAD_REQUEST",
        ),
        (
            "meet_attendance",
            ACTIVE,
            vec!["", "", "", "", "x"],
            "BAD_REQUEST",
        ),
        (
            "meet_messages",
            MEETING,
            vec!["1", "", "999999999999999-99999999999999999999"],
            "BAD_REQUEST",
        ),
        ("meet_events", MEETING, vec!["1", &over_u64], "BAD_REQUEST"),
        // an order that is not an id (empty means the running instance)
        ("meet_events", MEETING, vec!["x"], "BAD_REQUEST"),
        ("meet_messages", MEETING, vec!["0"], "BAD_REQUEST"),
        ("meet_end", MEETING, vec!["-1", &t], "BAD_REQUEST"),
        ("meet_feed", MEETING, vec!["1", &over_ms], "BAD_REQUEST"),
        ("meet_tick", DUE, vec![&t, "", "1001"], "BAD_REQUEST"),
        // NOT_FOUND: user, meeting, instance
        ("meet_user_get", "meetingd:{u3}:user", vec![], "NOT_FOUND"),
        (
            "meet_meeting_get",
            "meetingd:{p2}:meeting:2",
            vec![],
            "NOT_FOUND",
        ),
        (
            "meet_audience_add",
            "meetingd:{p2}:meeting:2",
            vec!["a@b"],
            "NOT_FOUND",
        ),
        (
            "meet_instance_set",
            "meetingd:{p2}:meeting:2",
            vec!["1", "1", "2"],
            "NOT_FOUND",
        ),
        (
            "meet_join",
            MEETING,
            vec!["2", "1", "ada@example.com", &t],
            "NOT_FOUND",
        ),
        ("meet_leave", MEETING, vec!["2", "1", &t], "NOT_FOUND"),
        ("meet_events", MEETING, vec!["2"], "NOT_FOUND"),
        (
            "meet_current",
            "meetingd:{p2}:meeting:2",
            vec![],
            "NOT_FOUND",
        ),
        // NOT_ALLOWED: private meeting, e-mail not in the audience
        (
            "meet_join",
            MEETING,
            vec!["", "2", "bob@example.com", &t],
            "NOT_ALLOWED",
        ),
        // ALREADY_JOINED (the e-mail as given, or in other letters)
        (
            "meet_join",
            MEETING,
            vec!["1", "1", "ada@example.com", &t],
            "ALREADY_JOINED",
        ),
        (
            "meet_join",
            MEETING,
            vec!["", "1", "ADA@example.com", &t],
            "ALREADY_JOINED",
        ),
        // NOT_JOINED: leave or post by somebody who is not in; a lost cursor
        ("meet_leave", MEETING, vec!["1", "2", &t], "NOT_JOINED"),
        ("meet_post", MEETING, vec!["", "2", "hi", &t], "NOT_JOINED"),
        ("meet_participants", MEETING, vec!["1", "2"], "NOT_JOINED"),
    ];
    for (function, key, args, code) in &cases {
        let got = code_of(fcall(&mut conn, function, &[key], args).await);
        assert_eq!(&got, code, "{function} {key} {args:?}");
        // the same call again (checked keys and ids are remembered: the
        // second must be refused the same way)
        let again = code_of(fcall(&mut conn, function, &[key], args).await);
        assert_eq!(&again, code, "again: {function} {key} {args:?}");
    }
    assert_eq!(
        redis.digest().await,
        before,
        "no refused call wrote anything"
    );
    // INACTIVE after the window, though the tick has not run yet: the first
    // call that meets the end applies it (the instance ends, its
    // participant times out at `to`), and is refused; a second finds
    // nothing due and writes nothing
    let late = ms(t0() + 61 * MIN);
    assert_eq!(
        code_of(join(&mut conn, "1", "ada@example.com", t0() + 61 * MIN).await),
        "INACTIVE"
    );
    let after_end = redis.digest().await;
    assert_ne!(after_end, before, "the JOIN ended the instance");
    assert_eq!(
        code_of(fcall(&mut conn, "meet_leave", &[MEETING], &["1", "1", &late]).await),
        "INACTIVE"
    );
    assert_eq!(redis.digest().await, after_end, "nothing due twice");
    for (function, args) in [
        ("meet_end", vec!["1", t.as_str()]),
        ("meet_current", vec![]),
        ("meet_post", vec!["1", "1", "hi", t.as_str()]),
        ("meet_join", vec!["", "1", "ada@example.com", t.as_str()]),
        ("meet_events", vec![""]),
    ] {
        assert_eq!(
            code_of(fcall(&mut conn, function, &[MEETING], &args).await),
            "INACTIVE",
            "{function} {args:?}"
        );
    }
    assert_eq!(
        code_of(fcall(&mut conn, "meet_instance_set", &[MEETING], &["1", "1", "2"]).await),
        "BAD_REQUEST",
        "an ended instance cannot change"
    );
    assert_eq!(
        redis.digest().await,
        after_end,
        "no refused call wrote anything"
    );
}

#[tokio::test]
async fn now_defaults_to_redis_time() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    fcall(
        &mut conn,
        "meet_meeting_set",
        &[MEETING],
        &["Open", "", "true"],
    )
    .await
    .expect("meeting");
    let wall = chrono::Utc::now().timestamp_millis();
    fcall(
        &mut conn,
        "meet_instance_set",
        &[MEETING],
        &["1", &ms(wall - MIN), &ms(wall + MIN)],
    )
    .await
    .expect("instance");
    fcall(&mut conn, "meet_tick", &[DUE], &[])
        .await
        .expect("tick with Redis TIME");
    // a public meeting needs no e-mail
    let joined = fcall(&mut conn, "meet_join", &[MEETING], &["", "7", ""])
        .await
        .expect("join without now");
    let id = placed(&joined).1;
    let at: i64 = id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .expect("ms");
    assert!(
        (at - wall).abs() < 10_000,
        "joined at {at}: Redis' clock (wall {wall})"
    );
}

#[tokio::test]
async fn a_failed_redis_call_keeps_its_code() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    // Corrupt the participants key's type: the library's redis.call fails
    // with WRONGTYPE, which keeps its own code.
    let _: () = redis::cmd("SET")
        .arg(PRESENT)
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("set");
    let code = code_of(join(&mut conn, "1", "ada@example.com", t0() + 1000).await);
    assert_eq!(code, "WRONGTYPE");
}

#[tokio::test]
async fn a_corrupt_entry_is_a_plain_err_never_a_client_code() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    let _: () = redis::cmd("HSET")
        .arg(SCHEDULE)
        .arg("1")
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .expect("hset");
    let code = code_of(fcall(&mut conn, "meet_events", &[MEETING], &["1"]).await);
    assert_eq!(code, "ERR");
}

async fn pexpiretime(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(key)
        .query_async(conn)
        .await
        .expect("PEXPIRETIME")
}

/// With a retention, every history key expires that long after the
/// instance's scheduled end; without one, nothing expires.
#[tokio::test]
async fn retention_makes_history_expire_after_the_scheduled_end() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    let end = t0() + 60 * MIN;
    join(&mut conn, "1", "ada@example.com", t0() + 1000)
        .await
        .expect("join without retention");
    assert_eq!(pexpiretime(&mut conn, EVENTS).await, -1, "kept for ever");
    let day = "86400000";
    fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["1", "1", "hi", &ms(t0() + 2000), day, "k1"],
    )
    .await
    .expect("post");
    assert_eq!(pexpiretime(&mut conn, CHAT).await, end + 86_400_000);
    assert_eq!(pexpiretime(&mut conn, CHAT_BY_1).await, end + 86_400_000);
    assert_eq!(
        pexpiretime(&mut conn, "meetingd:{p1}:posted:1/1").await,
        end + 86_400_000
    );
    fcall(
        &mut conn,
        "meet_leave",
        &[MEETING],
        &["1", "1", &ms(t0() + 3000), day],
    )
    .await
    .expect("leave");
    assert_eq!(pexpiretime(&mut conn, EVENTS).await, end + 86_400_000);
    assert_eq!(
        code_of(
            fcall(
                &mut conn,
                "meet_leave",
                &[MEETING],
                &["1", "1", &ms(t0() + 3000), "a day"],
            )
            .await
        ),
        "BAD_REQUEST"
    );
}

/// Times in an instance never go backwards: a `now` before the last event
/// (a clock that went back, or `now` = 1 from redis-cli) is stamped with
/// the last event's time, and nothing is stamped before the window opened.
#[tokio::test]
async fn event_times_never_go_backwards() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    let first = join(&mut conn, "1", "ada@example.com", 1)
        .await
        .expect("join at now = 1");
    // the join started the instance: its start entry took the first id
    assert_eq!(
        placed(&first).1,
        format!("{}-1", t0()),
        "not before the window"
    );
    fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["", "1", "a", &ms(t0() + 5000)],
    )
    .await
    .expect("post");
    let back = fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["", "1", "b", &ms(t0() + 10)],
    )
    .await
    .expect("post with a clock gone back");
    assert_eq!(placed(&back).1, format!("{}-1", t0() + 5000));
    // moved to end before the last event: it ends now, the timeout stamped
    // no earlier than the last event
    let moved = fcall(
        &mut conn,
        "meet_instance_set",
        &[MEETING],
        &["1", &ms(t0()), &ms(t0() + 1000), &ms(t0() + 6000)],
    )
    .await
    .expect("end moved into the past");
    assert_eq!(text(&field(&moved, "state")), "ended");
    let events = fcall(&mut conn, "meet_events", &[MEETING], &["1"])
        .await
        .expect("events");
    let timeouts: Vec<(String, String, String)> = entries(&events, "events")
        .into_iter()
        .filter(|(_, f)| text(&field(f, "t")) == "3")
        .map(|(id, f)| (id, text(&field(&f, "at")), text(&field(&f, "end"))))
        .collect();
    assert_eq!(
        timeouts,
        // after the end entry, which took the first id of that moment
        [(
            format!("{}-1", t0() + 6000),
            ms(t0() + 6000),
            ms(t0() + 1000)
        )]
    );
    assert!(
        fcall(&mut conn, "meet_participants", &[MEETING], &["1"])
            .await
            .map(|p| field(&p, "participants") == Value::Array(vec![]))
            .expect("participants"),
        "nobody is left in"
    );
}

/// A POST with a key is stored once: a repeat answers the first message.
#[tokio::test]
async fn a_repeated_post_key_stores_nothing() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    join(&mut conn, "1", "ada@example.com", t0() + 1000)
        .await
        .expect("join");
    let first = fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["", "1", "once", &ms(t0() + 2000), "0", "key-1"],
    )
    .await
    .expect("post");
    let before = redis.digest().await;
    let again = fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["", "1", "once", &ms(t0() + 3000), "0", "key-1"],
    )
    .await
    .expect("post again");
    assert_eq!(text(&again), format!("{} duplicate", text(&first)));
    assert_eq!(redis.digest().await, before, "nothing written");
    let other = fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["", "1", "twice", &ms(t0() + 3000), "0", "key-2"],
    )
    .await
    .expect("another key");
    assert_ne!(placed(&other).1, placed(&first).1);
    let all = fcall(&mut conn, "meet_messages", &[MEETING], &[""])
        .await
        .expect("messages");
    assert_eq!(entries(&all, "messages").len(), 2);
}

/// Long lists go in chunks (no `unpack` of a whole list), and the largest
/// cursor Redis takes reads nothing.
#[tokio::test]
async fn long_lists_and_extreme_cursors() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    let emails: Vec<String> = (0..8500)
        .map(|i| format!("person{i}@example.com"))
        .collect();
    let args: Vec<&str> = emails.iter().map(String::as_str).collect();
    let added = fcall(&mut conn, "meet_audience_add", &[MEETING], &args)
        .await
        .expect("8500 added");
    assert_eq!(field(&added, "changed"), Value::Int(8500));
    let deleted = fcall(&mut conn, "meet_audience_del", &[MEETING], &args)
        .await
        .expect("8500 removed");
    assert_eq!(field(&deleted, "changed"), Value::Int(8500));
    assert_eq!(field(&deleted, "audience_total"), Value::Int(1));
    let max = format!("{0}-{0}", u64::MAX);
    for function in ["meet_events", "meet_feed"] {
        let page = fcall(&mut conn, function, &[MEETING], &["1", &max])
            .await
            .expect("the largest cursor");
        assert_eq!(field(&page, "next"), Value::Nil, "{function}");
    }
    let page = fcall(&mut conn, "meet_messages", &[MEETING], &["1", "", &max])
        .await
        .expect("the largest cursor");
    assert_eq!(entries(&page, "messages"), []);
}

/// Data of version 0.1 (a running instance's last id in its schedule
/// entry, no live field) is brought to this layout by meet_upgrade.
#[tokio::test]
async fn upgrade_moves_a_running_instance_into_the_live_field() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    join(&mut conn, "1", "ada@example.com", t0() + 1000)
        .await
        .expect("join");
    // as 0.1 left it
    let _: () = redis::cmd("HDEL")
        .arg(MEETING)
        .arg("live")
        .query_async(&mut conn)
        .await
        .expect("hdel");
    let _: () = redis::cmd("HSET")
        .arg(SCHEDULE)
        .arg("1#id")
        .arg(format!("{}-0", t0() + 1000))
        .query_async(&mut conn)
        .await
        .expect("hset");
    assert_eq!(
        code_of(fcall(&mut conn, "meet_current", &[MEETING], &[]).await),
        "INACTIVE"
    );
    let upgraded = fcall(&mut conn, "meet_upgrade", &[ACTIVE], &[])
        .await
        .expect("upgrade");
    assert_eq!(field(&upgraded, "upgraded"), Value::Int(1));
    let again = fcall(&mut conn, "meet_upgrade", &[ACTIVE], &[])
        .await
        .expect("upgrade again");
    assert_eq!(field(&again, "upgraded"), Value::Int(0));
    let left = fcall(
        &mut conn,
        "meet_leave",
        &[MEETING],
        &["", "1", &ms(t0() + 1000)],
    )
    .await
    .expect("leave");
    assert_eq!(placed(&left).1, format!("{}-1", t0() + 1000));
}

/// meet_instance_set with FUTURE (ARGV[7]): a started instance keeps its
/// from, a running one an end ahead of now; an equal window is accepted;
/// anything else than FUTURE there is refused. Refusals change nothing.
#[tokio::test]
async fn instance_set_future_changes_only_what_is_to_come() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    let now = ms(t0() + MIN);
    let (from, to) = (ms(t0()), ms(t0() + 60 * MIN));
    let set = |from: String, to: String, flag: &'static str| {
        let now = now.clone();
        let mut conn = conn.clone();
        async move {
            fcall(
                &mut conn,
                "meet_instance_set",
                &[MEETING],
                &["1", &from, &to, &now, "", "", flag],
            )
            .await
        }
    };
    let before = redis.digest().await;
    // 1/1 runs since t0: its start stays, its end may not go behind now
    let moved = set(ms(t0() + 5 * MIN), to.clone(), "FUTURE").await;
    assert_eq!(code_of(moved), "BAD_REQUEST");
    let ended = set(from.clone(), now.clone(), "FUTURE").await;
    assert_eq!(code_of(ended), "BAD_REQUEST");
    let other = set(from.clone(), to.clone(), "LATER").await;
    assert_eq!(code_of(other), "BAD_REQUEST");
    assert_eq!(redis.digest().await, before, "refusals change nothing");
    // the same window: accepted, as it is
    let same = set(from.clone(), to.clone(), "FUTURE").await.expect("same");
    assert_eq!(text(&field(&same, "state")), "active");
    assert_eq!(redis.digest().await, before);
    // a later end: moved, still running
    let later = set(from.clone(), ms(t0() + 90 * MIN), "FUTURE")
        .await
        .expect("a later end");
    assert_eq!(text(&field(&later, "to")), ms(t0() + 90 * MIN));
    assert_eq!(text(&field(&later, "state")), "active");
    // without FUTURE an end moved behind now ends it now
    let now_ended = set(from.clone(), now.clone(), "").await.expect("ends");
    assert_eq!(text(&field(&now_ended, "state")), "ended");
    // ended: the same window is accepted with FUTURE, another is not
    let same = set(from.clone(), now.clone(), "FUTURE")
        .await
        .expect("same");
    assert_eq!(text(&field(&same, "state")), "ended");
    let moved = set(from, ms(t0() + 30 * MIN), "FUTURE").await;
    assert_eq!(code_of(moved), "BAD_REQUEST");
}

/// FCALL with arguments as raw bytes (redis-cli's `$'...\xff'`).
async fn fcall_bytes(
    conn: &mut MultiplexedConnection,
    function: &str,
    key: &str,
    args: &[&[u8]],
) -> redis::RedisResult<Value> {
    redis::cmd("FCALL")
        .arg(function)
        .arg(1)
        .arg(key)
        .arg(args)
        .query_async(conn)
        .await
}

/// Every function that stores text refuses bytes that are not UTF-8
/// (a stray byte, a cut sequence, an overlong form, a surrogate, past
/// U+10FFFF) and the C1 control characters, with BAD_REQUEST and nothing
/// written; the refusal's message is plain text. Well-formed multi-byte
/// text is stored and read back as sent.
#[tokio::test]
async fn text_that_is_not_utf8_is_refused_by_every_function_that_stores_text() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    join(&mut conn, "1", "ada@example.com", t0() + 1000)
        .await
        .expect("join");
    let before = redis.digest().await;
    let t = ms(t0() + 2000);
    let t = t.as_bytes();
    let bad: [&[u8]; 6] = [
        b"bad\xff",
        b"cut \xe2\x82",
        b"overlong \xc0\xaf",
        b"surrogate \xed\xa0\x80",
        b"past \xf4\x90\x80\x80",
        b"c1 \xc2\x85 control",
    ];
    for text in bad {
        let email = [b"a".as_slice(), text, b"@example.com"].concat();
        let cases: Vec<(&str, &str, Vec<&[u8]>)> = vec![
            ("meet_post", MEETING, vec![b"", b"1", text, t]),
            ("meet_user_set", U2, vec![text, b"30", b"x", b"b@x"]),
            ("meet_user_set", U2, vec![b"Bob", b"30", text, b"b@x"]),
            ("meet_user_set", U2, vec![b"Bob", b"30", b"x", &email]),
            ("meet_meeting_set", MEETING, vec![text, b"d", b"true"]),
            ("meet_meeting_set", MEETING, vec![b"t", text, b"true"]),
            ("meet_audience_add", MEETING, vec![&email]),
        ];
        for (function, key, args) in cases {
            let result = fcall_bytes(&mut conn, function, key, &args).await;
            let Err(err) = &result else {
                panic!("{function} {args:?}: stored, {result:?}")
            };
            assert_eq!(
                err.code(),
                Some("BAD_REQUEST"),
                "{function} {args:?}: {err}"
            );
            let message = err.detail().unwrap_or_default();
            assert!(message.is_ascii(), "{function}: {message:?}");
        }
    }
    assert_eq!(redis.digest().await, before, "nothing written");

    let fine = "héllo ✓ 🎉 \u{a0}";
    fcall_bytes(
        &mut conn,
        "meet_post",
        MEETING,
        &[b"", b"1", fine.as_bytes(), t],
    )
    .await
    .expect("well-formed UTF-8 is stored");
    fcall(
        &mut conn,
        "meet_user_set",
        &[U2],
        &["Zoë", "30", "ж", "zoë@exämple.com"],
    )
    .await
    .expect("a user with multi-byte text");
    let all = fcall(&mut conn, "meet_messages", &[MEETING], &[""])
        .await
        .expect("messages");
    let (_, fields) = entries(&all, "messages").pop().expect("the message");
    assert_eq!(
        field(&fields, "text"),
        Value::BulkString(fine.as_bytes().to_vec())
    );
}

/// A chat text may hold every ASCII byte but the control characters, tab
/// and newline excepted: each of the 31 others is refused where it stands
/// (first, inside, last), nothing written; each allowed byte is stored
/// (the library passes usual text by a quick scan and checks the rest in
/// full: both ways are walked here).
#[tokio::test]
async fn chat_text_takes_every_ascii_byte_but_the_control_characters() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    join(&mut conn, "1", "ada@example.com", t0() + 1000)
        .await
        .expect("join");
    let t = ms(t0() + 2000);
    let count = |all: &Value| entries(all, "messages").len();
    let earlier = count(
        &fcall(&mut conn, "meet_messages", &[MEETING], &[""])
            .await
            .expect("messages"),
    );
    let mut stored = 0;
    for byte in 0u8..=127 {
        let refused = (byte < 32 && byte != b'\t' && byte != b'\n') || byte == 127;
        for text in [
            vec![byte, b'a'],
            vec![b'a', byte, b'b'],
            vec![b'a', byte],
            vec![byte, 0xc3, 0xa9],
        ] {
            let before = redis.digest().await;
            let result = fcall_bytes(
                &mut conn,
                "meet_post",
                MEETING,
                &[b"", b"1", &text, t.as_bytes()],
            )
            .await;
            if refused {
                let Err(err) = &result else {
                    panic!("byte {byte} in {text:?}: stored, {result:?}")
                };
                assert_eq!(err.code(), Some("BAD_REQUEST"), "byte {byte}: {err}");
                assert_eq!(redis.digest().await, before, "byte {byte}: nothing written");
            } else {
                result.unwrap_or_else(|err| panic!("byte {byte} in {text:?}: {err}"));
                stored += 1;
            }
        }
    }
    assert_eq!(stored, (128 - 31) * 4);
    let all = fcall(&mut conn, "meet_messages", &[MEETING], &[""])
        .await
        .expect("messages");
    assert_eq!(count(&all), earlier + stored);
}

/// Times a reply cannot write in RFC 3339 (past 9999-12-31T23:59:59.999Z)
/// are refused wherever a time is taken; the last millisecond is not.
#[tokio::test]
async fn times_past_year_9999_are_refused() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    let before = redis.digest().await;
    let last = "253402300799999";
    let past = "253402300800000";
    let fifteen_nines = "999999999999999";
    for (from, to, now) in [
        ("1000", past, ""),
        ("1000", fifteen_nines, ""),
        (past, fifteen_nines, ""),
        ("1000", "2000", past),
    ] {
        let result = fcall(
            &mut conn,
            "meet_instance_set",
            &[MEETING],
            &["7", from, to, now],
        )
        .await;
        assert_eq!(code_of(result), "BAD_REQUEST", "{from} {to} {now}");
    }
    let result = fcall(
        &mut conn,
        "meet_join",
        &[MEETING],
        &["", "1", "ada@example.com", past],
    )
    .await;
    assert_eq!(code_of(result), "BAD_REQUEST");
    assert_eq!(redis.digest().await, before, "nothing written");
    fcall(
        &mut conn,
        "meet_instance_set",
        &[MEETING],
        &["7", "1000", last],
    )
    .await
    .expect("the last millisecond of 9999");
}

/// A POST's key is looked up before the running and joined checks: the
/// retry of a post answers it, as a duplicate, after its user left and
/// after its instance ended (by M/O, and by M alone: the instance that
/// ended last); the same key with another text is refused and writes
/// nothing.
#[tokio::test]
async fn a_post_key_confirms_after_leave_and_end_and_names_one_text() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    join(&mut conn, "1", "ada@example.com", t0() + 1000)
        .await
        .expect("join");
    let first = fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["", "1", "once", &ms(t0() + 2000), "0", "k1"],
    )
    .await
    .expect("post");
    let duplicate = format!("{} duplicate", text(&first));
    fcall(
        &mut conn,
        "meet_leave",
        &[MEETING],
        &["", "1", &ms(t0() + 3000)],
    )
    .await
    .expect("leave");
    let before = redis.digest().await;
    for order in ["", "1"] {
        let again = fcall(
            &mut conn,
            "meet_post",
            &[MEETING],
            &[order, "1", "once", &ms(t0() + 4000), "0", "k1"],
        )
        .await
        .expect("a retry after the leave");
        assert_eq!(text(&again), duplicate, "order {order:?}");
    }
    fcall(&mut conn, "meet_end", &[MEETING], &["", &ms(t0() + 5000)])
        .await
        .expect("end");
    let before_end = redis.digest().await;
    assert_ne!(before, before_end);
    for order in ["", "1"] {
        let again = fcall(
            &mut conn,
            "meet_post",
            &[MEETING],
            &[order, "1", "once", &ms(t0() + 6000), "0", "k1"],
        )
        .await
        .expect("a retry after the end");
        assert_eq!(text(&again), duplicate, "order {order:?}");
    }
    let other = fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["1", "1", "another text", &ms(t0() + 6000), "0", "k1"],
    )
    .await;
    assert_eq!(code_of(other), "BAD_REQUEST");
    // without its key the same post is what it always was: inactive
    let plain = fcall(
        &mut conn,
        "meet_post",
        &[MEETING],
        &["", "1", "once", &ms(t0() + 6000)],
    )
    .await;
    assert_eq!(code_of(plain), "INACTIVE");
    assert_eq!(redis.digest().await, before_end, "nothing written");
}
