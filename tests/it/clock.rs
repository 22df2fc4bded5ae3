//! An instance's state is a function of the clock (issue 24, item 1):
//! windows that open and close between ticks, read and written through the
//! store on an injected clock and through the socket, with no sleeping.
//! Every time is relative to `t0` or to the system clock; none is a date.

use std::collections::BTreeMap;

use meetingd::error::Code;
use meetingd::store::{
    Event, EventKind, InstanceId, InstanceRef, InstanceState, Keys, Store, StoreError,
};

use crate::harness::{
    Daemon, MIN, Redis, commandstats, public_meeting, state, stored_state, t0, users,
};

fn code<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Code {
    result.expect_err("refused").code()
}

async fn events(store: &Store, instance: InstanceId) -> Vec<Event> {
    let (_, page) = store
        .events(instance.into(), None, 1000)
        .await
        .expect("events");
    assert_eq!(page.next, None, "one page is all");
    page.items
}

/// A user's event's user.
fn user(event: &Event) -> u64 {
    event.user.expect("a user's event")
}

fn timeouts(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Timeout)
        .collect()
}

/// What ACTIVE lists, as (instance, participants).
async fn active(store: &Store) -> Vec<(InstanceId, u64)> {
    store
        .active()
        .await
        .expect("active")
        .into_iter()
        .map(|row| (row.instance.id, row.participants))
        .collect()
}

/// What ATTENDANCE lists, as (instance, users).
async fn attendance(store: &Store) -> Vec<(InstanceId, Vec<u64>)> {
    store
        .attendance()
        .await
        .expect("attendance")
        .into_iter()
        .map(|row| {
            (
                row.instance,
                row.participants.iter().map(|p| p.user).collect(),
            )
        })
        .collect()
}

async fn states(store: &Store, meeting: u64) -> Vec<InstanceState> {
    store
        .meeting_get(meeting)
        .await
        .expect("meeting get")
        .instances
        .iter()
        .map(|i| i.state)
        .collect()
}

/// A window that opens between two ticks: reads say it runs from its
/// `from` on, with nobody in it and without writing anything, and a JOIN
/// (by `M` and by `M/O`) gets in at once; the tick after it finds nothing
/// to do.
#[tokio::test]
async fn a_window_opening_between_ticks_accepts_a_join_at_once() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=2).await;
    public_meeting(&store, 1).await;
    let inst = InstanceId::new(1, 1);
    let from = t0() + 30_500;
    store
        .instance_set(inst, from, from + 10 * MIN)
        .await
        .expect("instance");
    let ticked = store.tick(t0()).await.expect("tick");
    assert!(ticked.activated.is_empty(), "not yet");

    // just before the window: nothing runs
    clock.set(from - 1);
    assert_eq!(states(&store, 1).await, [InstanceState::Scheduled]);
    assert_eq!(
        code(store.resolve(InstanceRef::Current(1)).await),
        Code::Inactive
    );
    assert_eq!(code(store.join(1, inst.into()).await), Code::Inactive);

    // the window has opened; the next tick is 30 s away
    clock.set(from + 300);
    let before = redis.digest().await;
    assert_eq!(states(&store, 1).await, [InstanceState::Active]);
    assert_eq!(active(&store).await, [(inst, 0)]);
    assert_eq!(attendance(&store).await, [(inst, vec![])]);
    assert_eq!(
        store.resolve(InstanceRef::Current(1)).await.expect("by M"),
        inst
    );
    let (named, nobody) = store
        .participants(InstanceRef::Current(1), None, 1000)
        .await
        .expect("participants");
    assert_eq!((named, nobody.len()), (inst, 0));
    let (named, none) = store
        .events(InstanceRef::Current(1), None, 1000)
        .await
        .expect("events by M");
    assert_eq!((named, none.items.len()), (inst, 0));
    assert_eq!(redis.digest().await, before, "reads wrote nothing");
    assert_eq!(
        stored_state(&redis, &store, inst).await,
        InstanceState::Scheduled
    );

    // a JOIN by M starts the instance and joins it; one by M/O joins it too
    let joined = store.join(1, InstanceRef::Current(1)).await.expect("by M");
    assert_eq!((joined.instance, joined.joined_at), (inst, from + 300));
    clock.advance(1);
    store.join(2, inst.into()).await.expect("by M/O");
    assert_eq!(
        stored_state(&redis, &store, inst).await,
        InstanceState::Active
    );
    assert_eq!(active(&store).await, [(inst, 2)]);
    assert_eq!(attendance(&store).await, [(inst, vec![1, 2])]);
    assert_eq!(states(&store, 1).await, [InstanceState::Active]);

    // the tick finds it started: nothing twice
    let ticked = store.tick(store.now()).await.expect("tick");
    assert!(
        ticked.activated.is_empty() && ticked.ended.is_empty() && ticked.missed.is_empty(),
        "{ticked:?}"
    );
    redis.assert_consistent();
}

