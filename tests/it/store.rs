//! The store's typed methods on a real Redis: the seed documents' scenario,
//! error codes as typed errors, paging, and library upkeep.

use meetingd::error::Code;
use meetingd::store::{
    DEFAULT_PARTITIONS, EventKind, InstanceId, InstanceRef, InstanceState, Library, Meeting, Store,
    StoreError, User,
};

use crate::harness::{Daemon, MIN, Redis, public_meeting, t0};

fn user(id: u64, name: &str, email: &str) -> User {
    User {
        id,
        name: name.into(),
        age: 30,
        gender: "n/a".into(),
        email: email.into(),
    }
}

fn meeting(id: u64, title: &str, public: bool) -> Meeting {
    Meeting {
        id,
        title: title.into(),
        description: format!("about {title}"),
        public,
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Code {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err.code(),
    }
}

/// Three users; a public meeting 1 and private meetings 2 and 3 (Ada and
/// Bob in 2's audience, nobody in 3's); instances past, current, future.
async fn seed(store: &Store) {
    store
        .user_set(&user(1, "Ada", "ADA@example.com"))
        .await
        .expect("user 1");
    store
        .user_set(&user(2, "Bob", "bob@example.com"))
        .await
        .expect("user 2");
    store
        .user_set(&user(3, "Cy", "cy@example.com"))
        .await
        .expect("user 3");
    store
        .meeting_set(&meeting(1, "Town hall", true))
        .await
        .expect("meeting 1");
    store
        .meeting_set(&meeting(2, "Board", false))
        .await
        .expect("meeting 2");
    store
        .meeting_set(&meeting(3, "Secret", false))
        .await
        .expect("meeting 3");
    store
        .audience_add(2, &["ada@example.com".into(), "BOB@example.com".into()])
        .await
        .expect("audience");
    for m in 1..=3 {
        let past = InstanceId::new(m, 1);
        let now = InstanceId::new(m, 2);
        let future = InstanceId::new(m, 3);
        store
            .instance_set(past, t0() - 120 * MIN, t0() - 60 * MIN)
            .await
            .expect("past");
        store
            .instance_set(now, t0() - 10 * MIN, t0() + 50 * MIN)
            .await
            .expect("now");
        store
            .instance_set(future, t0() + 60 * MIN, t0() + 120 * MIN)
            .await
            .expect("future");
    }
}

#[tokio::test]
async fn the_seed_scenario() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    seed(&store).await;
    let tick = store.tick(t0()).await.expect("tick");
    let mut activated = tick.activated.clone();
    activated.sort();
    assert_eq!(
        activated,
        [
            InstanceId::new(1, 2),
            InstanceId::new(2, 2),
            InstanceId::new(3, 2)
        ]
    );
    let mut missed = tick.missed.clone();
    missed.sort();
    assert_eq!(
        missed,
        [
            InstanceId::new(1, 1),
            InstanceId::new(2, 1),
            InstanceId::new(3, 1)
        ]
    );

    // joins allowed and refused
    let town = InstanceRef::Current(1);
    let board = InstanceRef::Current(2);
    let joined = store.join(1, town).await.expect("ada joins the town hall");
    assert_eq!(joined.instance, InstanceId::new(1, 2));
    assert_eq!(joined.joined_at, t0());
    clock.advance(1000);
    store.join(2, town).await.expect("bob joins the town hall");
    clock.advance(1000);
    store.join(3, town).await.expect("cy joins the town hall");
    store
        .join(2, board)
        .await
        .expect("bob is in the board's audience");
    store
        .join(1, board)
        .await
        .expect("ada (upper-case e-mail) is in it");
    assert_eq!(code(store.join(3, board).await), Code::NotAllowed);
    assert_eq!(
        code(store.join(1, InstanceRef::Current(3)).await),
        Code::NotAllowed
    );
    assert_eq!(code(store.join(1, town).await), Code::AlreadyJoined);
    assert_eq!(code(store.join(9, town).await), Code::NotFound);
    assert_eq!(
        code(store.join(1, InstanceRef::Current(9)).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.join(1, InstanceId::new(1, 3).into()).await),
        Code::Inactive
    );
    assert_eq!(
        code(store.join(1, InstanceId::new(1, 1).into()).await),
        Code::Inactive
    );
    assert_eq!(
        code(store.join(1, InstanceId::new(1, 7).into()).await),
        Code::NotFound
    );

    // participants in join order, with paging
    let (_, everybody) = store
        .participants(town, None, 1000)
        .await
        .expect("participants");
    let order: Vec<u64> = everybody.iter().map(|p| p.user).collect();
    assert_eq!(order, [1, 2, 3]);
    let (_, page) = store
        .participants(town, Some((1, None)), 1)
        .await
        .expect("page 2");
    assert_eq!(page.iter().map(|p| p.user).collect::<Vec<_>>(), [2]);
    let names = store.users_known(&order).await.expect("users");
    assert_eq!(
        names[0].as_ref().map(|u| u.email.as_str()),
        Some("ada@example.com")
    );
    assert_eq!(store.users_known(&[1, 42]).await.expect("users")[1], None);

    // chat in order and per user
    clock.advance(1000);
    store.post(1, town, "hello", None).await.expect("post 1");
    store.post(2, town, "hi ada", None).await.expect("post 2");
    store
        .post(1, town, "how are you?", None)
        .await
        .expect("post 3");
    assert_eq!(
        code(store.post(1, InstanceRef::Current(3), "x", None).await),
        Code::NotJoined
    );
    let (_, chat) = store
        .messages(town, None, None, 1000)
        .await
        .expect("messages");
    let texts: Vec<&str> = chat.items.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hello", "hi ada", "how are you?"]);
    assert_eq!(chat.next, None);
    let (_, ada) = store
        .messages(town, Some(1), None, 1000)
        .await
        .expect("ada's");
    assert_eq!(
        ada.items
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["hello", "how are you?"]
    );
    let (_, first) = store.messages(town, None, None, 2).await.expect("page 1");
    assert_eq!(first.items.len(), 2);
    let (_, rest) = store
        .messages(town, None, first.next.as_deref(), 2)
        .await
        .expect("page 2");
    assert_eq!(
        rest.items
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["how are you?"]
    );

    // attendance and active
    let attendance = store.attendance().await.expect("attendance");
    let town_row = attendance
        .iter()
        .find(|a| a.instance == InstanceId::new(1, 2))
        .expect("town hall attended");
    assert_eq!(town_row.title, "Town hall");
    assert_eq!(
        town_row
            .participants
            .iter()
            .map(|p| p.user)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(town_row.participants[1].joined_at, t0() + 1000);
    let active = store.active().await.expect("active");
    assert_eq!(active.len(), 3);
    let row = active
        .iter()
        .find(|a| a.instance.id.meeting == 1)
        .expect("row");
    assert_eq!((row.participants, row.public), (3, true));

    // leave, then the end with timeouts; history stays readable
    clock.advance(1000);
    let left = store.leave(2, town).await.expect("bob leaves");
    assert_eq!(left.left_at, store.now());
    assert_eq!(code(store.leave(2, town).await), Code::NotJoined);
    let ended = store.end(town).await.expect("end");
    assert_eq!(ended.instance, InstanceId::new(1, 2));
    assert_eq!(ended.timed_out, [1, 3]);
    assert_eq!(code(store.end(town).await), Code::Inactive);
    let exact = InstanceRef::Exact(InstanceId::new(1, 2));
    let (_, nobody) = store
        .participants(exact, None, 1000)
        .await
        .expect("after the end");
    assert!(nobody.is_empty());
    let (_, events) = store.events(exact, None, 1000).await.expect("events");
    let log: Vec<(u64, EventKind)> = events
        .items
        .iter()
        .filter_map(|e| Some((e.user?, e.kind)))
        .collect();
    assert_eq!(
        log,
        [
            (1, EventKind::Join),
            (2, EventKind::Join),
            (3, EventKind::Join),
            (2, EventKind::Leave),
            (1, EventKind::Timeout),
            (3, EventKind::Timeout),
        ]
    );
    // the log opens with the start and has the end before the timeouts
    let kinds: Vec<EventKind> = events.items.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&EventKind::Start));
    assert_eq!(kinds[5], EventKind::End, "{kinds:?}");
    assert_eq!(events.items[5].scheduled_end, Some(t0() + 50 * MIN));
    let timeout = &events.items[6];
    assert_eq!(timeout.kind, EventKind::Timeout);
    assert_eq!(timeout.scheduled_end, Some(t0() + 50 * MIN));
    assert_eq!(timeout.processed_at, Some(clock_now(&store)));
    let (_, chat) = store
        .messages(exact, None, None, 1000)
        .await
        .expect("chat kept");
    assert_eq!(chat.items.len(), 3);

    // meeting get shows the states
    let detail = store.meeting_get(1).await.expect("meeting get");
    let states: Vec<InstanceState> = detail.instances.iter().map(|i| i.state).collect();
    assert_eq!(
        states,
        [
            InstanceState::Ended,
            InstanceState::Ended,
            InstanceState::Scheduled
        ]
    );
    let board_detail = store.meeting_get(2).await.expect("board");
    assert_eq!(
        board_detail.audience,
        ["ada@example.com", "bob@example.com"]
    );
}

