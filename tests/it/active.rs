//! ACTIVE and ATTENDANCE from the partitions' kept answers (issue 27, item
//! 2), their pages (issue 24), and PARTICIPANTS' join positions: exact
//! after any write acknowledged to anyone (another store, redis-cli), at a
//! cost of what changed; windows that open and close on an injected clock,
//! with no sleeping.

use std::collections::BTreeMap;

use meetingd::store::{ActiveInstance, AttendanceAfter, InstanceId, InstanceRef, Store};
use serde_json::{Value, json};

use crate::harness::{Daemon, MIN, Redis, at, commandstats, public_meeting, t0, users};

/// What ACTIVE lists, as (instance, participants).
fn listed(rows: &[ActiveInstance]) -> Vec<(InstanceId, u64)> {
    rows.iter()
        .map(|r| (r.instance.id, r.participants))
        .collect()
}

/// How many FCALLs Redis ran while `work` ran (other clients quiet).
async fn fcalls_during<T>(redis: &Redis, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = commandstats(redis).await;
    let out = work.await;
    let after = commandstats(redis).await;
    let calls = |stats: &BTreeMap<String, u64>| stats.get("fcall").copied().unwrap_or(0);
    (out, calls(&after) - calls(&before))
}

/// Meetings `meetings`, each with instance 1 running from t0 for an hour.
async fn running(store: &Store, meetings: impl IntoIterator<Item = u64>) {
    for m in meetings {
        public_meeting(store, m).await;
        store
            .instance_set(InstanceId::new(m, 1), t0(), t0() + 60 * MIN)
            .await
            .expect("instance");
    }
}

/// A second ACTIVE with nothing changed costs no Lua call; a JOIN made
/// through another store (another daemon) shows at once, and costs one
/// call of its partition; an INSTANCE SET and a MEETING SET made with
/// redis-cli show too.
#[tokio::test]
async fn kept_answers_hold_until_anyone_writes() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0() + MIN).await;
    let (other, _other_clock) = redis.store(t0() + MIN).await;
    assert_eq!(store.keys().partitions(), 64);
    running(&store, 1..=10).await;
    users(&store, 1..=3).await;

    let (first, cold) = fcalls_during(&redis, store.active()).await;
    let first = first.expect("active");
    assert_eq!(first.len(), 10);
    assert!(cold >= 64, "every partition read once: {cold}");
    let (again, warm) = fcalls_during(&redis, store.active()).await;
    assert_eq!(again.expect("active"), first);
    assert_eq!(warm, 0, "nothing changed: no partition is read again");

    // a JOIN acknowledged to another client, then ACTIVE
    other
        .join(1, InstanceRef::Current(3))
        .await
        .expect("join through the other store");
    let (after_join, calls) = fcalls_during(&redis, store.active()).await;
    let after_join = after_join.expect("active");
    assert_eq!(
        listed(&after_join)
            .into_iter()
            .find(|(i, _)| i.meeting == 3),
        Some((InstanceId::new(3, 1), 1))
    );
    assert_eq!(calls, 1, "only meeting 3's partition is read again");
    let attendance = store.attendance().await.expect("attendance");
    let three = attendance
        .iter()
        .find(|a| a.instance.meeting == 3)
        .expect("meeting 3");
    assert_eq!(
        three
            .participants
            .iter()
            .map(|p| p.user)
            .collect::<Vec<_>>(),
        [1]
    );

    // redis-cli: a window in a partition with nothing in it, and a title
    let empty = 20u64;
    assert_ne!(empty % 64, 0);
    redis.cli(&[
        "FCALL",
        "meet_meeting_set",
        "1",
        &format!("meetingd:{{p{empty}}}:meeting:{empty}"),
        "Made by hand",
        "",
        "true",
    ]);
    redis.cli(&[
        "FCALL",
        "meet_instance_set",
        "1",
        &format!("meetingd:{{p{empty}}}:meeting:{empty}"),
        "1",
        &t0().to_string(),
        &(t0() + 60 * MIN).to_string(),
        &(t0() + MIN).to_string(),
    ]);
    redis.cli(&[
        "FCALL",
        "meet_meeting_set",
        "1",
        "meetingd:{p5}:meeting:5",
        "Renamed",
        "",
        "true",
    ]);
    let now = store.active().await.expect("active");
    assert!(
        now.iter()
            .any(|r| r.instance.id == InstanceId::new(empty, 1) && r.title == "Made by hand"),
        "{now:?}"
    );
    let five = now.iter().find(|r| r.instance.id.meeting == 5).expect("5");
    assert_eq!(five.title, "Renamed");
    // a JOIN with redis-cli
    redis.cli(&[
        "FCALL",
        "meet_join",
        "1",
        "meetingd:{p7}:meeting:7",
        "",
        "2",
        "",
        &(t0() + MIN).to_string(),
    ]);
    let now = store.active().await.expect("active");
    let seven = now.iter().find(|r| r.instance.id.meeting == 7).expect("7");
    assert_eq!(seven.participants, 1);
    redis.assert_consistent();
}

