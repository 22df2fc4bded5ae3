//! Load generators: the same operations driven through the daemon's socket
//! and directly through the store (the same Lua functions, no daemon in
//! between), with the same concurrency, so the two can be compared.
//!
//! C connections each keep D operations in flight: over the socket, D
//! operations' request lines go out in one write and their replies are read
//! back; directly, D operations run at once on the connection's store (its
//! multiplexed connection pipelines them). An operation's latency runs from
//! the moment its batch was sent to the moment its (last) reply came.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use meetingd::store::{
    InstanceId, InstanceRef, Load, Meeting, Store, StoreError, StoreOptions, User,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// JOIN then LEAVE (one operation: the pair).
    JoinLeave,
    /// POST a 60-byte message.
    Post,
    /// MESSAGES, the first 50.
    Messages,
    /// PARTICIPANTS, the first 100, with names.
    Participants,
    /// ACTIVE: every active instance.
    Active,
    /// ATTENDANCE: every active instance's participants.
    Attendance,
    /// All of the above, weighted like a busy classroom product.
    Realistic,
}

/// One operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// JOIN + LEAVE.
    JoinLeave,
    /// POST.
    Post,
    /// MESSAGES.
    Messages,
    /// PARTICIPANTS.
    Participants,
    /// ACTIVE.
    Active,
    /// ATTENDANCE.
    Attendance,
}

impl Mix {
    /// The next operation of this mix.
    fn pick(self, rng: &mut StdRng) -> Op {
        match self {
            Mix::JoinLeave => Op::JoinLeave,
            Mix::Post => Op::Post,
            Mix::Messages => Op::Messages,
            Mix::Participants => Op::Participants,
            Mix::Active => Op::Active,
            Mix::Attendance => Op::Attendance,
            Mix::Realistic => match rng.random_range(0..100) {
                0..30 => Op::JoinLeave,
                30..60 => Op::Post,
                60..85 => Op::Messages,
                85..95 => Op::Participants,
                95..98 => Op::Active,
                _ => Op::Attendance,
            },
        }
    }

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mix::JoinLeave => "join+leave",
            Mix::Post => "post",
            Mix::Messages => "messages",
            Mix::Participants => "participants",
            Mix::Active => "active",
            Mix::Attendance => "attendance",
            Mix::Realistic => "realistic",
        }
    }
}

/// The data the operations act on.
#[derive(Debug, Clone, Copy)]
pub struct World {
    /// Meetings 1..=meetings, each with an active instance M/1.
    pub meetings: u64,
    /// Users sitting in every instance (they post and are listed).
    pub sitting: u64,
    /// When the instances' windows are centred.
    pub now: i64,
}

/// Users who join and leave: one per (connection, slot).
const MOVER_BASE: u64 = 1;
/// Users who sit in the instances: meeting m's are SITTING_BASE + m*1000 + i.
const SITTING_BASE: u64 = 1_000_000;
/// A chat message of 60 bytes.
pub const TEXT: &str = "a sixty byte chat message, about what the meeting is about..";

impl World {
    /// The instance a connection works in.
    pub fn instance(&self, connection: usize) -> InstanceId {
        InstanceId::new(1 + connection as u64 % self.meetings, 1)
    }

    fn mover(connection: usize, slot: usize) -> u64 {
        MOVER_BASE + (connection * 1000 + slot) as u64
    }

    /// The i-th user sitting in meeting `meeting`'s instance.
    pub fn sitter(meeting: u64, i: u64) -> u64 {
        SITTING_BASE + meeting * 1000 + i
    }

    /// Create the users, meetings and instances, activate them and seat the
    /// sitting users. `movers` users move per connection.
    pub async fn create(
        &self,
        store: &Store,
        connections: usize,
        slots: usize,
    ) -> Result<(), String> {
        let mut records = Vec::new();
        for c in 0..connections {
            for s in 0..slots {
                records.push(Load::User(user(World::mover(c, s))));
            }
        }
        for m in 1..=self.meetings {
            records.push(Load::Meeting(Meeting {
                id: m,
                title: format!("bench {m}"),
                description: "a meeting of the benchmark".into(),
                public: true,
            }));
            records.push(Load::Instance {
                id: InstanceId::new(m, 1),
                from: self.now - 3_600_000,
                to: self.now + 86_400_000,
            });
            for i in 0..self.sitting {
                records.push(Load::User(user(World::sitter(m, i))));
            }
        }
        let loaded = store.load(records).await.map_err(|e| e.to_string())?;
        if loaded.refused > 0 {
            return Err(format!("setup refused: {:?}", loaded.first_refusal));
        }
        store.tick(store.now()).await.map_err(|e| e.to_string())?;
        for m in 1..=self.meetings {
            for i in 0..self.sitting {
                let target = InstanceRef::Exact(InstanceId::new(m, 1));
                match store.join(World::sitter(m, i), target).await {
                    Ok(_) | Err(StoreError::Rule { .. }) => {}
                    Err(err) => return Err(err.to_string()),
                }
            }
        }
        Ok(())
    }

