//! Every function of the library, and every error code it raises, through
//! FCALL exactly as redis-cli sends it (all arguments strings), on a real
//! redis-server. Bad input gets its code and changes nothing (the dataset's
//! digest is the same before and after).

use meetingd::store::library;
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::harness::{MIN, Redis, code_of, fcall, field, t0, text};

const U1: &str = "meetingd:{u1}:user";
const U2: &str = "meetingd:{u2}:user";
const MEETING: &str = "meetingd:{p1}:meeting:1";
const AUDIENCE: &str = "meetingd:{p1}:audience:1";
const ORDERS: &str = "meetingd:{p1}:orders:1";
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
/// 1/1 from t0 to t0+60min, activated by a tick at t0.
async fn seed(conn: &mut MultiplexedConnection) {
    let start = ms(t0());
    for (key, id, email) in [(U1, "1", "Ada@Example.com"), (U2, "2", "bob@example.com")] {
        fcall(
            conn,
            "meet_user_set",
            &[key],
            &[id, "Name", "30", "x", email],
        )
        .await
        .expect("user set");
    }
    fcall(
        conn,
        "meet_meeting_set",
        &[MEETING],
        &["1", "Standup", "daily", "false"],
    )
    .await
    .expect("meeting set");
    fcall(
        conn,
        "meet_audience_add",
        &[MEETING, AUDIENCE],
        &["1", "ADA@example.com"],
    )
    .await
    .expect("audience add");
    fcall(
        conn,
        "meet_instance_set",
        &[MEETING, ORDERS, SCHEDULE, DUE],
        &["1", "1", &start, &ms(t0() + 60 * MIN)],
    )
    .await
    .expect("instance set");
    fcall(
        conn,
        "meet_tick",
        &[DUE, ACTIVE, SCHEDULE, PRESENT, EVENTS, PRESENT, EVENTS],
        &[&start, "", "", "1", "1", ""],
    )
    .await
    .expect("tick");
}

async fn join(
    conn: &mut MultiplexedConnection,
    user: &str,
    email: &str,
    now: i64,
) -> redis::RedisResult<Value> {
    fcall(
        conn,
        "meet_join",
        &[MEETING, AUDIENCE, SCHEDULE, PRESENT, EVENTS],
        &["1", "1", user, email, &ms(now)],
    )
    .await
}