fn clock_now(store: &Store) -> i64 {
    store.now()
}

#[tokio::test]
async fn end_drains_a_big_instance_in_bounded_calls() {
    let redis = Redis::start();
    let (store, clock) = redis.store_with(t0(), |o| o.timeout_budget = 100).await;
    store
        .meeting_set(&meeting(5, "Big", true))
        .await
        .expect("meeting");
    let big = InstanceId::new(5, 1);
    store
        .instance_set(big, t0(), t0() + MIN)
        .await
        .expect("instance");
    store.tick(t0()).await.expect("tick");
    for u in 1..=250 {
        store
            .user_set(&user(u, "U", &format!("u{u}@x")))
            .await
            .expect("user");
        store.join(u, big.into()).await.expect("join");
        clock.advance(1);
    }
    let ended = store.end(big.into()).await.expect("end");
    assert_eq!(ended.timed_out.len(), 250);
    assert_eq!(ended.timed_out, (1..=250).collect::<Vec<_>>());
    let (_, events) = store.events(big.into(), None, 1000).await.expect("events");
    // 250 joins, 250 timeouts, the start and the end
    assert_eq!(events.items.len(), 502);
}

#[tokio::test]
async fn the_library_is_loaded_again_after_function_flush() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    store.user_set(&user(1, "Ada", "a@x")).await.expect("user");
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let got = store.user_get(1).await.expect("the next call succeeds");
    assert_eq!(got.name, "Ada");
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let active = store.active().await.expect("pipelined calls succeed too");
    assert!(active.is_empty());
}