/// A window that closes between two ticks: reads say it ended, with
/// nobody in it, and write nothing; JOIN, POST and LEAVE are refused, the
/// first of them ending it with its timeouts stamped at `to`; the tick
/// after it times out nobody twice.
#[tokio::test]
async fn a_window_closing_between_ticks_refuses_writes_and_reads_say_ended() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=3).await;
    public_meeting(&store, 1).await;
    let inst = InstanceId::new(1, 1);
    let to = t0() + 10 * MIN + 500;
    store.instance_set(inst, t0(), to).await.expect("instance");
    store.tick(t0()).await.expect("tick");
    for u in 1..=3 {
        clock.advance(1000);
        store.join(u, inst.into()).await.expect("join");
    }
    clock.advance(1000);
    store
        .post(1, inst.into(), "bye soon", None)
        .await
        .expect("post");
    store.leave(3, inst.into()).await.expect("leave");

    // the window has closed; the next tick is 59.5 s away
    let late = to + 300;
    clock.set(late);
    let before = redis.digest().await;
    assert_eq!(states(&store, 1).await, [InstanceState::Ended]);
    assert_eq!(active(&store).await, []);
    assert_eq!(attendance(&store).await, []);
    let (_, nobody) = store
        .participants(inst.into(), None, 1000)
        .await
        .expect("participants");
    assert!(nobody.is_empty(), "{nobody:?}");
    assert_eq!(
        code(
            store
                .participants(InstanceRef::Current(1), None, 1000)
                .await
        ),
        Code::Inactive
    );
    assert_eq!(
        code(store.resolve(InstanceRef::Current(1)).await),
        Code::Inactive
    );
    assert_eq!(
        code(store.events(InstanceRef::Current(1), None, 10).await),
        Code::Inactive
    );
    assert_eq!(redis.digest().await, before, "reads wrote nothing");

    // writes: refused, the first one applying the end
    assert_eq!(
        code(store.join(3, InstanceRef::Current(1)).await),
        Code::Inactive
    );
    assert_eq!(
        stored_state(&redis, &store, inst).await,
        InstanceState::Ended
    );
    clock.advance(5);
    assert_eq!(
        code(
            store
                .post(1, InstanceRef::Current(1), "still here?", None)
                .await
        ),
        Code::Inactive
    );
    assert_eq!(code(store.leave(1, inst.into()).await), Code::Inactive);
    assert_eq!(code(store.end(inst.into()).await), Code::Inactive);
    let log = events(&store, inst).await;
    let stamped: Vec<(u64, i64, Option<i64>, Option<i64>)> = timeouts(&log)
        .iter()
        .map(|e| (user(e), e.at, e.scheduled_end, e.processed_at))
        .collect();
    assert_eq!(
        stamped,
        [(1, to, Some(to), Some(late)), (2, to, Some(to), Some(late))],
        "stamped at the scheduled end, processed at the JOIN that met it"
    );
    for pair in log.windows(2) {
        assert!(
            pair[0].at <= pair[1].at,
            "times never go backwards: {log:?}"
        );
    }

    // the tick: nothing twice
    let ticked = store.tick(store.now()).await.expect("tick");
    assert!(
        ticked.ended.is_empty() && ticked.timeouts == 0,
        "{ticked:?}"
    );
    assert_eq!(events(&store, inst).await.len(), log.len());
    redis.assert_consistent();
}

/// More timeouts than a call's budget: the call that meets the end stamps
/// a first share, and the tick drains the rest, each exactly once and all
/// at `to`.
#[tokio::test]
async fn a_big_instance_over_between_ticks_is_drained_once() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=150).await;
    public_meeting(&store, 1).await;
    let inst = InstanceId::new(1, 1);
    let to = t0() + MIN;
    store.instance_set(inst, t0(), to).await.expect("instance");
    for u in 1..=150 {
        store.join(u, inst.into()).await.expect("join");
    }
    clock.set(to + 10);
    assert_eq!(code(store.leave(1, inst.into()).await), Code::Inactive);
    let first = timeouts(&events(&store, inst).await).len();
    assert!(first > 0 && first < 150, "a share: {first}");
    let ticked = store.tick(to + 20).await.expect("tick");
    assert_eq!(ticked.timeouts as usize, 150 - first);
    let log = events(&store, inst).await;
    let all = timeouts(&log);
    assert_eq!(all.len(), 150);
    assert!(all.iter().all(|e| e.at == to), "all at the scheduled end");
    let mut users: Vec<u64> = all.iter().map(|e| user(e)).collect();
    users.sort_unstable();
    assert_eq!(users, (1..=150).collect::<Vec<_>>(), "each once");
    redis.assert_consistent();
}

