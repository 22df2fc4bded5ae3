//! The tick step: catch-up, idempotence under concurrency, overlapping
//! windows, bounded work, drains of big instances.

use std::collections::{BTreeMap, HashSet};

use meetingd::store::{
    EndReason, Event, EventKind, InstanceId, InstanceRef, InstanceState, Store, TickReport,
};

use crate::harness::{
    MIN, Redis, back_to_back, commandstats, one_instance_meetings, public_meeting, state, t0, users,
};

async fn all_events(store: &Store, instance: InstanceId) -> Vec<Event> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (_, page) = store
            .events(instance.into(), after.as_deref(), 1000)
            .await
            .expect("events");
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

#[tokio::test]
async fn catch_up_after_a_long_downtime() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=3).await;
    // meeting 100: active with three participants before the downtime
    public_meeting(&store, 100).await;
    let busy = InstanceId::new(100, 1);
    store
        .instance_set(busy, t0(), t0() + 30 * MIN)
        .await
        .expect("busy");
    store.tick(t0()).await.expect("tick before the downtime");
    for u in 1..=3 {
        store.join(u, busy.into()).await.expect("join");
    }
    // 50 windows open and close while nothing runs, 5 are still open at
    // the end of it, 5 lie in the future
    for m in 1..=60 {
        public_meeting(&store, m).await;
        let (from, to) = match m {
            1..=50 => (t0() + (m as i64) * MIN, t0() + (m as i64 + 1) * MIN),
            51..=55 => (t0() + 100 * MIN, t0() + 200 * MIN),
            _ => (t0() + 300 * MIN, t0() + 400 * MIN),
        };
        store
            .instance_set(InstanceId::new(m, 1), from, to)
            .await
            .expect("instance");
    }
    let back = t0() + 150 * MIN;
    clock.set(back);
    let report = store.tick(back).await.expect("catch-up tick");
    let missed: HashSet<u64> = report.missed.iter().map(|i| i.meeting).collect();
    assert_eq!(missed, (1..=50).collect());
    let activated: HashSet<u64> = report.activated.iter().map(|i| i.meeting).collect();
    assert_eq!(activated, (51..=55).collect());
    assert_eq!(report.ended, [busy]);
    assert_eq!(report.timeouts, 3);
    for m in 1..=50 {
        let instance = InstanceId::new(m, 1);
        assert_eq!(state(&store, instance).await, InstanceState::Ended);
        let log: Vec<(EventKind, Option<EndReason>)> = all_events(&store, instance)
            .await
            .iter()
            .map(|e| (e.kind, e.reason))
            .collect();
        assert_eq!(
            log,
            [(EventKind::End, Some(EndReason::Missed))],
            "{instance} ended with its end entry alone"
        );
    }
    for m in 56..=60 {
        assert_eq!(
            state(&store, InstanceId::new(m, 1)).await,
            InstanceState::Scheduled
        );
    }
    let events = all_events(&store, busy).await;
    let timeouts: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Timeout)
        .collect();
    assert_eq!(timeouts.len(), 3);
    for t in timeouts {
        assert_eq!(t.at, t0() + 30 * MIN, "stamped with the scheduled end");
        assert_eq!(t.scheduled_end, Some(t0() + 30 * MIN));
        assert_eq!(t.processed_at, Some(back), "and when it was processed");
    }
    // nothing twice: one call per partition finds nothing due
    let again = store.tick(back).await.expect("second tick");
    assert_eq!(
        again,
        TickReport {
            steps: store.keys().partitions(),
            ..Default::default()
        }
    );
}