#[tokio::test]
async fn a_different_loaded_version_is_replaced_at_connect() {
    let redis = Redis::start();
    let mut conn = redis.conn().await;
    let old = Library::new(DEFAULT_PARTITIONS)
        .source
        .replace(&Library::new(DEFAULT_PARTITIONS).version, "0.0.0+old");
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(&old)
        .query_async(&mut conn)
        .await
        .expect("load old");
    let (_store, _clock) = redis.store(t0()).await;
    let version: String = redis::cmd("FCALL")
        .arg("meet_version")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("version");
    assert_eq!(version, Library::new(DEFAULT_PARTITIONS).version);
}

#[tokio::test]
async fn redis_gone_is_unavailable() {
    let redis = Redis::start();
    let (store, _clock) = redis
        .store_with(t0(), |o| o.timeout = std::time::Duration::from_millis(300))
        .await;
    store.user_set(&user(1, "Ada", "a@x")).await.expect("user");
    drop(redis);
    // an answer, not a hang: the deadline only catches a call that never
    // returns
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), store.user_get(1))
        .await
        .expect("the call returns");
    assert_eq!(code(answer), Code::Unavailable);
}

#[tokio::test]
async fn bad_input_is_a_typed_bad_request() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    assert_eq!(
        code(store.user_set(&user(1, "", "a@x")).await),
        Code::BadRequest
    );
    assert_eq!(
        code(store.user_set(&user(1, "A", "no-at")).await),
        Code::BadRequest
    );
    store
        .meeting_set(&meeting(1, "M", true))
        .await
        .expect("meeting");
    assert_eq!(
        code(store.instance_set(InstanceId::new(1, 1), t0(), t0()).await),
        Code::BadRequest
    );
    assert_eq!(
        code(store.audience_add(1, &["nope".into()]).await),
        Code::BadRequest
    );
}

#[tokio::test]
async fn the_library_is_checked_again_after_a_reconnect() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    store.user_set(&user(1, "Ada", "a@x")).await.expect("user");
    // Somebody replaces the library with another version while the store
    // is connected, then the store's connection drops.
    let mut conn = redis.conn().await;
    let other = Library::new(DEFAULT_PARTITIONS)
        .source
        .replace(&Library::new(DEFAULT_PARTITIONS).version, "0.0.0+other");
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&other)
        .query_async(&mut conn)
        .await
        .expect("load another version");
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .expect("kill the store's connection");
    // The first call may see the dropped connection; the store reconnects.
    let mut got = store.user_get(1).await;
    for _ in 0..20 {
        if got.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        got = store.user_get(1).await;
    }
    assert_eq!(got.expect("served after the reconnect").name, "Ada");
    let version: String = redis::cmd("FCALL")
        .arg("meet_version")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("version");
    assert_eq!(
        version,
        Library::new(DEFAULT_PARTITIONS).version,
        "our version is back after the reconnect"
    );
}