/// Overlapping windows: a higher order opening between ticks pre-empts the
/// running instance from the JOIN that meets it (its participants time
/// out, at that moment); a lower order opening under a running higher one
/// does not; reads agree before any write.
#[tokio::test]
async fn a_higher_order_opening_between_ticks_preempts_from_a_join() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=3).await;
    public_meeting(&store, 1).await;
    public_meeting(&store, 2).await;
    let (long, short) = (InstanceId::new(1, 1), InstanceId::new(1, 2));
    store
        .instance_set(long, t0(), t0() + 60 * MIN)
        .await
        .expect("long");
    let opens = t0() + 20 * MIN + 250;
    store
        .instance_set(short, opens, t0() + 40 * MIN)
        .await
        .expect("short");
    // meeting 2: the running instance has the higher order
    let (high, low) = (InstanceId::new(2, 5), InstanceId::new(2, 3));
    store
        .instance_set(high, t0(), t0() + 60 * MIN)
        .await
        .expect("high");
    store
        .instance_set(low, opens, t0() + 30 * MIN)
        .await
        .expect("low");
    store.tick(t0()).await.expect("tick");
    clock.advance(1000);
    store.join(1, long.into()).await.expect("join long");
    store.join(2, long.into()).await.expect("join long");
    store.join(1, high.into()).await.expect("join high");
    redis.assert_consistent();

    let now = opens + 250;
    clock.set(now);
    let before = redis.digest().await;
    assert_eq!(
        states(&store, 1).await,
        [InstanceState::Ended, InstanceState::Active]
    );
    assert_eq!(
        states(&store, 2).await,
        [InstanceState::Scheduled, InstanceState::Active],
        "the lower order waits"
    );
    assert_eq!(active(&store).await, [(short, 0), (high, 1)]);
    let (_, nobody) = store
        .participants(long.into(), None, 1000)
        .await
        .expect("participants");
    assert!(nobody.is_empty());
    assert_eq!(redis.digest().await, before, "reads wrote nothing");

    let joined = store.join(3, InstanceRef::Current(1)).await.expect("join");
    assert_eq!(joined.instance, short);
    let stamped: Vec<(u64, i64, Option<i64>)> = timeouts(&events(&store, long).await)
        .iter()
        .map(|e| (user(e), e.at, e.scheduled_end))
        .collect();
    assert_eq!(
        stamped,
        [
            (1, now, Some(t0() + 60 * MIN)),
            (2, now, Some(t0() + 60 * MIN))
        ],
        "pre-empted now, its scheduled end kept"
    );
    let joined = store.join(3, InstanceRef::Current(2)).await.expect("join");
    assert_eq!(joined.instance, high, "no pre-emption by a lower order");
    assert_eq!(
        stored_state(&redis, &store, low).await,
        InstanceState::Scheduled
    );
    let ticked = store.tick(now).await.expect("tick");
    assert!(
        ticked.activated.is_empty() && ticked.ended.is_empty() && ticked.timeouts == 0,
        "{ticked:?}"
    );
    redis.assert_consistent();

    // once the high one ends by hand, the low one's window holds: it runs
    store.end(high.into()).await.expect("end");
    assert_eq!(
        stored_state(&redis, &store, low).await,
        InstanceState::Active
    );
    assert_eq!(state(&store, low).await, InstanceState::Active);
    redis.assert_consistent();

    // after the short window, the long one stays ended: nothing runs
    clock.set(t0() + 40 * MIN);
    assert_eq!(
        states(&store, 1).await,
        [InstanceState::Ended, InstanceState::Ended]
    );
    assert_eq!(
        code(store.join(1, InstanceRef::Current(1)).await),
        Code::Inactive
    );
    redis.assert_consistent();
}