#[tokio::test]
async fn version_is_the_crate_version_with_a_digest() {
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
        "meet_current",
        "meet_participants",
        "meet_active",
        "meet_instance",
        "meet_attendance",
        "meet_messages",
        "meet_events",
        "meet_feed",
        "meet_due",
    ];
    assert_eq!(functions.len(), 23, "every operation is registered");
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
        &["1", "Ada", "36", "female", "ADA@Example.COM"],
    )
    .await
    .expect("set");
    assert_eq!(text(&field(&set, "email")), "ada@example.com");
    let got = fcall(&mut conn, "meet_user_get", &[U1], &["1"])
        .await
        .expect("get");
    assert_eq!(got, set);
    assert_eq!(text(&field(&got, "name")), "Ada");
    assert_eq!(text(&field(&got, "age")), "36");
    assert_eq!(
        code_of(fcall(&mut conn, "meet_user_get", &[U2], &["2"]).await),
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
        &[MEETING, AUDIENCE],
        &["1", "c@x.org", "ada@example.com"],
    )
    .await
    .expect("add");
    assert_eq!(field(&added, "changed"), Value::Int(1));
    let deleted = fcall(
        &mut conn,
        "meet_audience_del",
        &[MEETING, AUDIENCE],
        &["1", "C@X.ORG"],
    )
    .await
    .expect("del");
    assert_eq!(field(&deleted, "changed"), Value::Int(1));
    assert_eq!(field(&deleted, "audience_total"), Value::Int(1));
    fcall(
        &mut conn,
        "meet_instance_set",
        &[MEETING, ORDERS, SCHEDULE, DUE],
        &["1", "2", &ms(t0() + 120 * MIN), &ms(t0() + 180 * MIN)],
    )
    .await
    .expect("second instance");
    let got = fcall(
        &mut conn,
        "meet_meeting_get",
        &[MEETING, AUDIENCE, ORDERS, SCHEDULE],
        &["1"],
    )
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
    let current = fcall(&mut conn, "meet_current", &[ACTIVE, MEETING], &["1"])
        .await
        .expect("current");
    assert_eq!(text(&current), "1");
    let info = fcall(
        &mut conn,
        "meet_instance",
        &[MEETING, SCHEDULE, PRESENT],
        &["1", "1"],
    )
    .await
    .expect("instance");
    assert_eq!(text(&field(&info, "state")), "active");
    assert_eq!(field(&info, "participants"), Value::Int(0));
    let active = fcall(&mut conn, "meet_active", &[ACTIVE], &[])
        .await
        .expect("active");
    assert_eq!(
        active,
        Value::Array(vec![Value::BulkString(b"1/1".to_vec())])
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
    assert_eq!(text(&field(&joined, "id")), format!("{}-0", t0() + 1000));
    assert_eq!(field(&joined, "joined_at"), Value::Int(t0() + 1000));
    let posted = fcall(
        &mut conn,
        "meet_post",
        &[SCHEDULE, PRESENT, CHAT, CHAT_BY_1],
        &["1", "1", "1", "hello \"all\"\n", &ms(t0() + 1000)],
    )
    .await
    .expect("post");
    // same millisecond as the join: the shared sequence goes on
    assert_eq!(text(&field(&posted, "id")), format!("{}-1", t0() + 1000));
    let page = fcall(
        &mut conn,
        "meet_participants",
        &[SCHEDULE, PRESENT],
        &["1", "1"],
    )
    .await
    .expect("participants");
    assert_eq!(
        page,
        Value::Array(vec![
            Value::BulkString(b"1".to_vec()),
            Value::BulkString(ms(t0() + 1000).into_bytes())
        ])
    );
    let attendance = fcall(
        &mut conn,
        "meet_attendance",
        &[MEETING, SCHEDULE, PRESENT],
        &["1", "1"],
    )
    .await
    .expect("attendance");
    assert_eq!(field(&attendance, "total"), Value::Int(1));
    let mine = fcall(
        &mut conn,
        "meet_messages",
        &[SCHEDULE, CHAT, CHAT_BY_1],
        &["1", "1", "1"],
    )
    .await
    .expect("messages by user");
    let all = fcall(&mut conn, "meet_messages", &[SCHEDULE, CHAT], &["1", "1"])
        .await
        .expect("messages");
    assert_eq!(mine, all);
    let left = fcall(
        &mut conn,
        "meet_leave",
        &[SCHEDULE, PRESENT, EVENTS],
        &["1", "1", "1", &ms(t0() + 2000)],
    )
    .await
    .expect("leave");
    assert_eq!(field(&left, "joined_at"), Value::Int(t0() + 1000));
    join(&mut conn, "1", "ada@example.com", t0() + 3000)
        .await
        .expect("join again");
    let ended = fcall(
        &mut conn,
        "meet_end",
        &[SCHEDULE, PRESENT, EVENTS, DUE, ACTIVE],
        &["1", "1", &ms(t0() + 4000)],
    )
    .await
    .expect("end");
    assert_eq!(field(&ended, "ended_at"), Value::Int(t0() + 4000));
    assert_eq!(
        field(&ended, "timed_out"),
        Value::Array(vec![Value::BulkString(b"1".to_vec())])
    );
    let events = fcall(&mut conn, "meet_events", &[SCHEDULE, EVENTS], &["1", "1"])
        .await
        .expect("events");
    let Value::Array(entries) = field(&events, "events") else {
        panic!()
    };
    let kinds: Vec<String> = entries
        .iter()
        .map(|e| match e {
            Value::Array(parts) => text(&field(&parts[1], "t")),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["1", "2", "1", "3"]);
    let due = fcall(
        &mut conn,
        "meet_due",
        &[DUE, ACTIVE],
        &[&ms(t0() + 10 * 60 * MIN)],
    )
    .await
    .expect("due");
    assert_eq!(
        due,
        Value::Array(vec![]),
        "an ended instance is no longer due"
    );
}

/// Every error code the library raises, each from the call that should
/// raise it, and nothing written by any of them.
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
    let join_keys = [MEETING, AUDIENCE, SCHEDULE, PRESENT, EVENTS];
    let present_2: &str = "meetingd:{p1}:present:1/2";
    let events_2: &str = "meetingd:{p1}:events:1/2";
    let cases: Vec<(&str, Vec<&str>, Vec<&str>, &str)> = vec![
        // BAD_REQUEST: arity, ids, times, e-mails, texts, keys
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "1", "2"],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "x", "2", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "1", "0", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "1", "-1", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "1", "9007199254740992", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "1", "2", "no-at-sign", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "1", "2", "b@x", "soon"],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            vec![
                MEETING,
                AUDIENCE,
                SCHEDULE,
                PRESENT,
                "meetingd:{p1}:events:9/9",
            ],
            vec!["1", "1", "2", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_join",
            vec!["meetingd:{u1}:user"],
            vec!["1", "1", "2", "b@x", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            vec![U2],
            vec!["2", "Bob", "151", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            vec![U2],
            vec!["2", "Bob", "-1", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            vec![U2],
            vec!["2", "Bo\x01b", "30", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            vec![U2],
            vec!["2", "", "30", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_user_set",
            vec![U1],
            vec!["2", "Bob", "30", "m", "b@x"],
            "BAD_REQUEST",
        ),
        (
            "meet_meeting_set",
            vec![MEETING],
            vec!["1", "T", "d", "maybe"],
            "BAD_REQUEST",
        ),
        (
            "meet_meeting_set",
            vec![MEETING],
            vec!["1", "T\n", "d", "true"],
            "BAD_REQUEST",
        ),
        (
            "meet_audience_add",
            vec![MEETING, AUDIENCE],
            vec!["1", "ok@x", "bad"],
            "BAD_REQUEST",
        ),
        (
            "meet_audience_add",
            vec![MEETING, AUDIENCE],
            vec!["1"],
            "BAD_REQUEST",
        ),
        (
            "meet_instance_set",
            vec![MEETING, ORDERS, SCHEDULE, DUE],
            vec!["1", "2", "2000", "2000"],
            "BAD_REQUEST",
        ),
        (
            "meet_instance_set",
            vec![MEETING, ORDERS, SCHEDULE, DUE],
            vec!["1", "2", "3000", "2000"],
            "BAD_REQUEST",
        ),
        (
            "meet_instance_set",
            vec![MEETING, ORDERS, SCHEDULE, DUE],
            vec!["1", "2", "2026-11-22", "2000"],
            "BAD_REQUEST",
        ),
        (
            "meet_post",
            vec![SCHEDULE, PRESENT, CHAT, CHAT_BY_1],
            vec!["1", "1", "1", "", &t],
            "BAD_REQUEST",
        ),
        (
            "meet_participants",
            vec![SCHEDULE, PRESENT],
            vec!["1", "1", "", "1001"],
            "BAD_REQUEST",
        ),
        (
            "meet_participants",
            vec![SCHEDULE, PRESENT],
            vec!["1", "1", "", "0"],
            "BAD_REQUEST",
        ),
        (
            "meet_messages",
            vec![SCHEDULE, CHAT],
            vec!["1", "1", "", "yesterday"],
            "BAD_REQUEST",
        ),
        (
            "meet_tick",
            vec![DUE, ACTIVE],
            vec![&t, "", "", "1", "1"],
            "BAD_REQUEST",
        ),
        (
            "meet_due",
            vec!["meetingd:{u1}:user", ACTIVE],
            vec![&t],
            "BAD_REQUEST",
        ),
        // NOT_FOUND: user, meeting, instance
        (
            "meet_user_get",
            vec!["meetingd:{u3}:user"],
            vec!["3"],
            "NOT_FOUND",
        ),
        (
            "meet_meeting_get",
            vec![
                "meetingd:{p2}:meeting:2",
                "meetingd:{p2}:audience:2",
                "meetingd:{p2}:orders:2",
                "meetingd:{p2}:schedule:2",
            ],
            vec!["2"],
            "NOT_FOUND",
        ),
        (
            "meet_audience_add",
            vec!["meetingd:{p2}:meeting:2", "meetingd:{p2}:audience:2"],
            vec!["2", "a@b"],
            "NOT_FOUND",
        ),
        (
            "meet_instance_set",
            vec![
                "meetingd:{p2}:meeting:2",
                "meetingd:{p2}:orders:2",
                "meetingd:{p2}:schedule:2",
                "meetingd:{p2}:due",
            ],
            vec!["2", "1", "1", "2"],
            "NOT_FOUND",
        ),
        (
            "meet_join",
            vec![MEETING, AUDIENCE, SCHEDULE, present_2, events_2],
            vec!["1", "2", "1", "ada@example.com", &t],
            "NOT_FOUND",
        ),
        (
            "meet_leave",
            vec![SCHEDULE, present_2, events_2],
            vec!["1", "2", "1", &t],
            "NOT_FOUND",
        ),
        (
            "meet_events",
            vec![SCHEDULE, events_2],
            vec!["1", "2"],
            "NOT_FOUND",
        ),
        (
            "meet_current",
            vec!["meetingd:{p2}:active", "meetingd:{p2}:meeting:2"],
            vec!["2"],
            "NOT_FOUND",
        ),
        // NOT_ALLOWED: private meeting, e-mail not in the audience
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "1", "2", "bob@example.com", &t],
            "NOT_ALLOWED",
        ),
        // ALREADY_JOINED
        (
            "meet_join",
            join_keys.to_vec(),
            vec!["1", "1", "1", "ada@example.com", &t],
            "ALREADY_JOINED",
        ),
        // NOT_JOINED: leave or post by somebody who is not in; a lost cursor
        (
            "meet_leave",
            vec![SCHEDULE, PRESENT, EVENTS],
            vec!["1", "1", "2", &t],
            "NOT_JOINED",
        ),
        (
            "meet_post",
            vec![SCHEDULE, PRESENT, CHAT, "meetingd:{p1}:chat:1/1:by:2"],
            vec!["1", "1", "2", "hi", &t],
            "NOT_JOINED",
        ),
        (
            "meet_participants",
            vec![SCHEDULE, PRESENT],
            vec!["1", "1", "2"],
            "NOT_JOINED",
        ),
    ];
    for (function, keys, args, code) in &cases {
        let got = code_of(fcall(&mut conn, function, keys, args).await);
        assert_eq!(&got, code, "{function} {keys:?} {args:?}");
    }
    // INACTIVE: after the window (the tick has not run yet) and after END
    let late = ms(t0() + 61 * MIN);
    assert_eq!(
        code_of(join(&mut conn, "1", "ada@example.com", t0() + 61 * MIN).await),
        "INACTIVE"
    );
    assert_eq!(
        code_of(
            fcall(
                &mut conn,
                "meet_leave",
                &[SCHEDULE, PRESENT, EVENTS],
                &["1", "1", "1", &late]
            )
            .await
        ),
        "INACTIVE"
    );
    assert_eq!(
        redis.digest().await,
        before,
        "no refused call wrote anything"
    );
    fcall(
        &mut conn,
        "meet_end",
        &[SCHEDULE, PRESENT, EVENTS, DUE, ACTIVE],
        &["1", "1", &t],
    )
    .await
    .expect("end");
    let after_end = redis.digest().await;
    assert_eq!(
        code_of(
            fcall(
                &mut conn,
                "meet_end",
                &[SCHEDULE, PRESENT, EVENTS, DUE, ACTIVE],
                &["1", "1", &t]
            )
            .await
        ),
        "INACTIVE"
    );
    assert_eq!(
        code_of(fcall(&mut conn, "meet_current", &[ACTIVE, MEETING], &["1"]).await),
        "INACTIVE"
    );
    assert_eq!(
        code_of(
            fcall(
                &mut conn,
                "meet_post",
                &[SCHEDULE, PRESENT, CHAT, CHAT_BY_1],
                &["1", "1", "1", "hi", &t]
            )
            .await
        ),
        "INACTIVE"
    );
    assert_eq!(
        code_of(
            fcall(
                &mut conn,
                "meet_instance_set",
                &[MEETING, ORDERS, SCHEDULE, DUE],
                &["1", "1", "1", "2"]
            )
            .await
        ),
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
        &["1", "Open", "", "true"],
    )
    .await
    .expect("meeting");
    let wall = chrono::Utc::now().timestamp_millis();
    fcall(
        &mut conn,
        "meet_instance_set",
        &[MEETING, ORDERS, SCHEDULE, DUE],
        &["1", "1", &ms(wall - MIN), &ms(wall + MIN)],
    )
    .await
    .expect("instance");
    fcall(
        &mut conn,
        "meet_tick",
        &[DUE, ACTIVE, SCHEDULE, PRESENT, EVENTS, PRESENT, EVENTS],
        &["", "", "", "1", "1", ""],
    )
    .await
    .expect("tick with Redis TIME");
    let joined = fcall(
        &mut conn,
        "meet_join",
        &[MEETING, AUDIENCE, SCHEDULE, PRESENT, EVENTS],
        &["1", "1", "7", "g@x"],
    )
    .await
    .expect("join without now");
    let at = match field(&joined, "joined_at") {
        Value::Int(n) => n,
        other => panic!("{other:?}"),
    };
    assert!(
        (at - wall).abs() < 10_000,
        "joined_at {at} is Redis' clock (wall {wall})"
    );
}

#[tokio::test]
async fn a_failed_redis_call_keeps_its_code() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    // Corrupt the participants key's type: the library's redis.call fails
    // with WRONGTYPE, which keeps its own code.
    let _: () = redis::cmd("DEL")
        .arg(PRESENT)
        .query_async(&mut conn)
        .await
        .expect("del");
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
async fn a_lua_runtime_error_is_internal_not_err() {
    let redis = Redis::start();
    let mut conn = load(&redis).await;
    seed(&mut conn).await;
    // A corrupt id sequence makes the Lua itself fail (a runtime error).
    let _: () = redis::cmd("HSET")
        .arg(SCHEDULE)
        .arg("1#id")
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .expect("hset");
    let code = code_of(join(&mut conn, "1", "ada@example.com", t0() + 1000).await);
    assert_eq!(code, "INTERNAL");
    // A corrupt schedule entry is reported as such.
    let _: () = redis::cmd("HSET")
        .arg(SCHEDULE)
        .arg("1")
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .expect("hset");
    let code = code_of(join(&mut conn, "1", "ada@example.com", t0() + 1000).await);
    assert_eq!(code, "INTERNAL");
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
        &[SCHEDULE, PRESENT, CHAT, CHAT_BY_1],
        &["1", "1", "1", "hi", &ms(t0() + 2000), day],
    )
    .await
    .expect("post");
    assert_eq!(pexpiretime(&mut conn, CHAT).await, end + 86_400_000);
    assert_eq!(pexpiretime(&mut conn, CHAT_BY_1).await, end + 86_400_000);
    fcall(
        &mut conn,
        "meet_leave",
        &[SCHEDULE, PRESENT, EVENTS],
        &["1", "1", "1", &ms(t0() + 3000), day],
    )
    .await
    .expect("leave");
    assert_eq!(pexpiretime(&mut conn, EVENTS).await, end + 86_400_000);
    assert_eq!(
        code_of(
            fcall(
                &mut conn,
                "meet_leave",
                &[SCHEDULE, PRESENT, EVENTS],
                &["1", "1", "1", &ms(t0() + 3000), "a day"],
            )
            .await
        ),
        "BAD_REQUEST"
    );
}