#[tokio::test]
async fn corrupt_data_is_internal() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    store
        .meeting_set(&meeting(1, "M", true))
        .await
        .expect("meeting");
    store
        .instance_set(InstanceId::new(1, 1), t0(), t0() + MIN)
        .await
        .expect("instance");
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("HSET")
        .arg(store.keys().schedule(1))
        .arg("1")
        .arg("not|a|window")
        .query_async(&mut conn)
        .await
        .expect("corrupt");
    assert_eq!(
        code(store.instance(InstanceId::new(1, 1)).await),
        Code::Internal
    );
}

#[tokio::test]
async fn with_a_retention_an_ended_instance_s_history_expires() {
    let redis = Redis::start();
    let (store, clock) = redis
        .store_with(t0(), |o| o.retention = std::time::Duration::from_secs(3600))
        .await;
    store.user_set(&user(1, "Ada", "a@x")).await.expect("user");
    store
        .meeting_set(&meeting(1, "M", true))
        .await
        .expect("meeting");
    let instance = InstanceId::new(1, 1);
    store
        .instance_set(instance, t0(), t0() + MIN)
        .await
        .expect("instance");
    store.tick(t0()).await.expect("activate");
    store.join(1, instance.into()).await.expect("join");
    store
        .post(1, instance.into(), "hi", None)
        .await
        .expect("post");
    clock.set(t0() + 2 * MIN);
    let report = store.tick(t0() + 2 * MIN).await.expect("end");
    assert_eq!(report.timeouts, 1);
    let mut conn = redis.conn().await;
    for key in [
        store.keys().events(instance),
        store.keys().chat(instance),
        store.keys().chat_by(instance, 1),
    ] {
        let at: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("PEXPIRETIME");
        assert_eq!(at, t0() + MIN + 3_600_000, "{key}");
    }
}

#[tokio::test]
async fn the_partitions_are_recorded_and_a_store_with_others_is_refused() {
    let redis = Redis::start();
    let (store, _) = redis.store(t0()).await;
    assert_eq!(
        redis.cli(&["GET", "meetingd:{layout}:partitions"]).trim(),
        DEFAULT_PARTITIONS.to_string(),
        "none configured: the default recorded"
    );
    assert_eq!(store.check().await.expect("check"), Vec::<String>::new());

    let mut other = redis.options();
    other.partitions = Some(8);
    let refused = Store::connect(other.clone()).await.err();
    match refused {
        Some(StoreError::Incompatible(message)) => assert!(
            message.contains("redis.partitions is 8")
                && message.contains(&format!("set redis.partitions = {DEFAULT_PARTITIONS}")),
            "{message}"
        ),
        other => panic!("expected a refusal, got {:?}", other.map(|e| e.to_string())),
    }
    assert_eq!(
        redis.cli(&["GET", "meetingd:{layout}:partitions"]).trim(),
        DEFAULT_PARTITIONS.to_string(),
        "the record is not changed by the refused store"
    );
    // a read-only check with the wrong number says so
    other.load_library = false;
    let checker = Store::connect(other).await.expect("a read-only store");
    let problems = checker.check().await.expect("check");
    assert!(
        problems.iter().any(|p| p.contains(&format!(
            "laid out with {DEFAULT_PARTITIONS} partitions, the check ran with 8"
        ))),
        "{problems:?}"
    );

    // the daemon stops at start-up, saying why
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .arg("serve")
        .arg("--socket")
        .arg(dir.path().join("meetingd.sock"))
        .arg("--redis")
        .arg(redis.url())
        .env("MEETINGD_REDIS__PARTITIONS", "8")
        .output()
        .expect("meetingd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("set redis.partitions = {DEFAULT_PARTITIONS}")),
        "{stderr}"
    );
}