/// The commands a JOIN by `M` made Redis run.
async fn join_commands(
    redis: &Redis,
    store: &Store,
    user: u64,
    meeting: u64,
) -> BTreeMap<String, u64> {
    let before = commandstats(redis).await;
    store
        .join(user, InstanceRef::Current(meeting))
        .await
        .expect("join");
    commandstats(redis)
        .await
        .into_iter()
        .filter(|(name, _)| name != "info")
        .filter_map(|(name, calls)| {
            let delta = calls - before.get(&name).copied().unwrap_or(0);
            (delta > 0).then_some((name, delta))
        })
        .collect()
}

/// A meeting with `stored` future instances and one whose window opens at
/// `opens` (no tick since): the commands of the JOIN that starts it, then
/// of a JOIN on the running instance.
async fn joins_among(stored: u64) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=2).await;
    public_meeting(&store, 1).await;
    let opens = t0() + 30_000;
    store
        .instance_set(InstanceId::new(1, 1), opens, opens + 10 * MIN)
        .await
        .expect("the one");
    for order in 2..stored + 2 {
        let from = t0() + (order as i64) * 60 * MIN;
        store
            .instance_set(InstanceId::new(1, order), from, from + 10 * MIN)
            .await
            .expect("a future one");
    }
    store.tick(t0()).await.expect("tick");
    // the users in the daemon's cache, so a JOIN is its library call alone
    for u in 1..=2 {
        store.user_known(u).await.expect("user");
    }
    clock.set(opens + 1);
    let starting = join_commands(&redis, &store, 1, 1).await;
    let hot = join_commands(&redis, &store, 2, 1).await;
    redis.assert_consistent();
    (starting, hot)
}

/// A JOIN that starts an instance does the same work among 10 or 2,000
/// stored instances of its meeting (the upcoming index), and a JOIN on a
/// running instance does what it did before the clock rule: one read, a
/// sorted-set add, the live field, the event and its announcement to the
/// watchers (SPUBLISH).
#[tokio::test]
async fn a_meeting_with_many_instances_stays_cheap() {
    let (few_starting, few_hot) = joins_among(10).await;
    let (many_starting, many_hot) = joins_among(2_000).await;
    assert_eq!(few_starting, many_starting, "the same commands");
    assert_eq!(few_hot, many_hot);
    let hot: BTreeMap<String, u64> = [
        ("fcall", 1),
        ("hmget", 1),
        ("zadd", 1),
        ("hset", 1),
        ("xadd", 1),
        ("spublish", 1),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_string(), n))
    .collect();
    assert_eq!(many_hot, hot, "the hot path: one read");
    let total: u64 = many_starting.values().sum();
    assert!(
        total < 25,
        "starting costs a bounded few: {many_starting:?}"
    );
}

/// Over the socket, with a daemon whose scheduler does not tick after its
/// start: a window opened after the start-up tick takes a JOIN at once and
/// ACTIVE and MEETING GET agree; a window that closed since its last call
/// reads as ended, refuses JOIN, POST and LEAVE, and its timeouts are
/// stamped at its `to`; a TICK afterwards repeats nothing.
#[test]
fn over_the_socket_windows_open_and_close_between_ticks() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_SCHEDULER__CRON", "0 0 0 1 1 *")]);
    let mut c = daemon.client();
    c.ok("USER SET 1 name Ada age 36 gender female email ada@example.com");
    c.ok("USER SET 2 name Bob age 41 gender male email bob@example.com");
    c.ok("USER SET 3 name Cy age 29 gender other email cy@example.com");
    c.ok("MEETING SET 1 title Opening description \"\" public true");
    let ms = |t: i64| {
        chrono::DateTime::from_timestamp_millis(t)
            .expect("a time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let now = chrono::Utc::now().timestamp_millis();
    c.ok(&format!(
        "INSTANCE SET 1 1 from {} to {}",
        ms(now - 1000),
        ms(now + 60 * MIN)
    ));
    assert_eq!(c.ok("MEETING GET 1")["instances"][0]["state"], "active");
    assert_eq!(c.ok("ACTIVE")["instances"][0]["meeting"], 1);
    let joined = c.ok("JOIN 1 1");
    assert_eq!(joined["order"], 1, "{joined}");
    c.ok("JOIN 2 1/1");
    assert_eq!(c.ok("ACTIVE")["instances"][0]["participants"], 2);

    // a meeting whose window closed a minute ago, joined while it was open
    // (by a store whose clock stood then)
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let to = now - MIN;
    runtime.block_on(async {
        let (store, clock) = redis.store(now - 10 * MIN).await;
        public_meeting(&store, 2).await;
        let inst = InstanceId::new(2, 1);
        store
            .instance_set(inst, now - 10 * MIN, to)
            .await
            .expect("instance");
        clock.advance(1000);
        store.join(1, inst.into()).await.expect("join");
        store.join(2, inst.into()).await.expect("join");
    });
    let meeting = c.ok("MEETING GET 2");
    assert_eq!(meeting["instances"][0]["state"], "ended", "{meeting}");
    assert_eq!(c.ok("PARTICIPANTS 2/1"), serde_json::json!([]));
    let active = c.ok("ACTIVE");
    assert!(
        active["instances"]
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r["meeting"] != 2)),
        "{active}"
    );
    assert_eq!(c.error_code("JOIN 3 2"), "inactive");
    assert_eq!(c.error_code("POST 1 2 hello"), "inactive");
    assert_eq!(c.error_code("LEAVE 2 2/1"), "inactive");
    let log = c.ok("EVENTS 2/1");
    let stamped: Vec<(u64, &str, &str)> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "timeout")
        .map(|e| {
            (
                e["user"].as_u64().expect("user"),
                e["at"].as_str().expect("at"),
                e["scheduled_end"].as_str().expect("scheduled end"),
            )
        })
        .collect();
    let end = ms(to);
    assert_eq!(
        stamped,
        [
            (1, end.as_str(), end.as_str()),
            (2, end.as_str(), end.as_str())
        ]
    );
    let tick = c.ok("TICK");
    assert_eq!(tick["ended"], serde_json::json!([]), "{tick}");
    assert_eq!(tick["timeouts"], 0, "{tick}");
    redis.assert_consistent();
}

