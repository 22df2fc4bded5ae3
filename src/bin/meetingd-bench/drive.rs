//! Load generators: the same operations driven through the daemon's socket
//! and directly through the store (the same library calls, no daemon in
//! between), with the same concurrency, so the two can be compared (the
//! floor, `floor.rs`, is the third).
//!
//! C connections each keep D operations in flight: over the socket, D
//! operations' request lines go out in one write and their replies are read
//! back; directly, D operations' calls go out in one pipeline on the
//! connection's store. An operation's latency runs from the moment its
//! batch was sent to the moment its (last) reply came.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use meetingd::store::{
    Call, InstanceId, InstanceRef, Keys, Load, Meeting, Store, StoreError, StoreOptions, User,
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

/// The operations of a mix, one after the other, for one connection.
pub struct Picker {
    mix: Mix,
    rng: StdRng,
}

impl Picker {
    /// The next operation.
    pub fn pick(&mut self) -> Op {
        self.mix.pick(&mut self.rng)
    }
}

impl Mix {
    /// Connection `c`'s operations (the same for every driver).
    pub fn picker(self, c: usize) -> Picker {
        Picker {
            mix: self,
            rng: StdRng::seed_from_u64(c as u64),
        }
    }

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
    /// Meetings 1..=meetings, private, each with an active instance M/1;
    /// every user of the bench is in every audience (a public meeting's
    /// is left empty: it is not read).
    pub meetings: u64,
    /// Users sitting in every instance (they post and are listed).
    pub sitting: u64,
    /// When the instances' windows are centred.
    pub now: i64,
    /// The key layout (the default partition count).
    pub keys: Keys,
    /// Make the meetings public (anybody joins) instead of private.
    pub public: bool,
}

/// Users who join and leave: one per (connection, slot).
const MOVER_BASE: u64 = 1;
/// Users who sit in the instances: meeting m's are SITTING_BASE + m*1000 + i.
const SITTING_BASE: u64 = 1_000_000;
/// Users who passed through the instances before a run (the stored
/// events): PASSER_BASE + i for i < PASSERS.
pub const PASSER_BASE: u64 = 5_000_000;
/// How many passed through.
pub const PASSERS: u64 = 1000;
/// A chat message of 60 bytes.
pub const TEXT: &str = "a sixty byte chat message, about what the meeting is about..";

impl World {
    /// A world of `meetings` meetings with `sitting` users in each, now.
    pub fn new(meetings: u64, sitting: u64, now: i64) -> World {
        World {
            meetings,
            sitting,
            now,
            keys: Keys::new(meetingd::store::DEFAULT_PARTITIONS),
            public: false,
        }
    }

    /// The instance a connection works in.
    pub fn instance(&self, connection: usize) -> InstanceId {
        InstanceId::new(1 + connection as u64 % self.meetings, 1)
    }

    /// The user who joins and leaves in a connection's slot.
    pub fn mover(connection: usize, slot: usize) -> u64 {
        MOVER_BASE + (connection * 1000 + slot) as u64
    }

    /// The user who posts in a connection's slot (one sitting in its
    /// instance).
    pub fn poster(&self, connection: usize, slot: usize) -> u64 {
        let meeting = self.instance(connection).meeting;
        World::sitter(meeting, slot as u64 % self.sitting.max(1))
    }