/// With no count configured, a store (and a daemon) takes the one the
/// data records.
#[tokio::test]
async fn with_none_configured_the_recorded_count_is_taken() {
    let redis = Redis::start();
    let (store, _) = redis.store_with(t0(), |o| o.partitions = Some(16)).await;
    public_meeting(&store, 20).await;
    let adopted = Store::connect(redis.options()).await.expect("store");
    assert_eq!(adopted.keys().partitions(), 16);
    assert_eq!(adopted.keys().meeting(20), "meetingd:{p4}:meeting:20");
    assert_eq!(
        adopted.meeting_get(20).await.expect("meeting").meeting.id,
        20
    );
    let daemon = Daemon::start(&redis, &[]);
    assert_eq!(daemon.client().ok("MEETING GET 20")["id"], 20);
}

/// The store reads pages in the library's packed shape: texts holding
/// spaces, digits, newlines, tabs and multi-byte characters, and a message
/// stored by 0.1 (its time in an `at` field), come back as written; the
/// packed participant lists of PARTICIPANTS and ATTENDANCE hold the same
/// users and times as the records redis-cli sees.
#[tokio::test]
async fn packed_pages_read_back_what_was_written() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    seed(&store).await;
    store.tick(t0()).await.expect("tick");
    let town = InstanceRef::Current(1);
    for user in 1..=3 {
        store.join(user, town).await.expect("join");
        clock.advance(7);
    }
    let texts = [
        "12 34 5",
        " leading and trailing ",
        "two\nlines\tand a tab",
        "żółw 🐢 ünïcödé",
        "0 0 0 0",
    ];
    let mut written = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let user = 1 + (i as u64 % 3);
        let posted = store.post(user, town, text, None).await.expect("post");
        written.push((posted.id, user, text.to_string(), posted.at));
    }
    // a message as 0.1 wrote it: its time in a field of its own
    let old_at = t0() - 5 * MIN;
    let mut conn = redis.conn().await;
    let old_id: String = redis::cmd("XADD")
        .arg("meetingd:{p1}:chat:1/2")
        .arg("*")
        .arg("u")
        .arg("2")
        .arg("text")
        .arg("from 0.1")
        .arg("at")
        .arg(old_at)
        .query_async(&mut conn)
        .await
        .expect("XADD");
    written.push((old_id, 2, "from 0.1".into(), old_at));

    let (_, page) = store
        .messages(town, None, None, 1000)
        .await
        .expect("messages");
    let read: Vec<(String, u64, String, i64)> = page
        .items
        .into_iter()
        .map(|m| (m.id, m.user, m.text, m.at))
        .collect();
    assert_eq!(read, written);
    let (_, bob) = store
        .messages(town, Some(2), None, 1000)
        .await
        .expect("bob's");
    assert_eq!(
        bob.items
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        [" leading and trailing ", "0 0 0 0"],
        "the user index knows only what went through the library"
    );

    // the records redis-cli sees, against the packed lists
    let records: redis::Value = redis::cmd("FCALL")
        .arg("meet_participants")
        .arg(1)
        .arg("meetingd:{p1}:meeting:1")
        .arg(&["", "", "", ""])
        // the store's time (the window runs by its clock, whatever Redis'
        // own says at the end of an hour)
        .arg(meetingd::clock::Clock::now(&clock))
        .query_async(&mut conn)
        .await
        .expect("records");
    let redis::Value::Array(fields) = records else {
        panic!("{records:?}")
    };
    let redis::Value::Array(flat) = &fields[3] else {
        panic!("{fields:?}")
    };
    let from_records: Vec<(u64, i64)> = flat
        .chunks(2)
        .map(|pair| match pair {
            [redis::Value::BulkString(u), redis::Value::BulkString(t)] => (
                String::from_utf8_lossy(u).parse().unwrap_or(0),
                String::from_utf8_lossy(t).parse().unwrap_or(0),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        from_records,
        [(1, t0()), (2, t0() + 7), (3, t0() + 14)],
        "join order and times"
    );
    let (_, present) = store
        .participants(town, None, 1000)
        .await
        .expect("participants");
    let packed: Vec<(u64, i64)> = present.iter().map(|p| (p.user, p.joined_at)).collect();
    assert_eq!(packed, from_records);
    let attendance = store.attendance().await.expect("attendance");
    let row = attendance
        .iter()
        .find(|a| a.instance == InstanceId::new(1, 2))
        .expect("the town hall");
    let attended: Vec<(u64, i64)> = row
        .participants
        .iter()
        .map(|p| (p.user, p.joined_at))
        .collect();
    assert_eq!(attended, from_records);
}
