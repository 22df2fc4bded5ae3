//! Redis Cluster: a local 3-master cluster on loopback ports, started and
//! stopped by the test. The store and the daemon run on it unchanged (every
//! key of a call shares one hash tag); the library is loaded on every
//! master and loaded again where a master lost it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meetingd::clock::ManualClock;
use meetingd::store::{EventKind, InstanceId, InstanceRef, Store, StoreOptions};

use crate::harness::{Client, Daemon, MIN, T0, public_meeting, users};

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
        let dir = tempfile::tempdir().expect("dir");
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..masters {
            let port = free_port();
            let node_dir: PathBuf = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--enable-debug-command",
                    "yes",
                ])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            nodes.push(child);
            ports.push(port);
        }
        let cluster = Cluster {
            nodes,
            ports,
            _dir: dir,
        };
        for port in &cluster.ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while redis_cli(&["-p", &port.to_string(), "PING"]).trim() != "PONG" {
                assert!(Instant::now() < deadline, "node {port} starts");
                std::thread::sleep(Duration::from_millis(20));
            }
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
            let deadline = Instant::now() + Duration::from_secs(20);
            while !redis_cli(&["-p", &port.to_string(), "CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < deadline, "the cluster forms");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
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
        let out = Command::new(env!("CARGO_BIN_EXE_meetingd"))
            .arg("check")
            .arg("--redis-cluster")
            .arg(self.seed_url())
            .output()
            .expect("meetingd check runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
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
    let clock = ManualClock::new(T0);
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
            .instance_set(InstanceId::new(m, 1), T0, T0 + 10 * MIN)
            .await
            .expect("instance");
    }
    let report = store.tick(T0).await.expect("tick over every partition");
    assert_eq!(report.activated.len(), 32);
    for m in 1..=32 {
        for u in 1..=4 {
            store.join(u, InstanceRef::Current(m)).await.expect("join");
        }
        store
            .post(1, InstanceRef::Current(m), "hello")
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
            .users_get(&[1, 2, 3, 99])
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
    clock.set(T0 + 10 * MIN);
    let report = store.tick(T0 + 10 * MIN).await.expect("the end");
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
    let store = cluster.store(ManualClock::new(T0)).await;
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
        &["ZADD", &present, &T0.to_string(), "9"],
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

/// How 10,000 meetings spread over the masters (16 partitions): every
/// master holds some. `cargo test --test it cluster::spread -- --nocapture`
/// prints the keys per master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_of_10000_meetings_over_3_masters() {
    let cluster = Cluster::start(3);
    let store = cluster.store(ManualClock::new(T0)).await;
    let records = (1..=10_000u64).flat_map(|m| {
        [
            meetingd::store::Load::Meeting(crate::harness::meeting_fields(m)),
            meetingd::store::Load::Instance {
                id: InstanceId::new(m, 1),
                from: T0 + MIN,
                to: T0 + 2 * MIN,
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
    assert_eq!(
        sizes.iter().sum::<u64>(),
        10_000 * 3 + 16,
        "meeting, orders, schedule per meeting, and 16 due indexes"
    );
}

#[test]
fn the_daemon_serves_on_a_cluster() {
    let cluster = Cluster::start(3);
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("meetingd.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_meetingd"));
    command
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--redis-cluster")
        .arg(cluster.urls().join(","));
    let daemon = Daemon::spawn_command(command, &socket, &[], tempfile::tempdir().expect("dir"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Client::connect(&socket).map_or(true, |mut c| c.try_request("PING").is_none()) {
        assert!(
            Instant::now() < deadline,
            "the daemon serves: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::socket::seed_scenario(&mut Client::connect(&socket).expect("connect"));
}
