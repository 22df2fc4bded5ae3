//! `meetingd repartition`: data laid out over 16 partitions moved to 64,
//! on one Redis and on a cluster. Everything a client can read is the same
//! before and after; the scheduler finds every instance in its new
//! partition; a run stopped half-way (between meetings, or in the middle of
//! one) goes on when run again; daemons refuse to start while it is under
//! way, and it refuses to run while a daemon serves the data.

use std::process::Command;

use meetingd::store::{InstanceId, InstanceRef, Meeting, Store, StoreError, StoreOptions};

use crate::harness::{Daemon, MIN, Redis, t0, users};

/// Meetings stored by [`scenario`].
const MEETINGS: u64 = 40;

/// Users 1-6; meetings 1..=MEETINGS (every third private, audience u1 and
/// u2) with a running instance and a later one; joins (refused ones
/// ignored), a leave, posts with and without a key; every fifth meeting's
/// instance ended by hand.
async fn scenario(store: &Store) {
    users(store, 1..=6).await;
    for m in 1..=MEETINGS {
        let meeting = Meeting {
            id: m,
            title: format!("meeting {m}"),
            description: "moved".into(),
            public: m % 3 != 0,
        };
        store.meeting_set(&meeting).await.expect("meeting");
        if m % 3 == 0 {
            let audience = ["u1@example.com".to_string(), "u2@example.com".to_string()];
            store.audience_add(m, &audience).await.expect("audience");
        }
        store
            .instance_set(InstanceId::new(m, 1), t0(), t0() + 10 * MIN)
            .await
            .expect("first");
        store
            .instance_set(InstanceId::new(m, 2), t0() + 20 * MIN, t0() + 30 * MIN)
            .await
            .expect("second");
    }
    store.tick(t0()).await.expect("tick");
    for m in 1..=MEETINGS {
        for u in 1..=4 {
            let _ = store.join(u, InstanceRef::Current(m)).await;
        }
        let _ = store.leave(2, InstanceRef::Current(m)).await;
        let key = format!("k{m}");
        store
            .post(
                1,
                InstanceRef::Current(m),
                &format!("hello {m}"),
                Some(&key),
            )
            .await
            .expect("post");
        let _ = store.post(2, InstanceRef::Current(m), "second", None).await;
        if m % 5 == 0 {
            store.end(InstanceRef::Current(m)).await.expect("end");
        }
    }
}

/// Everything a client can read of the scenario's data, one line per read.
async fn snapshot(store: &Store) -> Vec<String> {
    let mut lines = Vec::new();
    for m in 1..=MEETINGS {
        lines.push(format!("{:?}", store.meeting_get(m).await));
        for order in 1..=2 {
            let instance: InstanceRef = InstanceId::new(m, order).into();
            lines.push(format!(
                "{:?}",
                store.instance(InstanceId::new(m, order)).await
            ));
            lines.push(format!(
                "{:?}",
                store.participants(instance, None, 1000).await
            ));
            lines.push(format!("{:?}", store.events(instance, None, 1000).await));
            lines.push(format!(
                "{:?}",
                store.messages(instance, None, None, 1000).await
            ));
            lines.push(format!(
                "{:?}",
                store.messages(instance, Some(1), None, 1000).await
            ));
        }
    }
    let mut active = store.active().await.expect("active");
    active.sort_by_key(|a| a.instance.id);
    lines.push(format!("{active:?}"));
    let mut attendance = store.attendance().await.expect("attendance");
    attendance.sort_by_key(|a| (a.instance.meeting, a.instance.order));
    lines.push(format!("{attendance:?}"));
    lines
}

/// `meetingd repartition` with `args`: its exit status and output.
fn repartition(args: &[&str]) -> (i32, String) {
    crate::harness::meetingd_run("repartition", args)
}

/// A store laid out with `partitions`, connecting as a daemon does
/// (loading its library, checking the layout).
async fn store_with(options: &StoreOptions, partitions: u64) -> Result<Store, StoreError> {
    let mut options = options.clone();
    options.partitions = Some(partitions);
    Store::connect_with_clock(
        options,
        std::sync::Arc::new(meetingd::clock::ManualClock::new(t0())),
    )
    .await
}

