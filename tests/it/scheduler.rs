//! The scheduler on a real Redis, with an injected clock: the cron job
//! fires, catch-up, two schedulers at once, interrupted ticks, failures,
//! panics, skips, a silent job recovered, and a tick at scale.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use meetingd::clock::{ManualClock, Millis};
use meetingd::scheduler::{Scheduler, TickError, TickWork, Trigger};
use meetingd::stats::Stats;
use meetingd::store::{
    EndReason, EventKind, InstanceId, InstanceRef, InstanceState, Store, StoreError, TickReport,
};

use crate::harness::{
    Daemon, MIN, Redis, back_to_back, one_instance_meetings, public_meeting, state, stored_state,
    t0, text, users,
};

fn scheduler(store: &Store) -> (Arc<Scheduler>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    (
        Scheduler::new(Arc::new(store.clone()), stats.clone()),
        stats,
    )
}

/// How long `wait_for` waits before it calls a thing that never happened a
/// hang: far more than any of these tests needs, even on a busy machine.
/// The tests check what happens and in which order, never how fast.
const HANG: Duration = Duration::from_secs(30);

/// Wait until `check` holds; fail the test if it still does not after
/// `HANG`.
async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_job_really_fires() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    public_meeting(&store, 1).await;
    public_meeting(&store, 2).await;
    let first = InstanceId::new(1, 1);
    let second = InstanceId::new(2, 1);
    store
        .instance_set(first, t0(), t0() + 10 * MIN)
        .await
        .expect("first");
    store
        .instance_set(second, t0() + MIN, t0() + 10 * MIN)
        .await
        .expect("second");
    let (scheduler, stats) = scheduler(&store);
    let cron = scheduler.start("* * * * * *").await.expect("cron");
    wait_for("the first tick", async || {
        stored_state(&redis, &store, first).await == InstanceState::Active
    })
    .await;
    assert_eq!(
        stored_state(&redis, &store, second).await,
        InstanceState::Scheduled,
        "not due before the clock moves"
    );
    clock.set(t0() + MIN);
    wait_for("a tick after the clock moved", async || {
        stored_state(&redis, &store, second).await == InstanceState::Active
    })
    .await;
    wait_for("the second tick's count", async || {
        stats.last_good_tick() == Some(t0() + MIN)
    })
    .await;
    let (run, failed, _) = stats.tick_counts();
    assert!(
        run >= 2,
        "at least two ticks ran, each applying what was due"
    );
    assert_eq!(failed, 0);
    cron.stop().await;
}

#[tokio::test]
async fn the_startup_tick_catches_up_50_windows() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    users(&store, [1]).await;
    for m in 1..=50 {
        public_meeting(&store, m).await;
        let from = t0() + (m as i64) * MIN;
        store
            .instance_set(InstanceId::new(m, 1), from, from + MIN)
            .await
            .expect("passed");
        store
            .instance_set(InstanceId::new(m, 2), from, t0() + 500 * MIN)
            .await
            .expect("open");
    }
    clock.set(t0() + 100 * MIN);
    let (scheduler, stats) = scheduler(&store);
    let report = scheduler.tick(Trigger::Startup).await.expect("tick");
    assert_eq!(report.missed.len(), 50);
    assert_eq!(report.activated.len(), 50);
    for m in 1..=50 {
        assert_eq!(
            state(&store, InstanceId::new(m, 1)).await,
            InstanceState::Ended
        );
        assert_eq!(
            state(&store, InstanceId::new(m, 2)).await,
            InstanceState::Active
        );
        let (_, events) = store
            .events(InstanceId::new(m, 1).into(), None, 1000)
            .await
            .expect("events");
        let log: Vec<(EventKind, Option<EndReason>)> =
            events.items.iter().map(|e| (e.kind, e.reason)).collect();
        assert_eq!(log, [(EventKind::End, Some(EndReason::Missed))]);
    }
    let again = scheduler.tick(Trigger::Command).await.expect("again");
    assert_eq!(
        again.activated.len() + again.ended.len() + again.missed.len(),
        0,
        "nothing twice"
    );
    assert_eq!(stats.tick_counts().0, 2);
}

