//! Redis Cluster: a local 3-master cluster on loopback ports, started and
//! stopped by the test. The store and the daemon run on it unchanged (every
//! key of a call shares one hash tag); the library is loaded on every
//! master and loaded again where a master lost it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meetingd::clock::ManualClock;
use meetingd::store::{EventKind, InstanceId, InstanceRef, Store, StoreOptions};

use crate::harness::{Daemon, MIN, at, public_meeting, t0, users, wait_until};

/// A Redis Cluster of the test's own.
pub struct Cluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

/// A loopback port free now, with its cluster bus port (+10000) free too.
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("address").port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    /// Start `masters` nodes and join them into one cluster.
    pub fn start(masters: usize) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            ports: Vec::new(),
            _dir: tempfile::tempdir().expect("dir"),
        };
        for _ in 0..masters {
            cluster.spawn_node();
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(&create);
        for port in &cluster.ports {
            cluster.wait_state_ok(*port);
        }
        cluster
    }

    /// Start one more cluster-enabled redis-server, not yet in the
    /// cluster; wait until it answers. Its port.
    fn spawn_node(&mut self) -> u16 {
        let port = free_port();
        let node_dir: PathBuf = self._dir.path().join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(crate::harness::TEST_REDIS_ARGS)
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.nodes.push(child);
        self.ports.push(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis_cli(&["-p", &port.to_string(), "PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "node {port} starts");
            std::thread::sleep(Duration::from_millis(20));
        }
        port
    }

    fn wait_state_ok(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .cli(port, &["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
        {
            assert!(Instant::now() < deadline, "the cluster forms at {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A master joined by a bare `CLUSTER MEET` (no slots, and none of the
    /// functions: unlike `redis-cli --cluster add-node`, nothing copies
    /// them); returns once every node knows it and it sees the cluster ok.
    pub fn add_bare_master(&mut self) -> u16 {
        let port = self.spawn_node();
        let seed = self.ports[0];
        let meet = self.cli(seed, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()]);
        assert_eq!(meet.trim(), "OK", "CLUSTER MEET: {meet}");
        let id = self.node_id(port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ports.iter().all(|p| {
            self.cli(*p, &["CLUSTER", "NODES"])
                .lines()
                .any(|l| l.starts_with(&id) && !l.contains("handshake"))
        }) {
            assert!(Instant::now() < deadline, "every node meets {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_state_ok(port);
        port
    }

    /// A replica of `master`, joined by CLUSTER MEET and CLUSTER
    /// REPLICATE; returns once its link to the master is up (it then has
    /// the master's data and functions).
    pub fn add_replica(&mut self, master: u16) -> u16 {
        let port = self.spawn_node();
        let meet = self.cli(master, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()]);
        assert_eq!(meet.trim(), "OK", "CLUSTER MEET: {meet}");
        let master_id = self.node_id(master);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let known = self.cli(port, &["CLUSTER", "NODES"]).contains(&master_id);
            if known && self.cli(port, &["CLUSTER", "REPLICATE", &master_id]).trim() == "OK" {
                break;
            }
            assert!(Instant::now() < deadline, "{port} replicates {master}");
            std::thread::sleep(Duration::from_millis(50));
        }
        while !self
            .cli(port, &["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "{port} syncs with {master}");
            std::thread::sleep(Duration::from_millis(50));
        }
        port
    }

    /// A coordinated failover: `replica` takes over from its master; returns
    /// once it is a master that every node agrees on.
    pub fn fail_over_to(&self, replica: u16) {
        let answer = self.cli(replica, &["CLUSTER", "FAILOVER"]);
        assert_eq!(answer.trim(), "OK", "CLUSTER FAILOVER: {answer}");
        let id = self.node_id(replica);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ports.iter().all(|p| {
            self.cli(*p, &["CLUSTER", "NODES"])
                .lines()
                .any(|l| l.starts_with(&id) && l.contains("master"))
        }) {
            assert!(Instant::now() < deadline, "{replica} becomes a master");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_state_ok(replica);
    }

    /// A node's id.
    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["CLUSTER", "MYID"]).trim().to_string()
    }

    /// Begin moving `slot` from one master to another: IMPORTING on the
    /// target, then MIGRATING on the source (the order redis-cli uses).
    pub fn begin_migration(&self, slot: u16, from: u16, to: u16) {
        let slot = slot.to_string();
        let importing = self.cli(
            to,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot,
                "IMPORTING",
                &self.node_id(from),
            ],
        );
        assert_eq!(importing.trim(), "OK", "IMPORTING: {importing}");
        let migrating = self.cli(
            from,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &self.node_id(to)],
        );
        assert_eq!(migrating.trim(), "OK", "MIGRATING: {migrating}");
    }

    /// The members of a sorted set on the node at `port`, read under
    /// ASKING (a node serves a slot it is importing only so).
    pub fn members_asking(&self, port: u16, key: &str) -> Vec<String> {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("client")
            .get_connection()
            .expect("connect to the node");
        let _: () = redis::cmd("ASKING").query(&mut conn).expect("ASKING");
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .expect("ZRANGE")
    }

    /// The keys of `slot` held by the node at `port`.
    pub fn keys_in_slot(&self, port: u16, slot: u16) -> Vec<String> {
        self.cli(
            port,
            &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "10000"],
        )
        .lines()
        .map(str::to_string)
        .filter(|k| !k.is_empty())
        .collect()
    }

    /// A master other than the one at `port`.
    pub fn other_master(&self, port: u16) -> u16 {
        *self
            .ports
            .iter()
            .find(|p| **p != port)
            .expect("another master")
    }

    /// Begin moving `key`'s slot from its master to another, every key of
    /// the slot migrated already: the slot and the master it moves to.
    pub fn migrate_slot_of(&self, key: &str) -> (u16, u16) {
        let slot = self.slot(key);
        let from = self.owner(key);
        let to = self.other_master(from);
        self.begin_migration(slot, from, to);
        self.migrate_keys(slot, from, to);
        (slot, to)
    }

    /// MIGRATE every key of `slot` that is still on `from` to `to`.
    pub fn migrate_keys(&self, slot: u16, from: u16, to: u16) {
        let keys = self.keys_in_slot(from, slot);
        if keys.is_empty() {
            return;
        }
        let to = to.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &to, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(String::as_str));
        let out = self.cli(from, &args);
        assert_eq!(out.trim(), "OK", "MIGRATE: {out}");
    }

    /// End the migration of `slot`: the target owns it (told to the target
    /// first, then to every other node).
    pub fn finish_migration(&self, slot: u16, to: u16) {
        let id = self.node_id(to);
        let slot = slot.to_string();
        let mut order = vec![to];
        order.extend(self.ports.iter().copied().filter(|p| *p != to));
        for port in order {
            let out = self.cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &id]);
            assert_eq!(out.trim(), "OK", "SETSLOT NODE at {port}: {out}");
        }
    }

    /// Kill the node at `port` (SIGKILL), as a crash would.
    pub fn kill(&mut self, port: u16) {
        let at = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of the cluster");
        let _ = self.nodes[at].kill();
        let _ = self.nodes[at].wait();
    }

    /// How many times the node at `port` ran `command` (a name as INFO
    /// commandstats gives it, like `client|caching`).
    pub fn calls_of(&self, port: u16, command: &str) -> u64 {
        let stats = self.cli(port, &["INFO", "commandstats"]);
        let wanted = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// A store on the cluster.
    pub async fn store(&self, clock: ManualClock) -> Store {
        let mut options = StoreOptions::new("");
        options.cluster = self.urls();
        Store::connect_with_clock(options, std::sync::Arc::new(clock))
            .await
            .expect("store on the cluster")
    }

    /// The first node's URL alone: what a tool given one seed starts from.
    pub fn seed_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// The nodes' ports (the first is the seed).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// redis-cli on one node (not following redirections); its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let port = port.to_string();
        let mut all = vec!["-p", &port];
        all.extend_from_slice(args);
        redis_cli(&all)
    }

    /// redis-cli in cluster mode from the seed: follows MOVED and ASK.
    pub fn cli_cluster(&self, args: &[&str]) -> String {
        let port = self.ports[0].to_string();
        let mut all = vec!["-c", "-p", &port];
        all.extend_from_slice(args);
        redis_cli(&all)
    }

    /// Keep every node busy (DEBUG SLEEP) for `seconds` from other
    /// threads; the handle ends when all are awake.
    pub fn sleep_in_background(&self, seconds: f64) -> std::thread::JoinHandle<()> {
        let sleepers: Vec<_> = self
            .ports
            .iter()
            .map(|port| {
                let port = port.to_string();
                std::thread::spawn(move || {
                    redis_cli(&["-p", &port, "DEBUG", "SLEEP", &seconds.to_string()]);
                })
            })
            .collect();
        std::thread::spawn(move || {
            for sleeper in sleepers {
                sleeper.join().expect("sleeper");
            }
        })
    }

    /// Forget all data on every node (FUNCTION FLUSH is not part of
    /// FLUSHALL: the library stays).
    pub fn flush(&self) {
        for listing in self.on_each(&["FLUSHALL"]) {
            assert_eq!(listing.trim(), "OK", "FLUSHALL: {listing}");
        }
    }

    /// The slot of a key.
    pub fn slot(&self, key: &str) -> u16 {
        self.cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot")
    }

    /// The port of the master that owns `key`'s slot, as the seed's
    /// CLUSTER NODES says.
    pub fn owner(&self, key: &str) -> u16 {
        let slot = self.slot(key);
        let nodes = self.cli(self.ports[0], &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let owns = fields.iter().skip(8).any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if l <= slot && slot <= h)
            });
            if owns {
                let address = fields[1].split('@').next().expect("an address");
                return address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .expect("a port");
            }
        }
        panic!("nobody owns slot {slot}: {nodes}")
    }

    /// `meetingd check --redis-cluster <the seed only>`: exit status and
    /// output.
    pub fn check(&self) -> (i32, String) {
        crate::harness::meetingd_check(&["--redis-cluster", &self.seed_url()])
    }

    fn on_each(&self, args: &[&str]) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| {
                let mut all = vec!["-p".to_string(), p.to_string()];
                all.extend(args.iter().map(|a| a.to_string()));
                let refs: Vec<&str> = all.iter().map(String::as_str).collect();
                redis_cli(&refs)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_runs_on_a_cluster_and_reloads_a_lost_library() {
    let cluster = Cluster::start(3);
    let clock = ManualClock::new(t0());
    let store = cluster.store(clock.clone()).await;
    for listing in cluster.on_each(&["FUNCTION", "LIST", "LIBRARYNAME", "meetingd"]) {
        assert!(
            listing.contains("meetingd"),
            "the library is on every master: {listing}"
        );
    }
    users(&store, 1..=4).await;
    for m in 1..=32 {
        public_meeting(&store, m).await;
        store
            .instance_set(InstanceId::new(m, 1), t0(), t0() + 10 * MIN)
            .await
            .expect("instance");
    }
    let report = store.tick(t0()).await.expect("tick over every partition");
    assert_eq!(report.activated.len(), 32);
    for m in 1..=32 {
        for u in 1..=4 {
            store.join(u, InstanceRef::Current(m)).await.expect("join");
        }
        store
            .post(1, InstanceRef::Current(m), "hello", None)
            .await
            .expect("post");
    }
    let (_, people) = store
        .participants(InstanceRef::Current(7), None, 1000)
        .await
        .expect("participants");
    assert_eq!(people.len(), 4);
    assert_eq!(
        store
            .users_known(&[1, 2, 3, 99])
            .await
            .expect("users")
            .iter()
            .filter(|u| u.is_some())
            .count(),
        3
    );
    assert_eq!(store.active().await.expect("active").len(), 32);
    assert_eq!(store.attendance().await.expect("attendance").len(), 32);

    // one master loses the library: calls that land there load it again
    let first = cluster.ports[0].to_string();
    redis_cli(&["-p", &first, "FUNCTION", "FLUSH"]);
    for m in 1..=32 {
        store
            .leave(4, InstanceRef::Current(m))
            .await
            .expect("leave after a flush");
    }
    clock.set(t0() + 10 * MIN);
    let report = store.tick(t0() + 10 * MIN).await.expect("the end");
    assert_eq!(report.ended.len(), 32);
    assert_eq!(report.timeouts, 32 * 3);
    let (_, events) = store
        .events(InstanceId::new(5, 1).into(), None, 100)
        .await
        .expect("events");
    let kinds: Vec<EventKind> = events.items.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Timeout).count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(store.check().await.expect("check"), Vec::<String>::new());
}