/// Windows open and close between reads with nothing written: the kept
/// answers say until when they hold, so ACTIVE follows the clock; a window
/// of a higher order pre-empts at its `from`.
#[tokio::test]
async fn kept_answers_follow_the_clock() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    public_meeting(&store, 1).await;
    public_meeting(&store, 65).await;
    store
        .instance_set(InstanceId::new(1, 1), t0() + 10_000, t0() + 70_000)
        .await
        .expect("instance");
    store
        .instance_set(InstanceId::new(65, 1), t0(), t0() + 35_000)
        .await
        .expect("instance");
    store
        .instance_set(InstanceId::new(65, 2), t0() + 30_000, t0() + 40_000)
        .await
        .expect("a higher order");
    let ids = |rows: Vec<ActiveInstance>| -> Vec<InstanceId> {
        rows.into_iter().map(|r| r.instance.id).collect()
    };
    assert_eq!(
        ids(store.active().await.expect("active")),
        [InstanceId::new(65, 1)]
    );
    clock.set(t0() + 9_999);
    let (rows, calls) = fcalls_during(&redis, store.active()).await;
    assert_eq!(ids(rows.expect("active")), [InstanceId::new(65, 1)]);
    assert_eq!(calls, 0, "before any window moves, the kept answer holds");
    clock.set(t0() + 10_000);
    assert_eq!(
        ids(store.active().await.expect("active")),
        [InstanceId::new(1, 1), InstanceId::new(65, 1)],
        "1/1 opened, with nothing written"
    );
    clock.set(t0() + 30_000);
    assert_eq!(
        ids(store.active().await.expect("active")),
        [InstanceId::new(1, 1), InstanceId::new(65, 2)],
        "65/2 pre-empts at its from"
    );
    clock.set(t0() + 40_000);
    assert_eq!(
        ids(store.active().await.expect("active")),
        [InstanceId::new(1, 1)],
        "65/2 and 65/1 are over"
    );
    clock.set(t0() + 70_000);
    assert!(store.active().await.expect("active").is_empty());
    // the clock going back is answered again, not from what was kept
    clock.set(t0() + 20_000);
    assert_eq!(
        ids(store.active().await.expect("active")),
        [InstanceId::new(1, 1), InstanceId::new(65, 1)]
    );
}

/// Pages of ACTIVE: by partition then meeting, `next` the last meeting
/// while more follow; the pages make the whole list, each once.
#[tokio::test]
async fn active_pages_by_partition_then_meeting() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0() + MIN).await;
    let meetings = [1, 2, 3, 65, 66, 130, 64, 128, 200];
    running(&store, meetings).await;
    let all = store.active().await.expect("active");
    let order: Vec<u64> = all.iter().map(|r| r.instance.id.meeting).collect();
    let mut expected = meetings.to_vec();
    expected.sort_by_key(|m| (m % 64, *m));
    assert_eq!(order, expected);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.active_page(after, 2).await.expect("page");
        assert!(page.rows.len() <= 2);
        paged.extend(page.rows.iter().map(|r| r.instance.id.meeting));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), paged.last());
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(paged, expected);
    let last = store
        .active_page(expected.last().copied(), 10)
        .await
        .expect("after the last");
    assert!(last.rows.is_empty() && last.next.is_none());
}