    /// A user's e-mail.
    pub fn email(user: u64) -> String {
        format!("u{user}@example.com")
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
        let mut emails = Vec::new();
        for c in 0..connections {
            for s in 0..slots {
                let mover = World::mover(c, s);
                records.push(Load::User(user(mover)));
                emails.push(World::email(mover));
            }
        }
        for m in 1..=self.meetings {
            for i in 0..self.sitting {
                emails.push(World::email(World::sitter(m, i)));
            }
        }
        emails.extend((0..PASSERS).map(|i| World::email(PASSER_BASE + i)));
        for m in 1..=self.meetings {
            records.push(Load::Meeting(Meeting {
                id: m,
                title: format!("bench {m}"),
                description: "a meeting of the benchmark".into(),
                public: self.public,
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
        // a public meeting does not read its audience
        for m in (1..=self.meetings).filter(|_| !self.public) {
            for chunk in emails.chunks(1000) {
                store
                    .audience_add(m, chunk)
                    .await
                    .map_err(|e| e.to_string())?;
            }
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

    /// The request lines of an operation on the socket (by meeting id:
    /// the daemon resolves the running instance).
    fn lines(&self, op: Op, connection: usize, slot: usize, out: &mut String) {
        let at = self.instance(connection).meeting;
        match op {
            Op::JoinLeave => {
                let u = World::mover(connection, slot);
                out.push_str(&format!("JOIN {u} {at}\nLEAVE {u} {at}\n"));
            }
            Op::Post => {
                let u = self.poster(connection, slot);
                out.push_str(&format!("POST {u} {at} \"{TEXT}\"\n"));
            }
            Op::Messages => out.push_str(&format!("MESSAGES {at} LIMIT 50\n")),
            Op::Participants => out.push_str(&format!("PARTICIPANTS {at} LIMIT 100\n")),
            Op::Active => out.push_str("ACTIVE\n"),
            Op::Attendance => out.push_str("ATTENDANCE\n"),
        }
    }

    /// How many requests (reply lines) an operation has.
    fn replies(op: Op) -> usize {
        if op == Op::JoinLeave { 2 } else { 1 }
    }

    /// The library calls of an operation done directly, as the daemon
    /// makes them (the daemon's users cached: the store's cache holds them
    /// after the set-up); `None` for an operation of several steps.
    fn direct_calls(
        &self,
        store: &Store,
        op: Op,
        connection: usize,
        slot: usize,
        calls: &mut Vec<Call<()>>,
    ) -> bool {
        let at = InstanceRef::Current(self.instance(connection).meeting);
        match op {
            Op::JoinLeave => {
                let u = World::mover(connection, slot);
                let Some(known) = store.user_cached(u) else {
                    return false;
                };
                calls.push(store.join_call(u, at, &known, None).map(drop));
                calls.push(store.leave_call(u, at, None).map(drop));
            }
            Op::Post => {
                let u = self.poster(connection, slot);
                calls.push(store.post_call(u, at, TEXT, None).map(drop));
            }
            Op::Messages => calls.push(
                store
                    .messages_call(at, None, None, 50, Some(1 << 20))
                    .map(drop),
            ),
            Op::Participants => calls.push(store.participants_call(at, None, 100).map(drop)),
            Op::Active | Op::Attendance => return false,
        }
        true
    }

    /// The operation done directly, when it is more than calls.
    async fn direct(
        &self,
        store: &Store,
        op: Op,
        connection: usize,
        slot: usize,
    ) -> Result<(), StoreError> {
        let at = InstanceRef::Current(self.instance(connection).meeting);
        match op {
            Op::JoinLeave => {
                let u = World::mover(connection, slot);
                store.join(u, at).await?;
                store.leave(u, at).await.map(drop)
            }
            Op::Post => {
                let u = self.poster(connection, slot);
                store.post(u, at, TEXT, None).await.map(drop)
            }
            Op::Messages => store.messages(at, None, None, 50).await.map(drop),
            Op::Participants => {
                let (_, list) = store.participants(at, None, 100).await?;
                let ids: Vec<u64> = list.iter().map(|p| p.user).collect();
                store.users_known(&ids).await.map(drop)
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
        email: World::email(id),
    }
}

/// What a run measured.
#[derive(Default)]
pub struct Measure {
    /// Requests done (a join+leave is two).
    requests: u64,
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
    /// One operation done, in `took`.
    pub fn record(&mut self, op: Op, took: Duration) {
        self.requests += World::replies(op) as u64 - 1;
        self.record_request(op, took);
    }

    /// One request of an operation done, in `took`.
    fn record_request(&mut self, op: Op, took: Duration) {
        self.requests += 1;
        let histogram = self.latency.entry(op).or_insert_with(|| {
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
        });
        let _ = histogram.record((took.as_micros() as u64).max(1));
    }

    /// One operation failed.
    pub fn fail(&mut self, why: String) {
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
        self.requests += other.requests;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Requests done (a join+leave is two).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Operations per second (a join+leave is one).
    pub fn operation_rate(&self) -> f64 {
        let operations: u64 = self.latency.values().map(Histogram::len).sum();
        operations as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
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
                let mut picker = mix.picker(c);
                let mut done = 0u64;
                let mut batch = String::new();
                let mut line = String::new();
                let deadline = Instant::now() + span.duration;
                while Instant::now() < deadline && span.count.is_none_or(|n| done < n) {
                    batch.clear();
                    let ops: Vec<Op> = (0..depth).map(|_| picker.pick()).collect();
                    for (slot, op) in ops.iter().enumerate() {
                        world.lines(*op, c, slot, &mut batch);
                    }
                    let sent = Instant::now();
                    if let Err(err) = write.write_all(batch.as_bytes()).await {
                        measure.fail(format!("send: {err}"));
                        break;
                    }
                    // ACTIVE and ATTENDANCE come a page at a time: an
                    // operation reads them all (what one request read before
                    // they had pages), the pages after the first once the
                    // batch's replies are in
                    let mut paged = Vec::new();
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
                        match next_page(*op, &line) {
                            Some(next) => paged.push((*op, next)),
                            None => measure.record(*op, sent.elapsed()),
                        }
                    }
                    for (op, mut next) in paged {
                        loop {
                            let command = if op == Op::Active {
                                "ACTIVE"
                            } else {
                                "ATTENDANCE"
                            };
                            let request = format!("{command} AFTER {next}\n");
                            if let Err(err) = write.write_all(request.as_bytes()).await {
                                measure.fail(format!("send: {err}"));
                                return measure;
                            }
                            line.clear();
                            if !matches!(read.read_line(&mut line).await, Ok(n) if n > 0) {
                                measure.fail("the daemon closed the connection".into());
                                return measure;
                            }
                            if !line.starts_with("{\"ok\":true") {
                                measure.fail(line.trim_end().to_string());
                            }
                            match next_page(op, &line) {
                                Some(after) => next = after,
                                None => break,
                            }
                        }
                        measure.record(op, sent.elapsed());
                    }
                    done += depth as u64;
                }
                measure
            })
        })
        .collect();
    gather(tasks, started).await
}

/// The `next` of a page of ACTIVE or ATTENDANCE (a reply of a daemon that
/// pages them), to ask for the following page with; `None` at the end, or
/// for another operation.
fn next_page(op: Op, line: &str) -> Option<String> {
    if !matches!(op, Op::Active | Op::Attendance) {
        return None;
    }
    // the last field of the result: `..."next":<value>}}` (read from the
    // end, not parsed whole: a page may be big)
    let (_, tail) = line.trim_end().rsplit_once("\"next\":")?;
    let value = tail.strip_suffix("}}")?;
    match value {
        "null" => None,
        quoted if quoted.starts_with('"') => Some(quoted.trim_matches('"').to_string()),
        number => Some(number.to_string()),
    }
}

/// Drive Redis directly, through the store: one store (one connection) per
/// connection, `depth` operations' calls in one pipeline at a time (an
/// operation of several steps, ACTIVE or ATTENDANCE, runs its steps with
/// the others at once).
pub async fn direct(
    options: StoreOptions,
    world: World,
    mix: Mix,
    connections: usize,
    depth: usize,
    span: Span,
) -> Result<Measure, String> {
    let mut stores = Vec::new();
    for c in 0..connections {
        let store = Store::connect(options.clone())
            .await
            .map_err(|e| e.to_string())?;
        // the users this connection moves, known as the daemon knows them
        let movers: Vec<u64> = (0..depth).map(|s| World::mover(c, s)).collect();
        store
            .users_known(&movers)
            .await
            .map_err(|e| e.to_string())?;
        stores.push(store);
    }
    let started = Instant::now();
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(c, store)| {
            tokio::spawn(async move {
                let store = Arc::new(store);
                let mut measure = Measure::default();
                let mut picker = mix.picker(c);
                let mut done = 0u64;
                let deadline = Instant::now() + span.duration;
                while Instant::now() < deadline && span.count.is_none_or(|n| done < n) {
                    let ops: Vec<Op> = (0..depth).map(|_| picker.pick()).collect();
                    let sent = Instant::now();
                    let mut calls = Vec::new();
                    let mut steps = Vec::new();
                    for (slot, op) in ops.iter().enumerate() {
                        if !world.direct_calls(&store, *op, c, slot, &mut calls) {
                            steps.push((slot, *op));
                        }
                    }
                    let (results, stepped) = futures_util::future::join(
                        store.run_all(calls),
                        join_all(steps.iter().map(|(slot, op)| {
                            let store = store.clone();
                            async move { world.direct(&store, *op, c, *slot).await }
                        })),
                    )
                    .await;
                    for result in results.into_iter().chain(stepped) {
                        if let Err(err) = result {
                            measure.fail(err.to_string());
                        }
                    }
                    for op in &ops {
                        measure.record(*op, sent.elapsed());
                    }
                    done += depth as u64;
                }
                measure
            })
        })
        .collect();
    Ok(gather(tasks, started).await)
}

/// Drive the daemon at a fixed rate (`rate` operations per second over all
/// connections, one at a time per connection): the latency of each request
/// at that rate (a join+leave is one operation of two requests, each timed
/// on its own).
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
                let mut picker = mix.picker(c);
                // spread the connections over the interval
                tokio::time::sleep(every.mul_f64(c as f64 / connections as f64)).await;
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let deadline = Instant::now() + duration;
                let mut batch = String::new();
                let mut line = String::new();
                while Instant::now() < deadline {
                    ticker.tick().await;
                    let op = picker.pick();
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
                        measure.record_request(op, sent.elapsed());
                    }
                }
                measure
            })
        })
        .collect();
    gather(tasks, started).await
}

/// The drivers' measures, merged; a driver that failed counts as an error.
pub async fn gather(tasks: Vec<tokio::task::JoinHandle<Measure>>, started: Instant) -> Measure {
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