/// `meetingd check` walks every master: clean data passes; damage on a
/// master that is not the seed it was given is found, and the exit status
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_walks_every_master() {
    let cluster = Cluster::start(3);
    let store = cluster.store(ManualClock::new(t0())).await;
    crate::check::scenario(&store).await;
    assert_eq!(store.check().await.expect("check"), Vec::<String>::new());
    let (code, out) = cluster.check();
    assert_eq!((code, out.trim()), (0, "clean"));

    let seed = cluster.ports()[0];
    let keys = store.keys();
    // an active instance (meetings 1, 2 and 4; 3 was ended) on another master
    let active = [1, 2, 4]
        .into_iter()
        .map(|m| InstanceId::new(m, 1))
        .find(|i| cluster.owner(&keys.present(*i)) != seed)
        .expect("an active instance away from the seed");
    // an orphan: the audience of a meeting that does not exist
    let orphan = (100..)
        .find(|m| cluster.owner(&keys.audience(*m)) != seed)
        .expect("a meeting id away from the seed");
    let present = keys.present(active);
    let audience = keys.audience(orphan);
    let damage: [&[&str]; 2] = [
        &["ZADD", &present, &t0().to_string(), "9"],
        &["ZADD", &audience, "0", "ghost@example.com"],
    ];
    for args in damage {
        let owner = cluster.owner(args[1]);
        assert_eq!(cluster.cli(owner, args).trim(), "1", "{args:?} on {owner}");
    }
    let problems = store.check().await.expect("check");
    let expected = [
        format!(
            "instance {active}: participants differ from the event log (in without a join: [9]"
        ),
        format!("Audience({orphan}): an orphan key: meeting {orphan} does not exist"),
    ];
    for needle in &expected {
        assert!(
            problems.iter().any(|p| p.contains(needle.as_str())),
            "{needle:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    let (code, out) = cluster.check();
    assert_eq!(code, 1, "{out}");
    for needle in &expected {
        assert!(out.contains(needle.as_str()), "{needle:?} in {out}");
    }
    assert!(out.contains("meetingd: 2 problems"), "{out}");
}

/// How 10,000 meetings spread over the masters with the default partition
/// count: every master holds some, none more than 40 % of the keys (16
/// partitions put 44 % on one: 7,504 / 9,381 / 13,132 keys). `cargo test
/// --test it cluster::spread -- --nocapture` prints the keys per master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_of_10000_meetings_over_3_masters() {
    let cluster = Cluster::start(3);
    let store = cluster.store(ManualClock::new(t0())).await;
    let records = (1..=10_000u64).flat_map(|m| {
        [
            meetingd::store::Load::Meeting(crate::harness::meeting_fields(m)),
            meetingd::store::Load::Instance {
                id: InstanceId::new(m, 1),
                from: t0() + MIN,
                to: t0() + 2 * MIN,
            },
        ]
    });
    let loaded = store.load(records).await.expect("load");
    assert_eq!(loaded.refused, 0);
    let sizes: Vec<u64> = cluster
        .on_each(&["DBSIZE"])
        .iter()
        .map(|s| s.trim().parse().expect("a size"))
        .collect();
    println!(
        "keys per master after 10,000 meetings: {sizes:?} (total {})",
        sizes.iter().sum::<u64>()
    );
    assert!(
        sizes.iter().all(|n| *n > 0),
        "every master holds meetings: {sizes:?}"
    );
    let total = sizes.iter().sum::<u64>();
    assert_eq!(
        total,
        10_000 * 4 + 2 * meetingd::store::DEFAULT_PARTITIONS + 1,
        "meeting, orders, schedule, upcoming per meeting, a due and a meeting index per \
         partition and the layout"
    );
    let busiest = sizes.iter().copied().max().unwrap_or(0);
    assert!(
        busiest * 100 <= total * 40,
        "the busiest master holds {busiest} of {total} keys"
    );
}

/// The protocol scenarios of `socket` and `watch` on one cluster, one after the
/// other, each on a fresh daemon and flushed data (a cluster takes seconds
/// to start; a daemon and a FLUSHALL do not).
#[test]
fn the_protocol_suite_on_a_cluster() {
    let backend = crate::socket::Backend::Cluster(Cluster::start(3));
    let scenarios = crate::socket::SCENARIOS
        .iter()
        .chain(crate::watch::SCENARIOS.iter());
    for (name, scenario) in scenarios {
        backend.flush();
        let started = Instant::now();
        scenario(&backend);
        eprintln!("on a cluster: {name}: ok in {:?}", started.elapsed());
    }
}

/// Users 1..=3 and meeting 1, private to the three of them, with instance
/// 1/1 active at t0 and user 1 in it.
async fn meeting_in_progress(store: &Store) -> InstanceId {
    users(store, 1..=3).await;
    let meeting = meetingd::store::Meeting {
        id: 1,
        title: "in progress".into(),
        description: String::new(),
        public: false,
    };
    store.meeting_set(&meeting).await.expect("meeting");
    let audience: Vec<String> = (1..=3).map(|u| format!("u{u}@example.com")).collect();
    store.audience_add(1, &audience).await.expect("audience");
    let instance = InstanceId::new(1, 1);
    store
        .instance_set(instance, t0(), t0() + 10 * MIN)
        .await
        .expect("instance");
    store.tick(t0()).await.expect("tick");
    store
        .join(1, InstanceRef::Current(1))
        .await
        .expect("join 1");
    instance
}

/// Calls on a meeting whose slot moves from its master to `to` while they
/// run: a JOIN, a LEAVE and a POST (which creates a key) once every key
/// has moved: the source answers ASK for the one key each call declares
/// (the meeting's), the target serves them under ASKING. All succeed while
/// the slot is still moving, the data ends on the target, and `meetingd
/// check` is clean.
async fn calls_during_a_migration(cluster: &Cluster, store: &Store, to: u16) {
    let instance = meeting_in_progress(store).await;
    store
        .post(1, InstanceRef::Current(1), "before", None)
        .await
        .expect("post before");

    let keys = store.keys();
    let slot = cluster.slot(&keys.schedule(1));
    let from = cluster.owner(&keys.schedule(1));
    assert_ne!(from, to, "the slot moves to another master");
    let moving = cluster.keys_in_slot(from, slot);
    assert!(moving.contains(&keys.present(instance)), "{moving:?}");
    cluster.begin_migration(slot, from, to);
    cluster.migrate_keys(slot, from, to);
    assert!(cluster.keys_in_slot(from, slot).is_empty());
    let in_migration = || {
        cluster
            .cli(to, &["CLUSTER", "NODES"])
            .contains(&format!("[{slot}-<-"))
    };
    assert!(in_migration(), "slot {slot} is importing at {to}");

    // every key already moved: ASK, then served by the target
    store
        .join(2, InstanceRef::Current(1))
        .await
        .expect("a JOIN during the migration");
    store
        .leave(1, InstanceRef::Current(1))
        .await
        .expect("a LEAVE during the migration");
    assert!(in_migration(), "the calls ran while slot {slot} was moving");
    assert_eq!(
        cluster.members_asking(to, &keys.present(instance)),
        ["2"],
        "the participants on the target"
    );

    // a POST creates a key on the target (its chat by user 2)
    store
        .post(2, InstanceRef::Current(1), "during", None)
        .await
        .expect("a POST during the migration");
    assert!(in_migration(), "the POST ran while slot {slot} was moving");
    cluster.finish_migration(slot, to);

    assert_eq!(cluster.owner(&keys.schedule(1)), to);
    assert!(cluster.keys_in_slot(from, slot).is_empty());
    let on_target = cluster.keys_in_slot(to, slot);
    for key in moving.iter().chain([&keys.chat_by(instance, 2)]) {
        assert!(
            on_target.contains(key),
            "{key} on the target: {on_target:?}"
        );
    }
    let (_, people) = store
        .participants(InstanceRef::Current(1), None, 100)
        .await
        .expect("participants");
    assert_eq!(people.iter().map(|p| p.user).collect::<Vec<_>>(), [2]);
    let (_, chat) = store
        .messages(instance.into(), None, None, 100)
        .await
        .expect("messages");
    let texts: Vec<&str> = chat.items.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["before", "during"]);
    let (_, events) = store
        .events(instance.into(), None, 100)
        .await
        .expect("events");
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
            (1, EventKind::Leave)
        ]
    );
    assert_eq!(store.check().await.expect("check"), Vec::<String>::new());
    let (code, out) = cluster.check();
    assert_eq!((code, out.trim()), (0, "clean"));
}