/// ATTENDANCE pages by participants; a page cut inside an instance goes on
/// after the join position, and a user who left between the pages leaves
/// nobody out and nobody twice.
#[tokio::test]
async fn attendance_pages_go_on_by_join_position() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0() + MIN).await;
    running(&store, [1, 2]).await;
    users(&store, 1..=6).await;
    for u in 1..=5 {
        store.join(u, InstanceRef::Current(1)).await.expect("join");
        clock.advance(10);
    }
    store.join(6, InstanceRef::Current(2)).await.expect("join");
    let first = store.attendance_page(None, 3).await.expect("page 1");
    let shown: Vec<u64> = first.rows[0].participants.iter().map(|p| p.user).collect();
    assert_eq!(shown, [1, 2, 3]);
    let next = first.next.expect("more");
    let third = first.rows[0].participants[2];
    assert_eq!(
        next,
        AttendanceAfter {
            meeting: 1,
            within: Some((1, 3, third.joined_at))
        }
    );
    // the cursor's user, and one before it, leave
    store
        .leave(3, InstanceRef::Current(1))
        .await
        .expect("leave");
    store
        .leave(2, InstanceRef::Current(1))
        .await
        .expect("leave");
    let second = store.attendance_page(Some(next), 10).await.expect("page 2");
    let rest: Vec<(u64, Vec<u64>)> = second
        .rows
        .iter()
        .map(|r| {
            (
                r.instance.meeting,
                r.participants.iter().map(|p| p.user).collect(),
            )
        })
        .collect();
    assert_eq!(rest, [(1, vec![4, 5]), (2, vec![6])]);
    assert_eq!(second.next, None);
    // a page of whole rows names the last meeting (1, 4 and 5 are in 1/1)
    let rows = store.attendance_page(None, 3).await.expect("whole rows");
    assert_eq!(rows.rows.len(), 1);
    assert_eq!(
        rows.next,
        Some(AttendanceAfter {
            meeting: 1,
            within: None
        })
    );
}

/// Over the socket: ACTIVE and ATTENDANCE pages, their reply limit, bad
/// cursors; PARTICIPANTS goes on after a join position whose user left.
#[test]
fn pages_over_the_socket() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_LIMITS__REPLY_BYTES", "600")]);
    let mut c = daemon.client();
    for u in 1..=6 {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@example.com"
        ));
    }
    for m in 1..=5 {
        c.ok(&format!(
            "MEETING SET {m} title \"Meeting number {m} with a long enough title\" description \"{}\" public true",
            "d".repeat(40)
        ));
        c.ok(&format!("INSTANCE SET {m} 1 from {} to {}", at(-1), at(60)));
    }
    for u in 1..=6 {
        c.ok(&format!("JOIN {u} 1"));
    }

    // the reply limit cuts ACTIVE's pages: every instance once, in order
    let mut meetings = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = c.ok(&format!("ACTIVE{after}"));
        pages += 1;
        for row in page["instances"].as_array().expect("rows") {
            meetings.push(row["meeting"].as_u64().expect("meeting"));
        }
        match page["next"].as_u64() {
            Some(next) => after = format!(" AFTER {next}"),
            None => break,
        }
    }
    assert_eq!(meetings, [1, 2, 3, 4, 5]);
    assert!(pages > 1, "600 bytes hold fewer than five rows");
    let limited = c.ok("ACTIVE LIMIT 2");
    assert_eq!(limited["instances"].as_array().map(Vec::len), Some(2));
    assert_eq!(limited["next"], 2);

    // ATTENDANCE: six participants over pages of two, then the rest
    let page = c.ok("ATTENDANCE LIMIT 2");
    assert_eq!(users_of(&page["instances"][0]), [1, 2]);
    let next = page["next"].as_str().expect("a cursor").to_string();
    assert!(next.starts_with("1/1:2@"), "{next}");
    c.ok("LEAVE 2 1");
    c.ok("LEAVE 3 1");
    let page = c.ok(&format!("ATTENDANCE AFTER {next} LIMIT 1000"));
    assert_eq!(users_of(&page["instances"][0]), [4, 5, 6]);
    let mut rest: Vec<u64> = Vec::new();
    collect_attendance(&page, &mut rest);
    // the byte limit cut the page: page on to the end
    let mut cursor = page["next"].as_str().map(str::to_string);
    while let Some(after) = cursor {
        let page = c.ok(&format!("ATTENDANCE AFTER {after}"));
        collect_attendance(&page, &mut rest);
        cursor = page["next"].as_str().map(str::to_string);
    }
    assert_eq!(rest, [1, 2, 3, 4, 5], "each meeting's row once");
    assert_eq!(c.error_code("ATTENDANCE AFTER 1/1:2"), "bad_request");
    assert_eq!(c.error_code("ACTIVE AFTER x"), "bad_request");

    // PARTICIPANTS: the last row's position survives its user leaving
    c.ok("JOIN 2 1");
    let page = c.ok("PARTICIPANTS 1 LIMIT 2");
    let last = &page[1];
    let position = format!(
        "{}@{}",
        last["user"],
        last["joined_at"].as_str().expect("joined_at")
    );
    assert_eq!(last["user"], 4);
    c.ok("LEAVE 4 1");
    c.ok("LEAVE 1 1");
    let next = c.ok(&format!("PARTICIPANTS 1 AFTER {position} LIMIT 10"));
    let users: Vec<u64> = next
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["user"].as_u64())
        .collect();
    assert_eq!(users, [5, 6, 2], "after 4's place, whoever left");
    // the old form still works while the user is in, and says so once not
    assert_eq!(
        c.ok("PARTICIPANTS 1 AFTER 5")[0]["user"],
        6,
        "after a user still in"
    );
    assert_eq!(c.error_code("PARTICIPANTS 1 AFTER 4"), "not_joined");
    assert_eq!(
        c.error_code("PARTICIPANTS 1 AFTER 4@yesterday"),
        "bad_request"
    );
    redis.assert_consistent();
}