    /// The request lines of an operation on the socket.
    fn lines(&self, op: Op, connection: usize, slot: usize, out: &mut String) {
        let at = self.instance(connection);
        match op {
            Op::JoinLeave => {
                let u = World::mover(connection, slot);
                out.push_str(&format!("JOIN {u} {at}\nLEAVE {u} {at}\n"));
            }
            Op::Post => {
                let u = World::sitter(at.meeting, slot as u64 % self.sitting.max(1));
                out.push_str(&format!("POST {u} {at} \"{TEXT}\"\n"));
            }
            Op::Messages => out.push_str(&format!("MESSAGES {at} LIMIT 50\n")),
            Op::Participants => out.push_str(&format!("PARTICIPANTS {at} LIMIT 100\n")),
            Op::Active => out.push_str("ACTIVE\n"),
            Op::Attendance => out.push_str("ATTENDANCE\n"),
        }
    }

    /// How many reply lines an operation has.
    fn replies(op: Op) -> usize {
        if op == Op::JoinLeave { 2 } else { 1 }
    }

    /// The operation done directly: the store calls the daemon would make.
    async fn direct(
        &self,
        store: &Store,
        op: Op,
        connection: usize,
        slot: usize,
    ) -> Result<(), StoreError> {
        let at = InstanceRef::Exact(self.instance(connection));
        match op {
            Op::JoinLeave => {
                let u = World::mover(connection, slot);
                store.join(u, at).await?;
                store.leave(u, at).await.map(drop)
            }
            Op::Post => {
                let meeting = self.instance(connection).meeting;
                let u = World::sitter(meeting, slot as u64 % self.sitting.max(1));
                store.post(u, at, TEXT).await.map(drop)
            }
            Op::Messages => store.messages(at, None, None, 50).await.map(drop),
            Op::Participants => {
                let (_, list) = store.participants(at, None, 100).await?;
                let ids: Vec<u64> = list.iter().map(|p| p.user).collect();
                store.users_get(&ids).await.map(drop)
            }
            Op::Active => store.active().await.map(drop),
            Op::Attendance => store.attendance().await.map(drop),
        }
    }
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
        age: 30,
        gender: "-".into(),
        email: format!("u{id}@example.com"),
    }
}

/// What a run measured.
#[derive(Default)]
pub struct Measure {
    /// Latency per operation, µs.
    pub latency: BTreeMap<Op, Histogram<u64>>,
    /// Operations that failed.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Measure {
    fn record(&mut self, op: Op, took: Duration) {
        let histogram = self.latency.entry(op).or_insert_with(|| {
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
        });
        let _ = histogram.record((took.as_micros() as u64).max(1));
    }

    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    fn merge(&mut self, other: Measure) {
        for (op, h) in other.latency {
            match self.latency.get_mut(&op) {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => {
                    self.latency.insert(op, h);
                }
            }
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Operations measured.
    pub fn count(&self) -> u64 {
        self.latency.values().map(Histogram::len).sum()
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A quantile of every operation's latency, ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut all: Option<Histogram<u64>> = None;
        for h in self.latency.values() {
            match &mut all {
                Some(a) => {
                    let _ = a.add(h);
                }
                None => all = Some(h.clone()),
            }
        }
        all.map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// How long, or how many.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Stop after this long.
    pub duration: Duration,
    /// Or after this many operations per connection.
    pub count: Option<u64>,
}

/// Drive the daemon's socket.
pub async fn through_daemon(
    socket: PathBuf,
    world: World,
    mix: Mix,
    connections: usize,
    depth: usize,
    span: Span,
) -> Measure {
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut measure = Measure::default();
                let stream = match UnixStream::connect(&socket).await {
                    Ok(stream) => stream,
                    Err(err) => {
                        measure.fail(format!("connect: {err}"));
                        return measure;
                    }
                };
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                let mut rng = StdRng::seed_from_u64(c as u64);
                let mut done = 0u64;
                let mut batch = String::new();
                let mut line = String::new();
                let deadline = Instant::now() + span.duration;
                while Instant::now() < deadline && span.count.is_none_or(|n| done < n) {
                    batch.clear();
                    let ops: Vec<Op> = (0..depth).map(|_| mix.pick(&mut rng)).collect();
                    for (slot, op) in ops.iter().enumerate() {
                        world.lines(*op, c, slot, &mut batch);
                    }
                    let sent = Instant::now();
                    if let Err(err) = write.write_all(batch.as_bytes()).await {
                        measure.fail(format!("send: {err}"));
                        break;
                    }
                    for op in &ops {
                        for _ in 0..World::replies(*op) {
                            line.clear();
                            match read.read_line(&mut line).await {
                                Ok(n) if n > 0 => {
                                    if !line.starts_with("{\"ok\":true") {
                                        measure.fail(line.trim_end().to_string());
                                    }
                                }
                                _ => {
                                    measure.fail("the daemon closed the connection".into());
                                    return measure;
                                }
                            }
                        }
                        measure.record(*op, sent.elapsed());
                    }
                    done += depth as u64;
                }
                measure
            })
        })
        .collect();
    gather(tasks, started).await
}