/// Public meeting 1 with instance 1/1 running since t0 (until an hour
/// later, user 1 in it) and 1/2, of a higher order, to open ten minutes in
/// and pre-empt it: its meeting's `preempt`. Returns 1/2.
async fn held_back(store: &Store) -> InstanceId {
    users(store, 1..=2).await;
    public_meeting(store, 1).await;
    let running = InstanceId::new(1, 1);
    store
        .instance_set(running, t0(), t0() + 60 * MIN)
        .await
        .expect("running");
    let higher = InstanceId::new(1, 2);
    store
        .instance_set(higher, t0() + 10 * MIN, t0() + 20 * MIN)
        .await
        .expect("higher");
    store.tick(t0()).await.expect("tick");
    store.join(1, running.into()).await.expect("join");
    higher
}

/// Data stored by 0.2 has no upcoming index and no `preempt`: `meetingd
/// check` says what is missing, and a daemon's start-up builds both (its
/// pages of the due index go past 1,000 instances due at one time); the
/// JOIN that meets a pre-empting window then starts it.
#[tokio::test]
async fn data_of_0_2_is_indexed_at_start_up_and_check_knows_the_index() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    let higher = held_back(&store).await;
    public_meeting(&store, 2).await;
    for order in 1..=1_200 {
        store
            .instance_set(InstanceId::new(2, order), t0() + 90 * MIN, t0() + 95 * MIN)
            .await
            .expect("one of many");
    }
    redis.assert_consistent();

    // as 0.2 left it
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("DEL")
        .arg(store.keys().upcoming(1))
        .arg(store.keys().upcoming(2))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let _: () = redis::cmd("HDEL")
        .arg(store.keys().meeting(1))
        .arg("preempt")
        .query_async(&mut conn)
        .await
        .expect("HDEL");
    four_part_live(&redis, &store, 1).await;
    let problems = store.check().await.expect("check");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("instance 1/2: scheduled but not in its meeting's upcoming index")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("meeting 1: no preempt")),
        "{problems:?}"
    );
    assert_eq!(
        problems.len(),
        1_202,
        "each instance once, and the preempt: {:?}",
        &problems[..3]
    );

    // a start-up upgrades it, and doing it again changes nothing
    let (again, _) = redis.store(t0()).await;
    redis.assert_consistent();
    let digest = redis.digest().await;
    drop(redis.store(t0()).await);
    assert_eq!(redis.digest().await, digest, "idempotent");
    let indexed: u64 = redis::cmd("ZCARD")
        .arg(again.keys().upcoming(2))
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(indexed, 1_200);

    clock.set(t0() + 10 * MIN + 1);
    let joined = store.join(2, InstanceRef::Current(1)).await.expect("join");
    assert_eq!(joined.instance, higher, "pre-empted from the JOIN");
    redis.assert_consistent();
}