/// 200 instances, each with participants to time out, another 200 to
/// activate; 8 ticks at the same instant on 8 connections at once.
#[tokio::test]
async fn concurrent_ticks_apply_each_transition_once() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=5).await;
    back_to_back(&store, 200, 5).await;
    let at = t0() + 10 * MIN;
    clock.set(at);
    let mut tickers = Vec::new();
    for _ in 0..8 {
        let (ticker, _) = redis
            .store_with(at, |o| {
                o.tick_batch = 7;
                o.timeout_budget = 13;
            })
            .await;
        tickers.push(tokio::spawn(
            async move { ticker.tick(at).await.expect("tick") },
        ));
    }
    let mut activated = Vec::new();
    let mut ended = Vec::new();
    let mut timeouts = 0;
    for ticker in tickers {
        let report = ticker.await.expect("ticker task");
        activated.extend(report.activated);
        ended.extend(report.ended);
        timeouts += report.timeouts;
    }
    let repeat = store.tick(at).await.expect("a ninth tick");
    activated.extend(repeat.activated);
    ended.extend(repeat.ended);
    timeouts += repeat.timeouts;
    activated.sort();
    ended.sort();
    let expected_starts: Vec<InstanceId> = (1..=200).map(|m| InstanceId::new(m, 2)).collect();
    let expected_ends: Vec<InstanceId> = (1..=200).map(|m| InstanceId::new(m, 1)).collect();
    assert_eq!(activated, expected_starts, "each activation exactly once");
    assert_eq!(ended, expected_ends, "each end exactly once");
    assert_eq!(timeouts, 1000);
    for m in 1..=200 {
        let events = all_events(&store, InstanceId::new(m, 1)).await;
        let mut per_user: BTreeMap<u64, Vec<EventKind>> = BTreeMap::new();
        let transitions: Vec<EventKind> = events
            .iter()
            .filter(|e| e.user.is_none())
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            transitions,
            [EventKind::Start, EventKind::End],
            "one start and one end in the log of {m}/1"
        );
        for e in events {
            if let Some(user) = e.user {
                per_user.entry(user).or_default().push(e.kind);
            }
        }
        for (user, kinds) in per_user {
            assert_eq!(
                kinds,
                [EventKind::Join, EventKind::Timeout],
                "meeting {m} user {user}"
            );
        }
        assert_eq!(
            state(&store, InstanceId::new(m, 2)).await,
            InstanceState::Active
        );
    }
}

fn active_of(store_active: &[meetingd::store::ActiveInstance], meeting: u64) -> Vec<u64> {
    store_active
        .iter()
        .filter(|a| a.instance.id.meeting == meeting)
        .map(|a| a.instance.id.order)
        .collect()
}

/// Windows of one meeting: O1 [0, 60), O2 [30, 90), O3 [10, 40) minutes.
async fn overlapping(store: &Store) -> [InstanceId; 3] {
    public_meeting(store, 7).await;
    let o = [
        InstanceId::new(7, 1),
        InstanceId::new(7, 2),
        InstanceId::new(7, 3),
    ];
    store
        .instance_set(o[0], t0(), t0() + 60 * MIN)
        .await
        .expect("o1");
    store
        .instance_set(o[1], t0() + 30 * MIN, t0() + 90 * MIN)
        .await
        .expect("o2");
    store
        .instance_set(o[2], t0() + 10 * MIN, t0() + 40 * MIN)
        .await
        .expect("o3");
    o
}

#[tokio::test]
async fn overlapping_windows_tick_by_tick() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, 1..=2).await;
    let [o1, o2, o3] = overlapping(&store).await;
    store.tick(t0()).await.expect("tick 0");
    assert_eq!(active_of(&store.active().await.expect("active"), 7), [1]);
    store
        .join(1, InstanceRef::Current(7))
        .await
        .expect("join o1");
    clock.set(t0() + 10 * MIN);
    let report = store.tick(t0() + 10 * MIN).await.expect("tick 10");
    assert_eq!(
        (report.activated.clone(), report.ended.clone()),
        (vec![o3], vec![o1])
    );
    let events = all_events(&store, o1).await;
    assert_eq!(
        events.last().map(|e| (e.kind, e.at)),
        Some((EventKind::Timeout, t0() + 10 * MIN))
    );
    store
        .join(2, InstanceRef::Current(7))
        .await
        .expect("join o3");
    clock.set(t0() + 30 * MIN);
    let report = store.tick(t0() + 30 * MIN).await.expect("tick 30");
    assert!(
        report.activated.is_empty(),
        "o2 has a lower order than the running o3"
    );
    assert_eq!(active_of(&store.active().await.expect("active"), 7), [3]);
    clock.set(t0() + 40 * MIN);
    let report = store.tick(t0() + 40 * MIN).await.expect("tick 40");
    assert_eq!((report.activated, report.ended), (vec![o2], vec![o3]));
    assert_eq!(active_of(&store.active().await.expect("active"), 7), [2]);
    assert_eq!(state(&store, o1).await, InstanceState::Ended);
    let timeouts = all_events(&store, o3).await;
    assert_eq!(
        timeouts.last().map(|e| (e.user, e.kind)),
        Some((Some(2), EventKind::Timeout))
    );
}