/// Drive Redis directly, through the store: one store (one connection) per
/// connection, `depth` operations at once on each.
pub async fn direct(
    options: StoreOptions,
    world: World,
    mix: Mix,
    connections: usize,
    depth: usize,
    span: Span,
) -> Result<Measure, String> {
    let mut stores = Vec::new();
    for _ in 0..connections {
        stores.push(
            Store::connect(options.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let started = Instant::now();
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(c, store)| {
            tokio::spawn(async move {
                let store = Arc::new(store);
                let mut measure = Measure::default();
                let mut rng = StdRng::seed_from_u64(c as u64);
                let mut done = 0u64;
                let deadline = Instant::now() + span.duration;
                while Instant::now() < deadline && span.count.is_none_or(|n| done < n) {
                    let ops: Vec<Op> = (0..depth).map(|_| mix.pick(&mut rng)).collect();
                    let sent = Instant::now();
                    let results = join_all(ops.iter().enumerate().map(|(slot, op)| {
                        let store = store.clone();
                        async move {
                            let result = world.direct(&store, *op, c, slot).await;
                            (*op, result, sent.elapsed())
                        }
                    }))
                    .await;
                    for (op, result, took) in results {
                        if let Err(err) = result {
                            measure.fail(err.to_string());
                        }
                        measure.record(op, took);
                    }
                    done += depth as u64;
                }
                measure
            })
        })
        .collect();
    Ok(gather(tasks, started).await)
}

/// Drive the daemon at a fixed rate (operations per second over all
/// connections, one at a time per connection): the latency of each request
/// at that rate (a join+leave counts its JOIN and its LEAVE apart).
pub async fn at_rate(
    socket: PathBuf,
    world: World,
    mix: Mix,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Measure {
    let every = Duration::from_secs_f64(connections as f64 / rate.max(1.0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut measure = Measure::default();
                let Ok(stream) = UnixStream::connect(&socket).await else {
                    measure.fail("connect".into());
                    return measure;
                };
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                let mut rng = StdRng::seed_from_u64(c as u64);
                // spread the connections over the interval
                tokio::time::sleep(every.mul_f64(c as f64 / connections as f64)).await;
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let deadline = Instant::now() + duration;
                let mut batch = String::new();
                let mut line = String::new();
                while Instant::now() < deadline {
                    ticker.tick().await;
                    let op = mix.pick(&mut rng);
                    batch.clear();
                    world.lines(op, c, 0, &mut batch);
                    // one request at a time: each request's own latency
                    for request in batch.split_inclusive('\n') {
                        let sent = Instant::now();
                        if write.write_all(request.as_bytes()).await.is_err() {
                            measure.fail("send".into());
                            return measure;
                        }
                        line.clear();
                        if !matches!(read.read_line(&mut line).await, Ok(n) if n > 0) {
                            measure.fail("closed".into());
                            return measure;
                        }
                        if !line.starts_with("{\"ok\":true") {
                            measure.fail(line.trim_end().to_string());
                        }
                        measure.record(op, sent.elapsed());
                    }
                }
                measure
            })
        })
        .collect();
    gather(tasks, started).await
}

/// The drivers' measures, merged; a driver that failed counts as an error.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Measure>>, started: Instant) -> Measure {
    let mut total = Measure::default();
    for task in join_all(tasks).await {
        match task {
            Ok(measure) => total.merge(measure),
            Err(err) => total.fail(format!("a driver task failed: {err}")),
        }
    }
    total.elapsed = started.elapsed();
    total
}