fn users_of(row: &Value) -> Vec<u64> {
    row["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["user"].as_u64())
        .collect()
}

/// The meetings of a page's rows, each once (a row cut by a page shows on
/// the next page too).
fn collect_attendance(page: &Value, into: &mut Vec<u64>) {
    for row in page["instances"].as_array().expect("rows") {
        let m = row["meeting"].as_u64().expect("meeting");
        if into.last() != Some(&m) {
            into.push(m);
        }
    }
}

/// The daemon's ACTIVE is exact after a JOIN acknowledged by another
/// daemon on the same store, asked on another connection.
#[test]
fn a_join_through_another_daemon_shows_at_once() {
    let redis = Redis::start();
    let one = Daemon::start(&redis, &[]);
    let two = Daemon::start(&redis, &[]);
    let mut a = one.client();
    let mut b = two.client();
    a.ok("USER SET 1 name A age 30 gender x email a@example.com");
    a.ok("MEETING SET 3 title T description \"\" public true");
    a.ok(&format!("INSTANCE SET 3 1 from {} to {}", at(-1), at(60)));
    assert_eq!(
        a.ok("ACTIVE")["instances"][0]["participants"],
        0,
        "read and kept by daemon one"
    );
    for round in 0..50 {
        b.ok("JOIN 1 3");
        assert_eq!(
            a.ok("ACTIVE")["instances"][0]["participants"],
            1,
            "round {round}"
        );
        assert_eq!(
            a.ok("ATTENDANCE")["instances"][0]["participants"][0]["user"],
            1
        );
        b.ok("LEAVE 1 3");
        assert_eq!(
            a.ok("ACTIVE")["instances"][0]["participants"],
            0,
            "round {round}"
        );
    }
}

/// WATCH ACTIVE: what runs, then the starts and ends written by a request,
/// another daemon, or redis-cli; UNWATCH says `active`; no AFTER.
#[test]
fn watch_active_sees_every_start_and_end() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_SCHEDULER__CRON", "0 0 0 1 1 *")]);
    let other = Daemon::start(&redis, &[("MEETINGD_SCHEDULER__CRON", "0 0 0 1 1 *")]);
    let mut c = daemon.client();
    let mut o = other.client();
    c.ok("USER SET 1 name A age 30 gender x email a@example.com");
    for m in [1, 2, 65] {
        c.ok(&format!(
            "MEETING SET {m} title M{m} description \"\" public true"
        ));
    }
    c.ok(&format!("INSTANCE SET 1 1 from {} to {}", at(-1), at(60)));
    c.ok("TICK");
    assert_eq!(c.error_code("WATCH ACTIVE AFTER 1-0"), "bad_request");

    let mut watcher = daemon.client();
    let watching = watcher.ok("WATCH ACTIVE");
    assert_eq!(watching, json!({"watching": "active", "running": 1}));
    let running = next_event(&mut watcher);
    assert_eq!(
        (&running["type"], &running["meeting"], &running["order"]),
        (&json!("running"), &json!(1), &json!(1))
    );

    // a window that opens now starts when a JOIN (through the other
    // daemon) meets it
    o.ok(&format!("INSTANCE SET 2 1 from {} to {}", at(-1), at(60)));
    o.ok("JOIN 1 2");
    let start = next_event(&mut watcher);
    assert_eq!(
        (&start["type"], &start["meeting"], &start["order"]),
        (&json!("start"), &json!(2), &json!(1)),
        "{start}"
    );
    assert!(start["id"].is_string() && start["from"].is_string() && start["to"].is_string());

    // END by hand, on this daemon
    c.ok("END 2");
    let end = next_event(&mut watcher);
    assert_eq!(
        (&end["type"], &end["meeting"], &end["reason"]),
        (&json!("end"), &json!(2), &json!("ended")),
        "{end}"
    );

    // redis-cli: a window made and started in another partition, and an
    // end moved into the past
    let now = chrono::Utc::now().timestamp_millis();
    redis.cli(&[
        "FCALL",
        "meet_instance_set",
        "1",
        "meetingd:{p1}:meeting:65",
        "1",
        &(now - MIN).to_string(),
        &(now + 60 * MIN).to_string(),
    ]);
    redis.cli(&["FCALL", "meet_tick", "1", "meetingd:{p1}:due"]);
    let start = next_event(&mut watcher);
    assert_eq!(
        (&start["type"], &start["meeting"]),
        (&json!("start"), &json!(65))
    );
    o.ok(&format!("INSTANCE SET 1 1 from {} to {}", at(-2), at(-1)));
    let end = next_event(&mut watcher);
    assert_eq!(
        (&end["type"], &end["meeting"], &end["reason"]),
        (&json!("end"), &json!(1), &json!("ended")),
        "{end}"
    );
    assert_eq!(watcher.ok("UNWATCH"), json!({"unwatched": "active"}));

    // each start and end once in every instance's own log too
    let log = c.ok("EVENTS 2/1");
    let kinds: Vec<&str> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(kinds, ["start", "join", "end", "timeout"]);
    redis.assert_consistent();
}