/// Two schedulers on one Redis, each with its own connection, ticking at
/// the same instants through 200 transitions while users come and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_at_the_same_instants_never_double_or_miss() {
    let redis = Redis::start();
    let clock = ManualClock::new(t0());
    let mut options = redis.options();
    options.tick_batch = 5;
    options.timeout_budget = 3;
    let store = redis.store_on(clock.clone(), options.clone()).await;
    let other = redis.store_on(clock.clone(), options).await;
    for u in 1..=6 {
        users(&store, [u]).await;
    }
    // 100 instances, each opening and closing: 200 transitions
    for m in 1..=100u64 {
        public_meeting(&store, m).await;
        let from = t0() + (m as i64 % 20) * MIN;
        store
            .instance_set(InstanceId::new(m, 1), from, from + 3 * MIN)
            .await
            .expect("instance");
    }
    let (a, _) = scheduler(&store);
    let (b, _) = scheduler(&other);
    let mut activated = Vec::new();
    let mut ended = Vec::new();
    for step in 0..=50 {
        clock.set(t0() + step * 30_000);
        let (ra, rb) = tokio::join!(a.tick(Trigger::Command), b.tick(Trigger::Command));
        for report in [ra.expect("tick a"), rb.expect("tick b")] {
            activated.extend(report.activated);
            ended.extend(report.ended);
        }
        // users join whatever is open, and some leave again
        for m in (1..=100u64).filter(|m| (*m as i64 + step) % 3 == 0) {
            let u = 1 + (m + step as u64) % 6;
            if store.join(u, InstanceRef::Current(m)).await.is_ok() && step % 2 == 0 {
                let _ = store.leave(u, InstanceRef::Current(m)).await;
            }
        }
    }
    activated.sort();
    ended.sort();
    let all: Vec<InstanceId> = (1..=100).map(|m| InstanceId::new(m, 1)).collect();
    assert_eq!(activated, all, "each activation once");
    assert_eq!(ended, all, "each end once");
    let mut joins = 0;
    for instance in all {
        let (_, events) = store
            .events(instance.into(), None, 1000)
            .await
            .expect("events");
        let mut open: BTreeMap<u64, bool> = BTreeMap::new();
        let mut transitions = Vec::new();
        for e in events.items {
            let Some(user) = e.user else {
                transitions.push(e.kind);
                continue;
            };
            let was_in = open
                .insert(user, e.kind == EventKind::Join)
                .unwrap_or(false);
            match e.kind {
                EventKind::Join => {
                    joins += 1;
                    assert!(!was_in, "{instance}: user {user} joined twice");
                }
                EventKind::Leave | EventKind::Timeout => {
                    assert!(
                        was_in,
                        "{instance}: user {user} has a {:?} without a join",
                        e.kind
                    )
                }
                EventKind::Start | EventKind::End => unreachable!("a user's event"),
            }
        }
        // the log opens with its start (if it ran) and closes with its end
        // (if it ended), each once
        let starts = transitions
            .iter()
            .filter(|k| **k == EventKind::Start)
            .count();
        let ends = transitions.iter().filter(|k| **k == EventKind::End).count();
        assert!(starts <= 1 && ends <= 1, "{instance}: {transitions:?}");
        assert!(
            open.values().all(|inside| !inside),
            "{instance}: every join is matched"
        );
    }
    assert!(joins > 50, "enough joins to mean something: {joins}");
}

/// The state of every instance of meetings 1..=n, and every event.
async fn snapshot(
    store: &Store,
    n: u64,
) -> Vec<(InstanceId, InstanceState, Vec<(u64, EventKind)>)> {
    let mut out = Vec::new();
    for m in 1..=n {
        for o in 1..=2 {
            let instance = InstanceId::new(m, o);
            let (_, events) = store
                .events(instance.into(), None, 1000)
                .await
                .expect("events");
            let events = events
                .items
                .into_iter()
                .filter_map(|e| Some((e.user?, e.kind)))
                .collect();
            out.push((instance, state(store, instance).await, events));
        }
    }
    out
}

async fn interruptible_setup(redis: &Redis) -> (Store, ManualClock) {
    let (store, clock) = redis
        .store_with(t0(), |o| {
            o.tick_batch = 1;
            o.timeout_budget = 1;
        })
        .await;
    for u in 1..=3 {
        users(&store, [u]).await;
    }
    back_to_back(&store, 8, 3).await;
    clock.set(t0() + 10 * MIN);
    (store, clock)
}