#[tokio::test]
async fn overlapping_windows_caught_up_leave_the_highest_order_active() {
    for batch in [1, 2, 200] {
        let redis = Redis::start();
        let (store, _clock) = redis.store_with(t0(), |o| o.tick_batch = batch).await;
        let [o1, o2, o3] = overlapping(&store).await;
        store.tick(t0() + 35 * MIN).await.expect("catch-up at 35");
        assert_eq!(
            active_of(&store.active().await.expect("active"), 7),
            [3],
            "batch {batch}: o3 is the highest order due"
        );
        store.tick(t0() + 45 * MIN).await.expect("tick at 45");
        assert_eq!(
            active_of(&store.active().await.expect("active"), 7),
            [2],
            "batch {batch}"
        );
        store.tick(t0() + 65 * MIN).await.expect("tick at 65");
        assert_eq!(
            state(&store, o1).await,
            InstanceState::Ended,
            "batch {batch}"
        );
        assert_eq!(
            state(&store, o3).await,
            InstanceState::Ended,
            "batch {batch}"
        );
        assert_eq!(
            state(&store, o2).await,
            InstanceState::Active,
            "batch {batch}"
        );
        store.tick(t0() + 95 * MIN).await.expect("tick at 95");
        assert!(store.active().await.expect("active").is_empty());
    }
}

#[tokio::test]
async fn a_big_instance_ends_over_several_bounded_steps() {
    let redis = Redis::start();
    let (store, clock) = redis.store_with(t0(), |o| o.timeout_budget = 100).await;
    users(&store, 1..=350).await;
    public_meeting(&store, 3).await;
    let big = InstanceId::new(3, 1);
    store
        .instance_set(big, t0(), t0() + MIN)
        .await
        .expect("instance");
    store.tick(t0()).await.expect("activate");
    for u in 1..=350 {
        store.join(u, big.into()).await.expect("join");
        clock.advance(1);
    }
    let report = store.tick(t0() + MIN).await.expect("end");
    assert_eq!(report.ended, [big]);
    assert_eq!(report.timeouts, 350);
    assert!(report.steps >= 4, "350 timeouts at 100 a call take 4 calls");
    let events = all_events(&store, big).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Timeout)
            .count(),
        350
    );
    let (_, left) = store
        .participants(big.into(), None, 1000)
        .await
        .expect("participants");
    assert!(left.is_empty());
}

/// Store `stored` instances of which the first 100 are due at t0; tick at
/// t0; return what the tick activated and the commands it made Redis run.
async fn tick_among(stored: u64) -> (usize, BTreeMap<String, u64>) {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    one_instance_meetings(&store, stored, |m| m <= 100).await;
    let before = commandstats(&redis).await;
    let report = store.tick(t0()).await.expect("tick");
    let after = commandstats(&redis).await;
    let delta = after
        .into_iter()
        .filter(|(name, _)| name != "info")
        .map(|(name, calls)| {
            let was = before.get(&name).copied().unwrap_or(0);
            (name, calls - was)
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    (report.activated.len(), delta)
}

/// The tick's work grows with what is due, not with what is stored: with
/// 100 due among 1,000 or among 10,000 instances, it activates exactly the
/// 100 and Redis runs exactly the same commands.
#[tokio::test]
async fn a_tick_reads_only_what_is_due() {
    let (small_activated, small) = tick_among(1_000).await;
    let (big_activated, big) = tick_among(10_000).await;
    assert_eq!(small_activated, 100);
    assert_eq!(big_activated, 100);
    assert_eq!(small, big, "the same commands whatever is stored");
    // each start also writes the instance's start entry and announces it
    // on the instance's channel and the partition's log of transitions
    let total: u64 = big.values().sum();
    assert!(
        total < 100 * 18,
        "a bounded number of commands per due instance: {big:?}"
    );
}