/// After the move: the scenario reads the same through a store of 64
/// partitions, a store of 16 is refused, a posted key is still known, and
/// a tick at the end of the first instances ends each running one (in its
/// new partition) with a timeout per participant; `meetingd check` (with
/// `check_args`, no count given: the recorded one) finds nothing wrong.
async fn moved_intact(options: &StoreOptions, before: &[String], check_args: &[&str]) {
    match store_with(options, 16).await {
        Err(StoreError::Incompatible(why)) => assert!(why.contains("64"), "{why}"),
        Err(other) => panic!("refused for the wrong reason: {other}"),
        Ok(_) => panic!("a store of 16 partitions connects to data moved to 64"),
    }
    let store = store_with(options, 64).await.expect("a store of 64");
    let adopted = Store::connect(options.clone())
        .await
        .expect("a store of none");
    assert_eq!(adopted.keys().partitions(), 64, "the recorded count taken");
    let after = snapshot(&store).await;
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "read differently after the move");
    }
    let again = store
        .post(1, InstanceRef::Current(1), "hello 1", Some("k1"))
        .await
        .expect("post again");
    assert!(again.duplicate, "the posted key moved with its instance");

    let running = store.active().await.expect("active");
    let mut present = 0;
    for a in &running {
        let (_, people) = store
            .participants(a.instance.id.into(), None, 1000)
            .await
            .expect("participants");
        present += people.len() as u64;
    }
    assert!(!running.is_empty() && present > 0, "the scenario runs");
    let report = store.tick(t0() + 10 * MIN).await.expect("tick");
    let mut ended = report.ended.clone();
    ended.sort_by_key(|i| (i.meeting, i.order));
    let mut expected: Vec<InstanceId> = running.iter().map(|a| a.instance.id).collect();
    expected.sort_by_key(|i| (i.meeting, i.order));
    assert_eq!(ended, expected);
    assert_eq!(report.timeouts, present);

    let out = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .arg("check")
        .args(check_args)
        .env_remove("MEETINGD_REDIS__PARTITIONS")
        .output()
        .expect("meetingd check runs");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(0), "clean"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sixteen_to_sixty_four_on_one_redis_stopped_and_resumed() {
    let redis = Redis::start();
    let (store, _clock) = redis.store_with(t0(), |o| o.partitions = Some(16)).await;
    scenario(&store).await;
    let before = snapshot(&store).await;
    drop(store);
    let url = redis.url();

    // a copy stopped in the middle of a meeting: part of its chat, events
    // and schedule already under the new tag
    let keys16 = meetingd::store::Keys::new(16);
    let keys64 = meetingd::store::Keys::new(64);
    let half = InstanceId::new(17, 1);
    assert_ne!(keys16.partition(17), keys64.partition(17));
    let first_message = redis.cli(&["XRANGE", &keys16.chat(half), "-", "+", "COUNT", "1"]);
    let id = first_message.lines().next().expect("a message").trim();
    let fields: Vec<&str> = first_message.lines().skip(1).map(str::trim).collect();
    let chat64 = keys64.chat(half);
    let mut xadd = vec!["XADD", chat64.as_str(), id];
    xadd.extend(fields);
    assert_eq!(redis.cli(&xadd).trim(), id);
    redis.cli(&["COPY", &keys16.schedule(17), &keys64.schedule(17)]);

    // stopped between meetings
    let (code, out) = repartition(&["--redis", &url, "--partitions", "64", "--max-meetings", "5"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stopped after 5 meetings"), "{out}");
    // meanwhile: daemons refuse to start, check says so, another count is refused
    match store_with(&redis.options(), 64).await {
        Err(StoreError::Incompatible(why)) => assert!(why.contains("repartition"), "{why}"),
        Err(other) => panic!("refused for the wrong reason: {other}"),
        Ok(_) => panic!("a daemon's store connects during a repartition"),
    }
    let (code, out) = redis.check();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("repartition"), "{out}");
    let (code, out) = repartition(&["--redis", &url, "--partitions", "32"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("from 16 to 64"), "{out}");

    let (code, out) = repartition(&["--redis", &url, "--partitions", "64"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("over 64 partitions (from 16)"), "{out}");
    moved_intact(&redis.options(), &before, &["--redis", &url]).await;
    // once more: nothing to do
    let (code, out) = repartition(&["--redis", &url, "--partitions", "64"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_to_sixty_four_on_a_cluster() {
    let cluster = crate::cluster::Cluster::start(3);
    let mut options = StoreOptions::new("");
    options.cluster = cluster.urls();
    let store = store_with(&options, 16).await.expect("a store of 16");
    scenario(&store).await;
    let before = snapshot(&store).await;
    drop(store);
    let seed = cluster.seed_url();
    let (code, out) = repartition(&[
        "--redis-cluster",
        &seed,
        "--partitions",
        "64",
        "--max-meetings",
        "7",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = repartition(&["--redis-cluster", &seed, "--partitions", "64"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("over 64 partitions (from 16)"), "{out}");
    moved_intact(&options, &before, &["--redis-cluster", &seed]).await;
}

#[test]
fn refused_while_a_daemon_serves_then_daemons_start_with_the_new_count() {
    let redis = Redis::start();
    let url = redis.url();
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__PARTITIONS", "16")]);
    daemon
        .client()
        .ok("MEETING SET 5 title Five description x public true");
    let (code, out) = repartition(&["--redis", &url, "--partitions", "64"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("daemons serve this data"), "{out}");
    daemon.signal(libc::SIGTERM);
    let mut daemon = daemon;
    assert!(daemon.wait(std::time::Duration::from_secs(20)).is_some());

    let (code, out) = repartition(&["--redis", &url, "--partitions", "64"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = repartition(&["--redis", &url, "--partitions", "64"]);
    assert_eq!(code, 0, "{out}");
    // the old count is refused (exit 2), the new one serves the meeting
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("meetingd.sock");
    let mut old = Daemon::spawn(
        &redis,
        &socket,
        &[("MEETINGD_REDIS__PARTITIONS", "16")],
        dir,
    );
    let status = old
        .wait(std::time::Duration::from_secs(20))
        .expect("the daemon of 16 partitions stops");
    assert_eq!(status.code(), Some(2), "{}", old.log());
    // given the new count, or none (the recorded one taken)
    drop(Daemon::start(
        &redis,
        &[("MEETINGD_REDIS__PARTITIONS", "64")],
    ));
    let daemon = Daemon::start(&redis, &[]);
    let meeting = daemon.client().ok("MEETING GET 5");
    assert_eq!(meeting["title"], "Five", "{meeting}");
    assert!(
        redis
            .cli(&["EXISTS", &meetingd::store::Keys::new(64).meeting(5)])
            .trim()
            == "1"
    );
}