#[tokio::test]
async fn an_interrupted_tick_then_a_full_one_equals_one_clean_tick() {
    let clean_redis = Redis::start();
    let (clean, _) = interruptible_setup(&clean_redis).await;
    clean.tick(t0() + 10 * MIN).await.expect("clean tick");
    let expected = snapshot(&clean, 8).await;

    // cut after the first batch
    let redis = Redis::start();
    let (store, _) = interruptible_setup(&redis).await;
    let partition = store.keys().partition(1);
    let first = store
        .tick_step(partition, t0() + 10 * MIN)
        .await
        .expect("one batch");
    assert!(first.more, "there was more to do");
    store.tick(t0() + 10 * MIN).await.expect("full tick");
    assert_eq!(snapshot(&store, 8).await, expected);

    // a tick task really aborted part way, at several points
    for delay_us in [200, 1000, 3000] {
        let redis = Redis::start();
        let (store, _) = interruptible_setup(&redis).await;
        let task = {
            let store = store.clone();
            tokio::spawn(async move { store.tick(t0() + 10 * MIN).await })
        };
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        task.abort();
        let _ = task.await;
        store.tick(t0() + 10 * MIN).await.expect("full tick");
        assert_eq!(
            snapshot(&store, 8).await,
            expected,
            "aborted after {delay_us} us"
        );
    }
}

#[tokio::test]
async fn a_failing_tick_then_a_good_one_catches_up() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (store, clock) = redis
        .store_with(t0(), |o| o.timeout = Duration::from_millis(300))
        .await;
    public_meeting(&store, 1).await;
    let instance = InstanceId::new(1, 1);
    store
        .instance_set(instance, t0() + MIN, t0() + 2 * MIN)
        .await
        .expect("instance");
    let (scheduler, stats) = scheduler(&store);
    redis.stop();
    clock.set(t0() + MIN);
    match scheduler.tick(Trigger::Cron).await {
        Err(TickError::Store(err)) => {
            assert_eq!(err.code(), meetingd::error::Code::Unavailable, "{err}")
        }
        other => panic!("expected a store failure, got {other:?}"),
    }
    assert_eq!(stats.tick_counts().1, 1, "the failure is counted");
    redis.restart();
    clock.set(t0() + 90_000);
    let mut report = scheduler.tick(Trigger::Cron).await;
    for _ in 0..20 {
        if report.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = scheduler.tick(Trigger::Cron).await;
    }
    assert_eq!(
        report.expect("a good tick").activated,
        [instance],
        "caught up"
    );
}

/// A tick that panics the first time it runs, then does the real work.
struct PanicsOnce {
    store: Store,
    calls: AtomicU32,
}

impl TickWork for PanicsOnce {
    fn now(&self) -> Millis {
        self.store.now()
    }