/// The next `{"event":...}` line (skipping nothing else: a watcher gets no
/// other lines unasked).
fn next_event(client: &mut crate::harness::Client) -> Value {
    let line = client.reply().expect("a watched line");
    line["event"].clone()
}

/// The transitions of partition `p`, as `(meeting, kind)`.
async fn transitions(store: &Store, p: u64) -> Vec<(u64, String)> {
    let feed = store
        .feed(meetingd::store::Topic::Partition(p), None, 1000)
        .await
        .expect("transitions");
    feed.items
        .iter()
        .filter_map(|(_, item)| match item {
            meetingd::store::FeedItem::Transition(t) => {
                Some((t.instance.meeting, t.kind.as_str().to_string()))
            }
            _ => None,
        })
        .collect()
}

/// A start applied by a JOIN is not applied again by the tick, and an end
/// applied by the tick not again by a LEAVE: each instance's start and end
/// are logged once, in its log and its partition's.
#[tokio::test]
async fn starts_and_ends_are_written_once_whoever_applies_them() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=2).await;
    for m in [1, 65] {
        public_meeting(&store, m).await;
        store
            .instance_set(InstanceId::new(m, 1), t0() + 1000, t0() + 2000)
            .await
            .expect("instance");
    }
    clock.set(t0() + 1500);
    store
        .join(1, InstanceRef::Current(1))
        .await
        .expect("join starts 1/1");
    let ticked = store.tick(t0() + 1500).await.expect("tick");
    assert_eq!(
        ticked.activated,
        [InstanceId::new(65, 1)],
        "1/1 was started"
    );
    clock.set(t0() + 2500);
    assert!(store.leave(1, InstanceRef::Current(1)).await.is_err());
    let ticked = store.tick(t0() + 2500).await.expect("tick");
    assert_eq!(ticked.ended, [InstanceId::new(65, 1)], "1/1 was ended");
    assert_eq!(
        transitions(&store, 1).await,
        [
            (1, "start".to_string()),
            (65, "start".to_string()),
            (1, "end".to_string()),
            (65, "end".to_string()),
        ]
    );
    assert!(transitions(&store, 2).await.is_empty());
    redis.assert_consistent();
}
