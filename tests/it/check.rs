//! `meetingd check`: clean data passes, every kind of damage is reported.

use meetingd::store::{InstanceId, InstanceRef, Meeting, Store};

use crate::harness::{MIN, Redis, t0, users};

/// Users 1-5, meetings 1-4 (4 private) with two instances each, joins,
/// a leave, posts, and meeting 3 ended by hand: data of every kind.
pub async fn scenario(store: &Store) {
    users(store, 1..=5).await;
    for m in 1..=4 {
        let meeting = Meeting {
            id: m,
            title: format!("m{m}"),
            description: String::new(),
            public: m != 4,
        };
        store.meeting_set(&meeting).await.expect("meeting");
        store
            .instance_set(InstanceId::new(m, 1), t0(), t0() + 10 * MIN)
            .await
            .expect("1");
        store
            .instance_set(InstanceId::new(m, 2), t0() + 20 * MIN, t0() + 30 * MIN)
            .await
            .expect("2");
    }
    store
        .audience_add(4, &["u1@example.com".into()])
        .await
        .expect("audience");
    store.tick(t0()).await.expect("tick");
    for m in 1..=4 {
        for u in 1..=5 {
            let _ = store.join(u, InstanceRef::Current(m)).await;
        }
        store.leave(2, InstanceRef::Current(m)).await.ok();
        store
            .post(1, InstanceRef::Current(m), "hi", None)
            .await
            .expect("post");
    }
    store.end(InstanceRef::Current(3)).await.expect("end");
}

#[tokio::test]
async fn clean_data_passes_and_damage_is_reported() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    scenario(&store).await;
    assert_eq!(store.check().await.expect("check"), Vec::<String>::new());
    let (code, out) = redis.check();
    assert_eq!((code, out.trim()), (0, "clean"));

    let mut conn = redis.conn().await;
    let keys = store.keys();
    let damage: Vec<redis::Cmd> = vec![
        // a participant without a join event
        redis::cmd("ZADD")
            .arg(keys.present(InstanceId::new(1, 1)))
            .arg(t0())
            .arg("9")
            .clone(),
        // a second join in a row
        redis::cmd("XADD")
            .arg(keys.events(InstanceId::new(2, 1)))
            .arg("*")
            .arg("u")
            .arg("1")
            .arg("t")
            .arg("1")
            .arg("at")
            .arg(t0())
            .clone(),
        // an active instance out of the active index
        redis::cmd("ZREM")
            .arg(meetingd::store::Keys::active(keys.partition(4)))
            .arg("4/1")
            .clone(),
        // an orphan: the events of an instance nobody scheduled
        redis::cmd("XADD")
            .arg(keys.events(InstanceId::new(99, 1)))
            .arg("*")
            .arg("u")
            .arg("1")
            .arg("t")
            .arg("1")
            .arg("at")
            .arg(t0())
            .clone(),
        // an instance that ended twice
        redis::cmd("XADD")
            .arg(keys.events(InstanceId::new(3, 1)))
            .arg("*")
            .arg("t")
            .arg("5")
            .arg("at")
            .arg(t0())
            .arg("end")
            .arg(t0())
            .arg("why")
            .arg("ended")
            .clone(),
        // a key that is not of the layout
        redis::cmd("SET")
            .arg("meetingd:{p1}:weird")
            .arg("x")
            .clone(),
    ];
    for cmd in &damage {
        let _: redis::Value = cmd.query_async(&mut conn).await.expect("damage");
    }
    let problems = store.check().await.expect("check");
    let expected = [
        "instance 1/1: participants differ from the event log",
        "instance 2/1: user 1 has a join right after a join",
        "instance 4/1: active but not in the active index",
        "an orphan key: instance 99/1 does not exist",
        "instance 3/1: 2 end entries",
        "meetingd:{p1}:weird: not a key of meetingd's layout",
    ];
    for needle in expected {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    let (code, out) = redis.check();
    assert_eq!(code, 1, "{out}");
    let lines = out.lines().filter(|l| !l.starts_with("meetingd: ")).count();
    assert_eq!(lines, expected.len(), "one line per problem: {out}");
    assert!(out.contains("meetingd: 6 problems"), "{out}");
}
