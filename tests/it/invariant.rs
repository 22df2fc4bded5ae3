//! The invariant under concurrency: after 10,000 random operations from 8
//! connections at once (joins, leaves, posts, ends, ticks, a moving clock),
//! every instance's participants are exactly the users whose last event in
//! it is a join, and no user has two joins or two leaves in a row.

use std::collections::{BTreeMap, BTreeSet};

use meetingd::clock::ManualClock;
use meetingd::error::Code;
use meetingd::store::{EventKind, InstanceId, InstanceRef, Meeting, Store, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{MIN, Redis, t0, users};

const MEETINGS: u64 = 4;
const ORDERS: u64 = 6;
const USERS: u64 = 12;
const TASKS: u64 = 8;
const OPS_PER_TASK: u64 = 1250;

async fn setup(store: &Store) {
    users(store, 1..=USERS).await;
    for m in 1..=MEETINGS {
        let meeting = Meeting {
            id: m,
            title: format!("m{m}"),
            description: String::new(),
            public: m % 2 == 1,
        };
        store.meeting_set(&meeting).await.expect("meeting");
        // even meetings are private to the even users
        let audience: Vec<String> = (1..=USERS)
            .filter(|u| u % 2 == 0)
            .map(|u| format!("U{u}@example.com"))
            .collect();
        store.audience_add(m, &audience).await.expect("audience");
        // windows of 10 minutes, overlapping by 5
        for o in 1..=ORDERS {
            let from = t0() + (o as i64 - 1) * 5 * MIN;
            store
                .instance_set(InstanceId::new(m, o), from, from + 10 * MIN)
                .await
                .expect("instance");
        }
    }
}

type Outcomes = BTreeMap<(&'static str, &'static str), u64>;

async fn random_ops(store: Store, clock: ManualClock, seed: u64) -> Outcomes {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcomes = Outcomes::new();
    for _ in 0..OPS_PER_TASK {
        let user = rng.random_range(1..=USERS);
        let meeting = rng.random_range(1..=MEETINGS);
        let target = if rng.random_bool(0.5) {
            InstanceRef::Current(meeting)
        } else {
            InstanceRef::Exact(InstanceId::new(meeting, rng.random_range(1..=ORDERS)))
        };
        let roll = rng.random_range(0..1000);
        let (op, result): (&str, Result<(), StoreError>) = match roll {
            0..=399 => ("join", store.join(user, target).await.map(drop)),
            400..=749 => ("leave", store.leave(user, target).await.map(drop)),
            750..=949 => ("post", store.post(user, target, "hi", None).await.map(drop)),
            950..=954 => ("end", store.end(target).await.map(drop)),
            955..=994 => ("tick", store.tick(clock.now_ms()).await.map(drop)),
            _ => {
                clock.advance(30_000);
                ("clock", Ok(()))
            }
        };
        let outcome = match result {
            Ok(()) => "ok",
            Err(err) => match err.code() {
                Code::Inactive => "inactive",
                Code::NotAllowed => "not_allowed",
                Code::AlreadyJoined => "already_joined",
                Code::NotJoined => "not_joined",
                Code::NotFound => "not_found",
                other => panic!("unexpected {other}: {err}"),
            },
        };
        *outcomes.entry((op, outcome)).or_default() += 1;
    }
    outcomes
}

trait NowMs {
    fn now_ms(&self) -> i64;
}

impl NowMs for ManualClock {
    fn now_ms(&self) -> i64 {
        meetingd::clock::Clock::now(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participants_match_the_event_log_after_10000_concurrent_operations() {
    let redis = Redis::start();
    let clock = ManualClock::new(t0());
    let store = redis.store_on(clock.clone(), redis.options()).await;
    setup(&store).await;
    store.tick(t0()).await.expect("first tick");
    let mut tasks = Vec::new();
    for seed in 0..TASKS {
        let mut options = redis.options();
        options.tick_batch = 3;
        options.timeout_budget = 2;
        let task_store = redis.store_on(clock.clone(), options).await;
        tasks.push(tokio::spawn(random_ops(task_store, clock.clone(), seed)));
    }
    let mut outcomes = Outcomes::new();
    for task in tasks {
        for (outcome, n) in task.await.expect("task") {
            *outcomes.entry(outcome).or_default() += n;
        }
    }
    assert_eq!(outcomes.values().sum::<u64>(), TASKS * OPS_PER_TASK);
    let ok = |op| outcomes.get(&(op, "ok")).copied().unwrap_or(0);

    let mut joins = 0;
    let mut leaves = 0;
    for m in 1..=MEETINGS {
        for o in 1..=ORDERS {
            let instance = InstanceId::new(m, o);
            let (_, present) = store
                .participants(instance.into(), None, 1000)
                .await
                .expect("participants");
            let present: BTreeSet<u64> = present.iter().map(|p| p.user).collect();
            let mut last: BTreeMap<u64, EventKind> = BTreeMap::new();
            let mut after: Option<String> = None;
            loop {
                let (_, page) = store
                    .events(instance.into(), after.as_deref(), 1000)
                    .await
                    .expect("events");
                for event in page.items {
                    let Some(user) = event.user else {
                        continue;
                    };
                    let previous = last.insert(user, event.kind);
                    // joins alternate with leaves or timeouts, starting with a join
                    let alternates = matches!(
                        (previous, event.kind),
                        (
                            None | Some(EventKind::Leave | EventKind::Timeout),
                            EventKind::Join
                        ) | (Some(EventKind::Join), EventKind::Leave | EventKind::Timeout)
                    );
                    assert!(
                        alternates,
                        "{instance}: user {user} has {:?} after {previous:?}",
                        event.kind
                    );
                    match event.kind {
                        EventKind::Join => joins += 1,
                        EventKind::Leave => leaves += 1,
                        EventKind::Timeout | EventKind::Start | EventKind::End => {}
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let joined: BTreeSet<u64> = last
                .into_iter()
                .filter(|(_, kind)| *kind == EventKind::Join)
                .map(|(user, _)| user)
                .collect();
            assert_eq!(
                present, joined,
                "{instance}: participants are the users whose last event is a join"
            );
        }
    }
    assert_eq!(
        store.check().await.expect("meetingd check"),
        Vec::<String>::new(),
        "the consistency check agrees"
    );
    assert_eq!(
        joins,
        ok("join"),
        "one join event per successful join, none lost"
    );
    assert!(
        ok("join") > 300 && ok("leave") > 200 && ok("post") > 100 && ok("end") > 0,
        "enough succeeded to mean something: {outcomes:?}"
    );
    assert_eq!(
        leaves,
        ok("leave"),
        "one leave event per successful leave, none lost"
    );
}