    fn tick(&self, now: Millis) -> BoxFuture<'static, Result<TickReport, StoreError>> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        let store = self.store.clone();
        Box::pin(async move {
            if first {
                panic!("injected panic in a tick");
            }
            store.tick(now).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_tick_does_not_stop_the_scheduler() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    public_meeting(&store, 1).await;
    let instance = InstanceId::new(1, 1);
    store
        .instance_set(instance, t0(), t0() + MIN)
        .await
        .expect("instance");
    let stats = Arc::new(Stats::default());
    let work = PanicsOnce {
        store: store.clone(),
        calls: AtomicU32::new(0),
    };
    let scheduler = Scheduler::new(Arc::new(work), stats.clone());
    let cron = scheduler.start("* * * * * *").await.expect("cron");
    wait_for("a good tick after the panic", async || {
        stats.tick_counts().0 >= 1
    })
    .await;
    assert_eq!(state(&store, instance).await, InstanceState::Active);
    assert_eq!(
        stats.tick_counts().1,
        1,
        "the panic counted as a failed tick"
    );
    cron.stop().await;
}

/// How many ticks of a `Slow` work started, run now, and ever ran at once.
#[derive(Default)]
struct InFlight {
    started: AtomicU32,
    running: AtomicU32,
    most_at_once: AtomicU32,
}

/// A tick that takes its time (long enough for the next cron firing, or a
/// second command, to come while it runs), counting itself in `InFlight`.
struct Slow {
    store: Store,
    flight: Arc<InFlight>,
}

impl TickWork for Slow {
    fn now(&self) -> Millis {
        self.store.now()
    }

    fn tick(&self, now: Millis) -> BoxFuture<'static, Result<TickReport, StoreError>> {
        let store = self.store.clone();
        let flight = self.flight.clone();
        Box::pin(async move {
            flight.started.fetch_add(1, Ordering::SeqCst);
            let running = flight.running.fetch_add(1, Ordering::SeqCst) + 1;
            flight.most_at_once.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let report = store.tick(now).await;
            flight.running.fetch_sub(1, Ordering::SeqCst);
            report
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_still_running_makes_the_next_skip() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    let stats = Arc::new(Stats::default());
    let flight = Arc::new(InFlight::default());
    let work = Slow {
        store: store.clone(),
        flight: flight.clone(),
    };
    let scheduler = Scheduler::new(Arc::new(work), stats.clone());
    let cron = scheduler.start("* * * * * *").await.expect("cron");
    wait_for("a skipped tick", async || stats.tick_counts().2 >= 1).await;
    cron.stop().await;
    assert_eq!(
        flight.most_at_once.load(Ordering::SeqCst),
        1,
        "a cron tick that finds one running is skipped, not run beside it"
    );
    // never two at once: a command waits for the running tick instead, and
    // then runs its own
    let before = flight.started.load(Ordering::SeqCst);
    let (a, b) = tokio::join!(
        scheduler.tick(Trigger::Command),
        scheduler.tick(Trigger::Command)
    );
    a.expect("first");
    b.expect("second");
    assert_eq!(
        flight.started.load(Ordering::SeqCst) - before,
        2,
        "each command ran a tick"
    );
    assert_eq!(
        flight.most_at_once.load(Ordering::SeqCst),
        1,
        "the two ran one after the other"
    );
    assert_eq!(flight.running.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_cron_job_is_recreated() {
    let redis = Redis::start();
    let (store, clock) = redis.store(t0()).await;
    let (scheduler, stats) = scheduler(&store);
    let cron = scheduler.start("* * * * * *").await.expect("cron");
    wait_for("a first tick", async || stats.tick_counts().0 >= 1).await;
    cron.drop_job_for_test().await;
    public_meeting(&store, 1).await;
    let instance = InstanceId::new(1, 1);
    store
        .instance_set(instance, t0() + MIN, t0() + 2 * MIN)
        .await
        .expect("instance");
    clock.set(t0() + MIN);
    wait_for("ticks after the recovery", async || {
        stored_state(&redis, &store, instance).await == InstanceState::Active
    })
    .await;
    let snapshot = stats.snapshot();
    assert!(
        snapshot["ticks"]["scheduler_recoveries"].as_u64() >= Some(1),
        "{snapshot}"
    );
    cron.stop().await;
}

#[tokio::test]
async fn a_bad_cron_expression_is_refused_with_a_clear_message() {
    let err = meetingd::scheduler::cron_interval("every minute").expect_err("refused");
    assert!(err.to_string().contains("invalid cron expression"), "{err}");
    assert!(
        meetingd::scheduler::cron_interval("0 * * * * *")
            .is_ok_and(|d| d == Duration::from_secs(60))
    );
    assert_eq!(
        meetingd::scheduler::cron_interval("* * * * * *").ok(),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        meetingd::scheduler::cron_interval("*/5 * * * * *").ok(),
        Some(Duration::from_secs(5))
    );
}

/// The daemon ticks once at start-up, before it serves.
#[tokio::test]
async fn the_daemon_ticks_before_it_serves() {
    let redis = Redis::start();
    let store = redis
        .store_on(
            ManualClock::new(chrono::Utc::now().timestamp_millis()),
            redis.options(),
        )
        .await;
    public_meeting(&store, 5).await;
    let now = store.now();
    store
        .instance_set(InstanceId::new(5, 1), now - MIN, now + 60 * MIN)
        .await
        .expect("instance");
    let daemon = Daemon::start(&redis, &[("MEETINGD_SCHEDULER__CRON", "0 0 0 1 1 *")]);
    let active = daemon.client().ok("ACTIVE");
    assert_eq!(active["instances"][0]["meeting"], 5, "{active}");
    let stats = daemon.client().ok("STATS");
    assert!(stats["ticks"]["last_good"].is_string(), "{stats}");
}

/// 100,000 instances stored, 10,000 due at one instant: one tick applies
/// all 10,000 in bounded batches, each `meet_tick` call at most `tick_batch`
/// instances, with as many Lua calls as the due instances need and no more.
/// How long those calls hold Redis is measured by `meetingd-bench tick`
/// (BENCHMARKS.md), not asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_of_10000_among_100000_works_in_bounded_batches() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    let is_due = |m: u64| m % 10 == 0;
    one_instance_meetings(&store, 100_000, is_due).await;
    let batch = redis.options().tick_batch as u64;
    let partitions = store.keys().partitions();
    let mut due_in = vec![0u64; partitions as usize];
    for m in (1..=100_000).filter(|m| is_due(*m)) {
        due_in[store.keys().partition(m) as usize] += 1;
    }
    // every partition takes one meet_tick call per batch of what is due
    // there (the last saying nothing more is due); one with nothing due
    // takes one call that finds nothing
    let steps_in: Vec<u64> = due_in.iter().map(|n| n.div_ceil(batch).max(1)).collect();
    let steps: u64 = steps_in.iter().sum();

    // SLOWLOG with a threshold of 0 keeps every command with its arguments,
    // the commands Lua runs included: here a log of the tick's calls, whose
    // durations are not looked at; long enough for all of them
    let mut conn = redis.conn().await;
    for (name, value) in [("slowlog-log-slower-than", 0), ("slowlog-max-len", LOG_LEN)] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .expect("CONFIG SET");
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .expect("reset");
    let report = store.tick(t0()).await.expect("tick");
    let log = slowlog(&mut conn).await;
    let calls: Vec<&Vec<String>> = log
        .iter()
        .filter(|args| args[0].eq_ignore_ascii_case("fcall"))
        .collect();

    let activated: BTreeSet<InstanceId> = report.activated.iter().copied().collect();
    let expected: BTreeSet<InstanceId> = (1..=100_000)
        .filter(|m| is_due(*m))
        .map(|m| InstanceId::new(m, 1))
        .collect();
    assert_eq!(report.activated.len(), 10_000, "each activation once");
    assert_eq!(activated, expected, "exactly the due instances");
    assert_eq!(
        state(&store, InstanceId::new(1, 1)).await,
        InstanceState::Scheduled,
        "what is not due is left alone"
    );
    assert_eq!(report.steps, steps);

    // meet_tick: one key (the partition's due index), then now, the
    // timeout budget and the batch
    let ticks: Vec<&&Vec<String>> = calls.iter().filter(|args| args[1] == "meet_tick").collect();
    assert_eq!(ticks.len() as u64, steps, "one meet_tick per step");
    assert!(
        ticks
            .iter()
            .all(|args| args[2] == "1" && args[6] == batch.to_string()),
        "each call asks for at most {batch} instances: {ticks:?}"
    );
    for (p, expected) in steps_in.iter().enumerate() {
        let key = meetingd::store::Keys::due(p as u64);
        let made = ticks.iter().filter(|args| args[3] == key).count() as u64;
        assert_eq!(made, *expected, "calls in partition {p}");
    }
    assert_eq!(calls.len(), ticks.len(), "no other Lua call in a tick");
    // what those calls ran inside Redis: bounded by what was due (as in
    // `tick::a_tick_reads_only_what_is_due`), not by the 100,000 stored
    // (each start also writes its entry, and announces it twice: see
    // `tick::a_tick_reads_only_what_is_due`)
    assert!(
        log.len() < 18 * 10_000,
        "{} commands for 10,000 due instances",
        log.len()
    );
}

/// The length of SLOWLOG while it serves as a log of every command.
const LOG_LEN: usize = 1_000_000;

/// Every command in Redis' SLOWLOG (newest first), as its arguments (as far
/// as SLOWLOG keeps them: 31, then a summary of the rest).
async fn slowlog(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Vec<String>> {
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await
        .expect("SLOWLOG GET");
    assert!(
        log.len() < LOG_LEN,
        "SLOWLOG is full: the oldest calls may be missing"
    );
    log.iter()
        .map(|entry| match entry {
            redis::Value::Array(fields) => match &fields[3] {
                redis::Value::Array(args) => args.iter().map(text).collect::<Vec<String>>(),
                other => panic!("arguments expected, got {other:?}"),
            },
            other => panic!("a SLOWLOG entry expected, got {other:?}"),
        })
        .collect()
}