/// Meeting M's live field as a library before 0.4.1 wrote it (four parts:
/// no copy of the `preempt` field), put back in place; returns what it was.
async fn four_part_live(redis: &Redis, store: &Store, meeting: u64) -> String {
    let mut conn = redis.conn().await;
    let live: String = redis::cmd("HGET")
        .arg(store.keys().meeting(meeting))
        .arg("live")
        .query_async(&mut conn)
        .await
        .expect("HGET live");
    let four = live.split('|').take(4).collect::<Vec<_>>().join("|");
    let _: () = redis::cmd("HSET")
        .arg(store.keys().meeting(meeting))
        .arg("live")
        .arg(&four)
        .query_async(&mut conn)
        .await
        .expect("HSET live");
    live
}

/// 0.4.0 kept a meeting's `preempt` only in its own field, where the hot
/// calls now read the live field's copy: `meetingd check` says which live
/// field lacks it, a daemon's start-up copies it (once), and the JOIN that
/// meets the pre-empting window then starts it.
#[tokio::test]
async fn a_preempt_of_0_4_0_is_copied_into_the_live_field_at_start_up() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    let higher = held_back(&store).await;
    redis.assert_consistent();

    // as 0.4.0 left it: the live field in four parts, `preempt` apart
    let live = four_part_live(&redis, &store, 1).await;
    let from = (t0() + 10 * MIN).to_string();
    assert_eq!(live.split('|').nth(4), Some(from.as_str()), "{live}");
    let problems = store.check().await.expect("check");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("does not carry its preempt"),
        "{problems:?}"
    );

    // a start-up copies it, and doing it again changes nothing
    drop(redis.store(t0()).await);
    redis.assert_consistent();
    let digest = redis.digest().await;
    drop(redis.store(t0()).await);
    assert_eq!(redis.digest().await, digest, "idempotent");

    // the way back to 0.4.0 takes the copy out again, the field stays
    let mut conn = redis.conn().await;
    let down: Vec<redis::Value> = redis::cmd("FCALL")
        .arg("meet_upgrade")
        .arg(1)
        .arg(Keys::active(store.keys().partition(1)))
        .arg("")
        .arg(1000)
        .arg("down")
        .query_async(&mut conn)
        .await
        .expect("down");
    assert_eq!(down[1], redis::Value::Int(1), "{down:?}");
    let (live, preempt): (String, String) = redis::cmd("HMGET")
        .arg(store.keys().meeting(1))
        .arg("live")
        .arg("preempt")
        .query_async(&mut conn)
        .await
        .expect("HMGET");
    assert_eq!(live.split('|').count(), 4, "{live}");
    assert_eq!(preempt, from);
    drop(redis.store(t0()).await);
    redis.assert_consistent();

    clock.set(t0() + 10 * MIN + 1);
    let joined = store.join(2, InstanceRef::Current(1)).await.expect("join");
    assert_eq!(joined.instance, higher, "pre-empted from the JOIN");
    redis.assert_consistent();
}

/// A window held back by a running instance of a higher order runs as soon
/// as that instance ends, by END or by INSTANCE SET moving its `to` to now:
/// ACTIVE lists it at once, before any tick.
#[tokio::test]
async fn a_window_held_back_runs_once_the_winner_ends_by_hand() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    public_meeting(&store, 1).await;
    let (high, low) = (InstanceId::new(1, 9), InstanceId::new(1, 4));
    store
        .instance_set(high, t0(), t0() + 60 * MIN)
        .await
        .expect("high");
    store
        .instance_set(low, t0() + MIN, t0() + 30 * MIN)
        .await
        .expect("low");
    store.tick(t0()).await.expect("tick");
    clock.set(t0() + 2 * MIN);
    store.tick(t0() + 2 * MIN).await.expect("tick");
    assert_eq!(active(&store).await, [(high, 0)], "held back");
    assert_eq!(
        stored_state(&redis, &store, low).await,
        InstanceState::Scheduled
    );
    clock.set(t0() + 3 * MIN);
    let moved = store
        .instance_set(high, t0(), t0() + 3 * MIN)
        .await
        .expect("to now");
    assert_eq!(moved.state, InstanceState::Ended);
    assert_eq!(active(&store).await, [(low, 0)]);
    assert_eq!(
        stored_state(&redis, &store, low).await,
        InstanceState::Active
    );
    let ticked = store.tick(t0() + 3 * MIN).await.expect("tick");
    assert!(ticked.activated.is_empty(), "{ticked:?}");
    redis.assert_consistent();
}