/// A master fails over to its replica (CLUSTER FAILOVER) under a running
/// store: the replica has the library (replicated with the data), the
/// store follows the new topology, nothing acknowledged is lost, and
/// `meetingd check` is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_on_after_a_failover() {
    let mut cluster = Cluster::start(3);
    let store = cluster.store(ManualClock::new(t0())).await;
    let instance = meeting_in_progress(&store).await;
    let master = cluster.owner(&store.keys().schedule(1));
    let replica = cluster.add_replica(master);
    let listed = cluster.cli(replica, &["FUNCTION", "LIST"]);
    assert!(listed.contains("meetingd"), "replicated: {listed}");

    cluster.fail_over_to(replica);
    assert_eq!(cluster.owner(&store.keys().schedule(1)), replica);
    // the first calls may meet the old topology (MOVED, then a refresh)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.join(2, InstanceRef::Current(1)).await {
            Ok(_) => break,
            Err(err) => {
                assert_eq!(err.code(), meetingd::error::Code::Unavailable, "{err}");
                assert!(Instant::now() < deadline, "no call got through: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    store
        .post(2, InstanceRef::Current(1), "after the failover", None)
        .await
        .expect("post");
    let (_, present) = store
        .participants(InstanceRef::Exact(instance), None, 10)
        .await
        .expect("participants");
    let users: Vec<u64> = present.iter().map(|p| p.user).collect();
    assert_eq!(users, [1, 2], "the join before the failover is kept");
    assert_eq!(store.check().await.expect("check"), Vec::<String>::new());
    let (code, out) = cluster.check();
    assert_eq!((code, out.trim()), (0, "clean"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_during_a_slot_migration_between_masters() {
    let cluster = Cluster::start(3);
    let store = cluster.store(ManualClock::new(t0())).await;
    let to = cluster.other_master(cluster.owner(&store.keys().schedule(1)));
    calls_during_a_migration(&cluster, &store, to).await;
    many_calls_during_a_migration(&cluster, &store).await;
}

/// 40 LEAVEs at once on a meeting whose slot is in migration, every key
/// already moved. Under redis-rs 1.2 they bounce between the masters (an
/// ASKING sent alone on the shared connection is taken by another call,
/// whose target answers MOVED) and the cluster connection wedges: every
/// later call timed out, long after the migration. Now a call may fail
/// `unavailable` or `in_doubt` meanwhile, never otherwise; the store
/// replaces the stuck
/// connection, serves again within seconds of the migration's end, and the
/// participants still agree with the event log.
async fn many_calls_during_a_migration(cluster: &Cluster, store: &Store) {
    let meeting = 2;
    users(store, 11..=50).await;
    public_meeting(store, meeting).await;
    let instance = InstanceId::new(meeting, 1);
    store
        .instance_set(instance, t0(), t0() + 10 * MIN)
        .await
        .expect("instance");
    store.tick(t0()).await.expect("tick");
    for u in 11..=50 {
        store
            .join(u, InstanceRef::Current(meeting))
            .await
            .expect("join");
    }
    let keys = store.keys();
    let (slot, to) = cluster.migrate_slot_of(&keys.schedule(meeting));
    let calls: Vec<_> = (11..=50)
        .map(|u| {
            let store = store.clone();
            tokio::spawn(async move { store.leave(u, InstanceRef::Current(meeting)).await })
        })
        .collect();
    let mut failed = 0;
    for call in calls {
        if let Err(err) = call.await.expect("a LEAVE task") {
            // not sent, or sent and no reply: never any other failure
            assert!(
                matches!(
                    err.code(),
                    meetingd::error::Code::Unavailable | meetingd::error::Code::InDoubt
                ),
                "{err}"
            );
            failed += 1;
        }
    }
    eprintln!("40 LEAVEs during a migration: {failed} unavailable or in doubt");
    cluster.finish_migration(slot, to);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.user_get(11).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the store serves again after the migration"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.owner(&keys.schedule(meeting)), to);
    assert_eq!(store.check().await.expect("check"), Vec::<String>::new());
}

/// The same calls while the slot moves to a master that joined by a bare
/// CLUSTER MEET after the store connected: a node the store's cluster
/// client has never heard of, and without the library until the store,
/// told `Function not found` by it, loads it there.
/// A master that joins by a bare CLUSTER MEET gets the library at the
/// next tick, before any slot or call reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_loads_the_library_on_a_master_that_joined() {
    let mut cluster = Cluster::start(3);
    let store = cluster.store(ManualClock::new(t0())).await;
    let joined = cluster.add_bare_master();
    let listed = || cluster.cli(joined, &["FUNCTION", "LIST", "LIBRARYNAME", "meetingd"]);
    assert!(
        !listed().contains("meetingd"),
        "none copied by CLUSTER MEET"
    );
    store.tick(t0()).await.expect("tick");
    assert!(listed().contains("meetingd"), "loaded at the tick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_during_a_slot_migration_to_a_master_joined_by_cluster_meet() {
    let mut cluster = Cluster::start(3);
    let store = cluster.store(ManualClock::new(t0())).await;
    let to = cluster.add_bare_master();
    assert!(
        !cluster
            .cli(to, &["FUNCTION", "LIST", "LIBRARYNAME", "meetingd"])
            .contains("meetingd"),
        "a bare CLUSTER MEET copies no functions"
    );
    calls_during_a_migration(&cluster, &store, to).await;
    assert!(
        cluster
            .cli(to, &["FUNCTION", "LIST", "LIBRARYNAME", "meetingd"])
            .contains("meetingd"),
        "the store loaded the library on the new master"
    );
}

/// A master dies (kill -9, no replica) under a daemon. The users it held
/// are dropped from the user cache (their tracking died with it; a JOIN of
/// one gets `unavailable`), but the users of the healthy masters stay
/// cached and tracked: JOINs and LEAVEs of theirs on a meeting of a
/// healthy master go on throughout, without reading the user again (no
/// CLIENT CACHING on their master), and a change to one is still seen,
/// made by the daemon or by redis-cli behind its back. JOINs of a meeting
/// of the dead master fail meanwhile, and redis-rs' storm of "Failed to
/// connect" warnings they set off is held back to its first line.
#[test]
fn a_dead_master_stalls_only_the_users_it_holds() {
    let mut cluster = Cluster::start(3);
    for port in cluster.ports() {
        // the other masters serve on while one is down
        let set = cluster.cli(
            *port,
            &["CONFIG", "SET", "cluster-require-full-coverage", "no"],
        );
        assert_eq!(set.trim(), "OK", "{set}");
    }
    let keys = meetingd::store::Keys::new(meetingd::store::DEFAULT_PARTITIONS);
    let user_key = meetingd::store::Keys::user;
    let victim = cluster.owner(&user_key(1));
    // users whose hash and whose listing index (meetingd:{p<u mod P>}:users,
    // which USER SET writes first) both live on healthy masters
    let healthy: Vec<u64> = (2..100)
        .filter(|u| {
            cluster.owner(&user_key(*u)) != victim && cluster.owner(&keys.user_index(*u)) != victim
        })
        .take(2)
        .collect();
    let (a, b) = (healthy[0], healthy[1]);
    let m = (1..100)
        .find(|m| cluster.owner(&keys.schedule(*m)) != victim)
        .expect("a meeting on a healthy master");
    let a_master = cluster.owner(&user_key(a));
    // and one on the master that dies
    let lost = (1..100)
        .find(|m| cluster.owner(&keys.schedule(*m)) == victim)
        .expect("a meeting on the master that dies");

    let daemon = Daemon::start_on_cluster(&cluster.urls(), &[]);
    let mut c = daemon.client();
    for u in [1, a, b] {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@example.com"
        ));
    }
    c.ok(&format!(
        "MEETING SET {m} title Private description d public false"
    ));
    c.ok(&format!(
        "AUDIENCE ADD {m} u1@example.com u{a}@example.com u{b}@example.com"
    ));
    c.ok(&format!("INSTANCE SET {m} 1 from {} to {}", at(-5), at(60)));
    c.ok(&format!(
        "MEETING SET {lost} title Lost description d public true"
    ));
    c.ok(&format!(
        "INSTANCE SET {lost} 1 from {} to {}",
        at(-5),
        at(60)
    ));
    c.ok("TICK");
    // every user read once: cached, and tracked on their master
    for u in [1, a, b] {
        c.ok(&format!("JOIN {u} {m}"));
        c.ok(&format!("LEAVE {u} {m}"));
    }

    cluster.kill(victim);
    // the daemon hears of it: user 1 is dropped, and cannot be read
    wait_until(
        "user 1 dropped with its master",
        Duration::from_secs(10),
        || {
            let reply = c.request(&format!("JOIN 1 {m}"));
            if reply["ok"] == true {
                c.ok(&format!("LEAVE 1 {m}"));
                return false;
            }
            assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
            true
        },
    );
    let reads_before = cluster.calls_of(a_master, "client|caching");
    // meanwhile another client asks for a meeting of the dead master: each
    // is refused, and holds nothing else up
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = {
        let stop = stop.clone();
        let mut other = daemon.client();
        std::thread::spawn(move || {
            let mut refused = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let reply = other.request(&format!("JOIN {a} {lost}"));
                assert_eq!(reply["ok"], false, "JOIN {a} {lost}: {reply}");
                refused += 1;
            }
            refused
        })
    };
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(3) || rounds < 20 {
        for line in [format!("JOIN {a} {m}"), format!("LEAVE {a} {m}")] {
            let reply = c.request(&line);
            assert_eq!(
                reply["ok"], true,
                "{line} while another master is down (round {rounds}): {reply}"
            );
        }
        rounds += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = refused.join().expect("the other client");
    assert!(refused > 0, "the dead master's meeting was asked for");
    assert_eq!(
        cluster.calls_of(a_master, "client|caching"),
        reads_before,
        "user {a} was served from the cache, not read again"
    );

    // changed by the daemon: forgotten at once
    c.ok(&format!(
        "USER SET {b} name U{b} age 30 gender x email gone@example.com"
    ));
    assert_eq!(c.error_code(&format!("JOIN {b} {m}")), "not_allowed");
    // changed behind its back: Redis tells the tracking link that lived
    let hset = cluster.cli(
        a_master,
        &["HSET", &user_key(a), "email", "gone@example.com"],
    );
    assert_eq!(hset.trim(), "0", "{hset}");
    wait_until(
        "the daemon hears that user a changed",
        Duration::from_secs(10),
        || {
            let reply = c.request(&format!("JOIN {a} {m}"));
            if reply["ok"] == true {
                c.ok(&format!("LEAVE {a} {m}"));
                return false;
            }
            assert_eq!(reply["error"]["code"], "not_allowed", "{reply}");
            true
        },
    );
    assert_eq!(c.error_code(&format!("JOIN 1 {m}")), "unavailable");

    let log = daemon.log();
    let storm = log
        .lines()
        .filter(|l| l.contains("Failed to connect") && !l.contains("held back"))
        .count();
    eprintln!(
        "{rounds} rounds during the outage, {refused} JOINs of the dead master's meeting refused; {storm} 'Failed to connect' lines logged"
    );
    assert!(storm <= 2, "the warnings are held back: {log}");
}

/// The master serving a watched instance fails over to its replica
/// (CLUSTER FAILOVER) while a poster keeps posting to it: the watcher gets
/// every acknowledged message once, in order, the ones around the failover
/// included. A post that fails is retried with its key, so each is stored
/// once.
#[test]
fn a_watch_goes_on_through_a_failover_without_loss() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let mut cluster = Cluster::start(3);
    let daemon = Daemon::start_on_cluster(&cluster.urls(), &[]);
    let mut actor = daemon.client();
    crate::watch::active_meetings(&mut actor, 1);
    actor.ok("JOIN 1 1");
    let master = cluster.owner("meetingd:{p1}:meeting:1");
    let replica = cluster.add_replica(master);
    let mut watcher = daemon.client();
    watcher.ok("WATCH 1");

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let poster = {
        let socket = daemon.socket().to_path_buf();
        let (stop, count) = (stop.clone(), count.clone());
        std::thread::spawn(move || {
            let mut c = crate::harness::Client::connect(&socket).expect("connect");
            let mut ids: Vec<String> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let deadline = Instant::now() + Duration::from_secs(20);
                let id = loop {
                    let reply = c.request(&format!("POST 1 1 \"post {n}\" ID k{n}"));
                    if reply["ok"] == true {
                        break reply["result"]["id"].as_str().expect("an id").to_string();
                    }
                    assert!(
                        Instant::now() < deadline,
                        "posts never got through: {reply}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                };
                if ids.last() != Some(&id) {
                    ids.push(id);
                }
                n += 1;
                count.store(ids.len(), Ordering::SeqCst);
            }
            ids
        })
    };
    wait_until("posts before the failover", Duration::from_secs(20), || {
        count.load(Ordering::SeqCst) >= 20
    });
    cluster.fail_over_to(replica);
    let at_failover = count.load(Ordering::SeqCst);
    wait_until("posts after the failover", Duration::from_secs(30), || {
        count.load(Ordering::SeqCst) >= at_failover + 20
    });
    stop.store(true, Ordering::SeqCst);
    let mut posted = poster.join().expect("the poster");
    posted.push(
        actor.ok("POST 1 1 last")["id"]
            .as_str()
            .expect("an id")
            .to_string(),
    );
    let seen: Vec<String> = crate::watch::event_ids(&mut watcher, posted.len());
    assert_eq!(seen, posted);
    assert_eq!(cluster.owner("meetingd:{p1}:meeting:1"), replica);
}

/// ACTIVE on a cluster from the partitions' kept answers: a JOIN made
/// through another store shows at once; and when the slot of a partition
/// whose (empty) answer is kept moves to another master, a window made
/// there afterwards shows too (the barrier finds the old master no longer
/// serves the partition, so the kept answer is dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_from_kept_answers_follows_writes_and_moved_slots() {
    let cluster = Cluster::start(3);
    let store = cluster.store(ManualClock::new(t0() + MIN)).await;
    let other = cluster.store(ManualClock::new(t0() + MIN)).await;
    users(&store, 1..=2).await;
    for m in [1, 2, 3] {
        public_meeting(&store, m).await;
        store
            .instance_set(InstanceId::new(m, 1), t0(), t0() + 60 * MIN)
            .await
            .expect("instance");
    }
    let listed = |rows: Vec<meetingd::store::ActiveInstance>| -> Vec<(u64, u64)> {
        rows.iter()
            .map(|r| (r.instance.id.meeting, r.participants))
            .collect()
    };
    assert_eq!(
        listed(store.active().await.expect("active")),
        [(1, 0), (2, 0), (3, 0)]
    );
    other.join(1, InstanceRef::Current(2)).await.expect("join");
    assert_eq!(
        listed(store.active().await.expect("active")),
        [(1, 0), (2, 1), (3, 0)]
    );

    // partition 10 holds nothing: its answer is kept on its master; the
    // slot moves (no key to migrate), and a window is made in it
    let empty = 10u64;
    let (slot, to) = cluster.migrate_slot_of(&meetingd::store::Keys::due(empty));
    cluster.finish_migration(slot, to);
    // the other store learns of the move by its MOVED reply
    let made = async {
        for _ in 0..50 {
            public_meeting(&other, empty).await;
            if other
                .instance_set(InstanceId::new(empty, 1), t0(), t0() + 60 * MIN)
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert!(made.await, "the window is made on the new master");
    let mut seen = Vec::new();
    for _ in 0..50 {
        match store.active().await {
            Ok(rows) => {
                seen = listed(rows);
                break;
            }
            // the slot map is read again meanwhile
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(seen, [(1, 0), (2, 1), (3, 0), (empty, 0)]);
}
