//! The shared test harness: a real `redis-server` on a Unix socket in a
//! temporary directory, stopped when the handle drops; and the ways tests
//! talk to it (the store, raw FCALL as redis-cli sends it, redis-cli
//! itself).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use meetingd::clock::ManualClock;
use meetingd::store::{Store, StoreOptions};
use redis::Value;
use redis::aio::MultiplexedConnection;

/// A redis-server of the test's own.
pub struct Redis {
    child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
    /// The extra configuration it was started with (kept for restarts).
    extra: Vec<String>,
}

impl Redis {
    /// Start a redis-server with no persistence.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Start a redis-server with extra configuration (`--name value`...).
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn_redis(&socket, dir.path(), &extra);
        let redis = Redis {
            child,
            socket,
            dir,
            extra,
        };
        redis.wait_ready();
        redis
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {}", self.socket.display());
    }

    /// `redis+unix://<socket>`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// The Unix socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The redis-server's process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's directory.
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A plain multiplexed connection (RESP2, as redis-cli speaks).
    pub async fn conn(&self) -> MultiplexedConnection {
        // no response timeout: tests load data in big pipelines
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        redis::Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to the test redis")
    }

    /// A store on this Redis with a hand-set clock at `now`.
    pub async fn store(&self, now: i64) -> (Store, ManualClock) {
        self.store_with(now, |_| {}).await
    }

    /// A store with options changed by `adjust`.
    pub async fn store_with(
        &self,
        now: i64,
        adjust: impl FnOnce(&mut StoreOptions),
    ) -> (Store, ManualClock) {
        let clock = ManualClock::new(now);
        let mut options = StoreOptions::new(self.url());
        adjust(&mut options);
        (self.store_on(clock.clone(), options).await, clock)
    }

    /// A store of its own (its own connection) on a given clock.
    pub async fn store_on(&self, clock: ManualClock, options: StoreOptions) -> Store {
        Store::connect_with_clock(options, Arc::new(clock))
            .await
            .expect("store connects")
    }

    /// Default store options for this Redis.
    #[allow(dead_code)]
    pub fn options(&self) -> StoreOptions {
        StoreOptions::new(self.url())
    }

    /// A digest of the whole dataset: equal before and after means nothing
    /// was written.
    pub async fn digest(&self) -> String {
        let mut conn = self.conn().await;
        redis::cmd("DEBUG")
            .arg("DIGEST")
            .query_async(&mut conn)
            .await
            .expect("DEBUG DIGEST")
    }

    /// Run redis-cli against this server; its standard output.
    #[allow(dead_code)]
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("redis-cli must be installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// What one run of meetingctl did.
#[allow(dead_code)]
pub struct Run {
    /// Its exit status.
    pub status: i32,
    /// What it printed on standard output.
    pub stdout: String,
    /// What it printed on standard error.
    pub stderr: String,
}

/// Run meetingctl on `socket` with `args` (no socket from the environment,
/// nothing on standard input).
#[allow(dead_code)]
pub fn meetingctl(socket: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_meetingctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("MEETINGD_SOCKET__PATH")
        .stdin(Stdio::null())
        .output()
        .expect("meetingctl runs");
    Run {
        status: out
            .status
            .code()
            .expect("meetingctl exits by itself (no signal)"),
        stdout: String::from_utf8(out.stdout).expect("meetingctl prints UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("meetingctl's errors are UTF-8"),
    }
}

/// `meetingd check` with `args`: its exit status and output (stdout, then
/// stderr).
pub fn meetingd_check(args: &[&str]) -> (i32, String) {
    meetingd_run("check", args)
}

/// `meetingd <subcommand>` with `args`: its exit status and output
/// (stdout, then stderr).
pub fn meetingd_run(subcommand: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .arg(subcommand)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("meetingd {subcommand} runs: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

impl Redis {
    /// `meetingd check` on this Redis: its exit status and output.
    #[allow(dead_code)]
    pub fn check(&self) -> (i32, String) {
        meetingd_check(&["--redis", &self.url()])
    }

    /// Assert that `meetingd check` finds nothing wrong.
    #[allow(dead_code)]
    pub fn assert_consistent(&self) {
        let (code, out) = self.check();
        assert_eq!(code, 0, "meetingd check: {out}");
    }
}

impl Redis {
    /// Keep the server busy (DEBUG SLEEP) for `seconds` from another
    /// thread: requests queue up or time out meanwhile.
    #[allow(dead_code)]
    /// Returns once Redis is asleep (on a busy machine the sleeper's
    /// command can take a while to arrive).
    pub fn sleep_in_background(&self, seconds: f64) -> std::thread::JoinHandle<()> {
        let url = self.url();
        let sleeper_url = url.clone();
        let sleeper = std::thread::spawn(move || {
            let mut conn = redis::Client::open(sleeper_url)
                .expect("client")
                .get_connection()
                .expect("connect");
            let _: () = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(seconds)
                .query(&mut conn)
                .expect("DEBUG SLEEP");
        });
        wait_until_asleep(&url);
        sleeper
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// Stop the server (SIGKILL), keeping its directory and socket path.
    #[allow(dead_code)]
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Start a server again on the same socket and directory, with the
    /// same configuration (its data survives when that persists it).
    #[allow(dead_code)]
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(&self.socket, self.dir.path(), &self.extra);
        self.wait_ready();
    }
}

/// What every test redis-server runs with: no persistence unless a test
/// asks for it, and DEBUG allowed (DEBUG SLEEP, DEBUG DIGEST).
pub const TEST_REDIS_ARGS: [&str; 6] = [
    "--save",
    "",
    "--appendonly",
    "no",
    "--enable-debug-command",
    "yes",
];

fn spawn_redis(socket: &Path, dir: &Path, extra: &[String]) -> Child {
    Command::new("redis-server")
        .arg("--port")
        .arg("0")
        .arg("--unixsocket")
        .arg(socket)
        .arg("--unixsocketperm")
        .arg("700")
        .arg("--dir")
        .arg(dir)
        .args(TEST_REDIS_ARGS)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)")
}

/// A `meetingd serve` process of the test's own, on a socket in a temp dir,
/// killed when the handle drops.
#[allow(dead_code)]
pub struct Daemon {
    child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

/// Check until `check` holds; fail the test, naming `what`, after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `meetingd serve --socket <socket>`, then `args`.
pub fn serve_command(socket: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meetingd"));
    command.arg("serve").arg("--socket").arg(socket).args(args);
    command
}

#[allow(dead_code)]
impl Daemon {
    /// Start the daemon on `redis` with settings given as environment
    /// variables (`MEETINGD_SOCKET__MAX_CONNECTIONS`...); wait until it
    /// answers.
    pub fn start(redis: &Redis, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_serving(&["--redis", &redis.url()], env)
    }

    /// Start the daemon on a Redis Cluster (`--redis-cluster`, every node
    /// given); wait until it answers.
    pub fn start_on_cluster(urls: &[String], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_serving(&["--redis-cluster", &urls.join(",")], env)
    }

    /// Start the daemon on the Redis at `url`; wait until it answers.
    pub fn start_on_url(url: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_serving(&["--redis", url], env)
    }

    /// Start the daemon with no Redis configured, so on its embedded
    /// redis-server, whose data directory is `data_dir`; wait until it
    /// answers.
    pub fn start_embedded(data_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let data_dir = data_dir.display().to_string();
        let mut env = env.to_vec();
        env.push(("MEETINGD_EMBEDDED__DATA_DIR", &data_dir));
        Daemon::start_serving(&[], &env)
    }

    /// Start `meetingd serve` on a socket in a new directory, with `args`
    /// saying where Redis is; wait until it answers.
    fn start_serving(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("meetingd.sock");
        let daemon = Daemon::spawn_command(serve_command(&socket, args), &socket, env, dir);
        daemon.wait_ready();
        daemon
    }

    /// Start the daemon on `redis` listening on `socket` (a path the test
    /// keeps, so that a second daemon can serve the same path after the
    /// first); wait until it answers.
    pub fn start_on_socket(redis: &Redis, socket: &Path, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let daemon = Daemon::spawn(redis, socket, env, dir);
        daemon.wait_ready();
        daemon
    }

    /// Start a daemon process without waiting for it.
    pub fn spawn(
        redis: &Redis,
        socket: &Path,
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
    ) -> Daemon {
        Daemon::spawn_command(
            serve_command(socket, &["--redis", &redis.url()]),
            socket,
            env,
            dir,
        )
    }

    /// Start `command` (a `meetingd serve ...`) with a clean environment
    /// plus `env`, logging into the directory.
    pub fn spawn_command(
        mut command: Command,
        socket: &Path,
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
    ) -> Daemon {
        let log = std::fs::File::create(dir.path().join("meetingd.log")).expect("log file");
        for (key, _) in std::env::vars() {
            if key.starts_with("MEETINGD_") || key == "RUST_LOG" || key == "NOTIFY_SOCKET" {
                command.env_remove(key);
            }
        }
        // the daemon's log filter for a debugging run (RUST_LOG itself is
        // the test binary's)
        if let Ok(filter) = std::env::var("MEETINGD_TEST_LOG") {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meetingd starts");
        Daemon {
            child,
            socket: socket.to_path_buf(),
            dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send the daemon `signal` (libc::SIGTERM...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to a child process of the test by its pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal delivered");
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut client) = Client::connect(&self.socket) {
                if client.request("PING")["result"] == "PONG" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "meetingd did not answer on {}: {}",
            self.socket.display(),
            self.log()
        );
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's directory (socket and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the daemon logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("meetingd.log")).unwrap_or_default()
    }

    /// A new client connection.
    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect to meetingd")
    }

    /// Wait for the process to end by itself; its exit status.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("MEETINGD_TEST_LOG").is_some() {
            // what the daemon said, for the failing test's output (its
            // last 200 lines; MEETINGD_TEST_LOG=meetingd=debug says more,
            // and prints it for a passing test too)
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(200);
            eprintln!("--- the daemon's log ---\n{}", lines[from..].join("\n"));
        }
    }
}

/// A blocking client of the control socket speaking the line protocol.
#[allow(dead_code)]
pub struct Client {
    stream: std::os::unix::net::UnixStream,
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
}

#[allow(dead_code)]
impl Client {
    /// Connect (with a 10 s read timeout, so a hung daemon fails the test).
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let reader = std::io::BufReader::new(stream.try_clone()?);
        Ok(Client { stream, reader })
    }

    /// How long a read waits before the test fails (10 s from connect).
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set the read timeout");
    }

    /// A second handle on the connection, for writing from another thread.
    pub fn try_clone_writer(&self) -> std::os::unix::net::UnixStream {
        self.stream.try_clone().expect("clone the connection")
    }

    /// Send raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("send to meetingd");
    }

    /// Read one reply line as JSON; `None` when the daemon closed the
    /// connection.
    pub fn reply(&mut self) -> Option<serde_json::Value> {
        use std::io::BufRead;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                let reply = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"));
                assert_reply_schema(None, &reply);
                Some(reply)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    /// Send one request line and read its reply; `None` if the connection
    /// fails (for probing a daemon that may close it).
    pub fn try_request(&mut self, line: &str) -> Option<serde_json::Value> {
        use std::io::{BufRead, Write};
        self.stream.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        match self.reader.read_line(&mut reply) {
            Ok(n) if n > 0 => serde_json::from_str(&reply).ok(),
            _ => None,
        }
    }

    /// Send one request line, read its reply (held to the schema of its
    /// command, docs/replies.schema.json).
    pub fn request(&mut self, line: &str) -> serde_json::Value {
        self.send(format!("{line}\n").as_bytes());
        let reply = self
            .reply()
            .unwrap_or_else(|| panic!("the daemon closed the connection after {line:?}"));
        let command = meetingd::protocol::parse(line.as_bytes()).map(|r| r.name());
        assert_reply_schema(command.ok(), &reply);
        reply
    }

    /// The error code of a request that must fail.
    pub fn error_code(&mut self, line: &str) -> String {
        let reply = self.request(line);
        assert_eq!(reply["ok"], false, "{line:?} should fail: {reply}");
        reply["error"]["code"].as_str().unwrap_or("?").to_string()
    }

    /// The result of a request that must succeed.
    pub fn ok(&mut self, line: &str) -> serde_json::Value {
        let reply = self.request(line);
        assert_eq!(reply["ok"], true, "{line:?} should succeed: {reply}");
        reply["result"].clone()
    }
}

/// FCALL exactly as redis-cli sends it: every argument a string.
pub async fn fcall(
    conn: &mut MultiplexedConnection,
    function: &str,
    keys: &[&str],
    args: &[&str],
) -> redis::RedisResult<Value> {
    redis::cmd("FCALL")
        .arg(function)
        .arg(keys.len())
        .arg(keys)
        .arg(args)
        .query_async(conn)
        .await
}

/// The error code of a failed call (`NOT_FOUND`), panicking on success.
pub fn code_of(result: redis::RedisResult<Value>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err.code().unwrap_or("?").to_string(),
    }
}

/// A flat field/value reply as (field, value-as-text) pairs.
pub fn record(value: &Value) -> Vec<(String, Value)> {
    let Value::Array(items) = value else {
        panic!("expected an array, got {value:?}")
    };
    items
        .chunks(2)
        .map(|pair| (text(&pair[0]), pair[1].clone()))
        .collect()
}

/// A field of a flat reply.
pub fn field(value: &Value, name: &str) -> Value {
    record(value)
        .into_iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name} in {value:?}"))
}

/// A string-ish value as text.
pub fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Okay => "OK".into(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Public meeting `id`, titled `m<id>`.
#[allow(dead_code)]
pub fn meeting_fields(id: u64) -> meetingd::store::Meeting {
    meetingd::store::Meeting {
        id,
        title: format!("m{id}"),
        description: String::new(),
        public: true,
    }
}

/// Create public meeting `id`.
#[allow(dead_code)]
pub async fn public_meeting(store: &Store, id: u64) {
    store
        .meeting_set(&meeting_fields(id))
        .await
        .expect("meeting");
}

/// An instance's state.
#[allow(dead_code)]
pub async fn state(
    store: &Store,
    instance: meetingd::store::InstanceId,
) -> meetingd::store::InstanceState {
    store.instance(instance).await.expect("instance").state
}

/// An instance's state as stored (its schedule entry), whatever the clock
/// says: what a tick or a call has applied. Reads report the clock's view
/// (see [`state`]); a test of the tick itself looks here.
#[allow(dead_code)]
pub async fn stored_state(
    redis: &Redis,
    store: &Store,
    instance: meetingd::store::InstanceId,
) -> meetingd::store::InstanceState {
    let mut conn = redis.conn().await;
    let packed: String = redis::cmd("HGET")
        .arg(store.keys().schedule(instance.meeting))
        .arg(instance.order)
        .query_async(&mut conn)
        .await
        .expect("schedule entry");
    packed
        .rsplit('|')
        .next()
        .and_then(|state| state.parse().ok())
        .expect("a state")
}

/// Create users `ids`, named `u<id>`, e-mail `u<id>@example.com`.
#[allow(dead_code)]
pub async fn users(store: &Store, ids: impl IntoIterator<Item = u64>) {
    for id in ids {
        let user = meetingd::store::User {
            id,
            name: format!("u{id}"),
            age: 20,
            gender: "-".into(),
            email: format!("u{id}@example.com"),
        };
        store.user_set(&user).await.expect("user");
    }
}

/// Public meetings 1..=meetings, each with instance 1 over [t0, t0+10min)
/// and instance 2 over [t0+10min, t0+20min); a tick at t0; users
/// 1..=people (already created) join each meeting's first instance.
#[allow(dead_code)]
pub async fn back_to_back(store: &Store, meetings: u64, people: u64) {
    for m in 1..=meetings {
        public_meeting(store, m).await;
        let first = meetingd::store::InstanceId::new(m, 1);
        let second = meetingd::store::InstanceId::new(m, 2);
        store
            .instance_set(first, t0(), t0() + 10 * MIN)
            .await
            .expect("first instance");
        store
            .instance_set(second, t0() + 10 * MIN, t0() + 20 * MIN)
            .await
            .expect("second instance");
    }
    store.tick(t0()).await.expect("first tick");
    for m in 1..=meetings {
        for u in 1..=people {
            store
                .join(u, meetingd::store::InstanceRef::Current(m))
                .await
                .expect("join");
        }
    }
}

/// Load meetings 1..=count through the store, each with one instance a
/// minute long: at t0 when `due(meeting)`, else a day later.
#[allow(dead_code)]
pub async fn one_instance_meetings(store: &Store, count: u64, due: impl Fn(u64) -> bool) {
    let records = (1..=count).flat_map(|m| {
        let from = if due(m) { t0() } else { t0() + 24 * 60 * MIN };
        [
            meetingd::store::Load::Meeting(meeting_fields(m)),
            meetingd::store::Load::Instance {
                id: meetingd::store::InstanceId::new(m, 1),
                from,
                to: from + MIN,
            },
        ]
    });
    let loaded = store.load(records).await.expect("load");
    assert_eq!(loaded.refused, 0, "{loaded:?}");
}

/// The tests' usual "now", in ms: the start of the minute (UTC) in which
/// the test process started, by the system clock. Read once, so every test
/// of a run sees the same instant; whole minutes.
///
/// It follows the real clock because Redis does: a retention becomes a
/// PEXPIREAT, which Redis measures against its own clock, so a fixed date
/// would make keys expire (or never expire) depending on the day the
/// suite runs; and a read that leaves out `now` takes Redis' clock, by
/// which an instance runs or not. A minute, not an hour: a window of an
/// hour from t0 then still runs, by Redis' clock, for the whole run of the
/// suite, whenever in the hour it starts.
pub fn t0() -> i64 {
    static T0: LazyLock<i64> = LazyLock::new(|| {
        let now = chrono::Utc::now().timestamp_millis();
        now - now.rem_euclid(MIN)
    });
    *T0
}

/// One minute in ms.
pub const MIN: i64 = 60_000;

/// A TCP port of 127.0.0.1 that was free when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An RFC 3339 time (UTC, whole seconds) `minutes` from now by the system
/// clock, as requests take it: for tests that talk to a daemon, whose
/// clock is the system's.
pub fn at(minutes: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(minutes))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A relay between a daemon and Redis (a Unix socket of its own, a thread
/// per direction and connection) that can hold Redis' replies back until
/// the daemon has sent given strings: what the daemon sends while no reply
/// comes is what it sends without waiting for one.
pub struct HoldingRelay {
    socket: PathBuf,
    shared: Arc<(std::sync::Mutex<Hold>, std::sync::Condvar)>,
    _dir: tempfile::TempDir,
}

/// What the relay holds for.
#[derive(Default)]
struct Hold {
    /// Hold replies until every one of these has been sent to Redis.
    wanted: Vec<Vec<u8>>,
    /// What was sent to Redis since the hold began.
    sent: Vec<u8>,
    /// Hold no longer than this.
    until: Option<Instant>,
    /// A hold ended because its time ran out.
    timed_out: bool,
}

impl Hold {
    fn holding(&mut self) -> bool {
        let Some(until) = self.until else {
            return false;
        };
        if self
            .wanted
            .iter()
            .all(|w| self.sent.windows(w.len()).any(|s| s == w.as_slice()))
        {
            self.until = None;
            return false;
        }
        if Instant::now() >= until {
            self.until = None;
            self.timed_out = true;
            return false;
        }
        true
    }
}

#[allow(dead_code)]
impl HoldingRelay {
    /// Relay to `redis`.
    pub fn start(redis: &Redis) -> HoldingRelay {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("relay.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind the relay");
        let shared = Arc::new((
            std::sync::Mutex::new(Hold::default()),
            std::sync::Condvar::new(),
        ));
        let upstream = redis.socket.clone();
        let state = shared.clone();
        std::thread::spawn(move || {
            for daemon_side in listener.incoming() {
                let Ok(daemon_side) = daemon_side else { return };
                let Ok(redis_side) = std::os::unix::net::UnixStream::connect(&upstream) else {
                    return;
                };
                let (Ok(daemon_in), Ok(redis_in)) =
                    (daemon_side.try_clone(), redis_side.try_clone())
                else {
                    return;
                };
                let sending = state.clone();
                std::thread::spawn(move || {
                    relay_bytes(daemon_in, redis_side, |bytes| {
                        let (hold, changed) = &*sending;
                        let mut hold = lock_hold(hold);
                        if hold.until.is_some() {
                            hold.sent.extend_from_slice(bytes);
                        }
                        changed.notify_all();
                    })
                });
                let replying = state.clone();
                std::thread::spawn(move || {
                    relay_bytes(redis_in, daemon_side, |_| {
                        let (hold, changed) = &*replying;
                        let mut hold = lock_hold(hold);
                        while hold.holding() {
                            hold = changed
                                .wait_timeout(hold, Duration::from_millis(50))
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .0;
                        }
                    })
                });
            }
        });
        HoldingRelay {
            socket,
            shared,
            _dir: dir,
        }
    }

    /// Its URL, for `meetingd serve --redis`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// From now, hold Redis' replies until each of `wanted` was sent to
    /// Redis, or for at most `longest`.
    pub fn hold(&self, wanted: &[&str], longest: Duration) {
        *lock_hold(&self.shared.0) = Hold {
            wanted: wanted.iter().map(|w| w.as_bytes().to_vec()).collect(),
            sent: Vec::new(),
            until: Some(Instant::now() + longest),
            timed_out: false,
        };
    }

    /// What was sent to Redis since the last hold began (for messages).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&lock_hold(&self.shared.0).sent).into_owned()
    }

    /// Whether the last hold ran out of time (what it waited for was not
    /// all sent while replies were held).
    pub fn timed_out(&self) -> bool {
        lock_hold(&self.shared.0).timed_out
    }
}

/// The relay's hold, whatever a panicking thread left it in.
fn lock_hold(hold: &std::sync::Mutex<Hold>) -> std::sync::MutexGuard<'_, Hold> {
    hold.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copy `from` to `to`, calling `each` with every chunk: before writing
/// it when `each` may wait, after when it records. Ends with either side.
fn relay_bytes(
    mut from: std::os::unix::net::UnixStream,
    mut to: std::os::unix::net::UnixStream,
    each: impl Fn(&[u8]),
) {
    use std::io::{Read, Write};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        each(&buffer[..n]);
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

#[allow(dead_code)]
impl Client {
    /// A client on a connection made already (its credentials are those of
    /// whoever connected it).
    pub fn from_stream(stream: std::os::unix::net::UnixStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set the read timeout");
        let reader = std::io::BufReader::new(stream.try_clone().expect("clone the connection"));
        Client { stream, reader }
    }
}

/// Most connections [`connect_as`] makes at once.
pub const CONNECT_AS_MAX: usize = 16;

/// `count` connections to the socket at `path` made by a process running
/// as `uid` (and gid `uid`), so the daemon reads those credentials
/// (SO_PEERCRED keeps the connecting process'): a child sets its uid,
/// connects (in `pre_exec`, between fork and exec, where no allocation may
/// happen) and passes the sockets back over a socket pair (SCM_RIGHTS),
/// then execs /bin/true. Needs root; the socket and its directory must let
/// `uid` in. Connections are made in order, so the daemon accepts them in
/// that order.
#[allow(dead_code)]
pub fn connect_as(path: &Path, uid: u32, count: usize) -> Vec<Client> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    assert!(
        (1..=CONNECT_AS_MAX).contains(&count),
        "1..={CONNECT_AS_MAX}"
    );
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < address.sun_path.len(), "a short socket path");
    for (to, from) in address.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let theirs_fd = theirs.as_raw_fd();
    let mut command = Command::new("/bin/true");
    command.uid(uid).gid(uid);
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe system calls on memory of its own stack or
    // captured by value.
    unsafe {
        command.pre_exec(move || {
            let mut fds = [0 as libc::c_int; CONNECT_AS_MAX];
            for fd in fds.iter_mut().take(count) {
                *fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if *fd < 0
                    || libc::connect(
                        *fd,
                        (&address as *const libc::sockaddr_un).cast(),
                        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let data_len = std::mem::size_of::<libc::c_int>() * count;
            let mut control = [0u64; 32];
            let mut byte = [b'x'];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            let mut message: libc::msghdr = std::mem::zeroed();
            message.msg_iov = &mut iov;
            message.msg_iovlen = 1;
            message.msg_control = control.as_mut_ptr().cast();
            message.msg_controllen = libc::CMSG_SPACE(data_len as u32) as _;
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(header),
                data_len,
            );
            if libc::sendmsg(theirs_fd, &message, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("connecting as uid {uid}: {e}"));
    assert!(status.success(), "the child of uid {uid}: {status}");
    drop(theirs);
    let mut control = [0u64; 32];
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; the buffers it points at live on this
    // stack until recvmsg returns and the descriptors are read out.
    let fds: Vec<libc::c_int> = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = std::mem::size_of_val(&control) as _;
        let received = libc::recvmsg(ours.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC);
        assert!(received > 0, "the connections of uid {uid} come back");
        let header = libc::CMSG_FIRSTHDR(&message);
        assert!(
            !header.is_null() && (*header).cmsg_type == libc::SCM_RIGHTS,
            "descriptors passed"
        );
        let data_len = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
        let n = data_len / std::mem::size_of::<libc::c_int>();
        let mut fds = vec![0 as libc::c_int; n];
        std::ptr::copy_nonoverlapping(
            libc::CMSG_DATA(header),
            fds.as_mut_ptr().cast::<u8>(),
            data_len,
        );
        fds
    };
    assert_eq!(fds.len(), count, "every connection of uid {uid} comes back");
    fds.into_iter()
        // SAFETY: each descriptor was just received, open and ours alone.
        .map(|fd| Client::from_stream(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) }))
        .collect()
}

/// The definitions of docs/replies.schema.json, each compiled once: what
/// every reply line the suite reads is held to.
fn reply_schemas() -> &'static BTreeMap<String, jsonschema::Validator> {
    static SCHEMAS: OnceLock<BTreeMap<String, jsonschema::Validator>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/replies.schema.json");
        let text = std::fs::read_to_string(&path).expect("docs/replies.schema.json");
        let document: serde_json::Value =
            serde_json::from_str(&text).expect("docs/replies.schema.json is JSON");
        let names: Vec<String> = document["$defs"]
            .as_object()
            .expect("the schema has $defs")
            .keys()
            .cloned()
            .collect();
        names
            .into_iter()
            .map(|name| {
                let mut root = document.clone();
                root["$ref"] =
                    serde_json::Value::String(format!("#/$defs/{}", name.replace(' ', "%20")));
                let validator = jsonschema::validator_for(&root)
                    .unwrap_or_else(|e| panic!("the schema's {name:?} does not compile: {e}"));
                (name, validator)
            })
            .collect()
    })
}

/// Hold `value` to the schema's definition `name`; panic naming what is
/// wrong.
pub fn assert_schema(name: &str, value: &serde_json::Value) {
    let Some(validator) = reply_schemas().get(name) else {
        panic!("docs/replies.schema.json has no definition {name:?}");
    };
    let problems: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{name}: {value} does not fit docs/replies.schema.json:\n{}",
        problems.join("\n")
    );
}

/// Hold a reply line to the schema: an error, a result (of `command`'s
/// definition, when the request is known), a watched entry or a notice.
pub fn assert_reply_schema(command: Option<&str>, line: &serde_json::Value) {
    if line.get("ok") == Some(&serde_json::Value::Bool(true)) {
        assert_schema("ok", line);
        if let Some(command) = command {
            assert_schema(command, &line["result"]);
        }
    } else if line.get("ok").is_some() {
        assert_schema("error", line);
    } else if line.get("event").is_some() {
        assert_schema("watched", line);
    } else if line.get("dropped").is_some() {
        assert_schema("dropped", line);
    } else {
        assert_schema("closing", line);
    }
}

/// Every entry of a paged list (`MESSAGES`, `EVENTS`).
#[allow(dead_code)]
pub fn all_pages(c: &mut Client, command: &str, list: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let line = match &after {
            Some(id) => format!("{command} AFTER {id}"),
            None => command.to_string(),
        };
        let page = c.ok(&line);
        all.extend(page[list].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return all,
        }
    }
}

/// Commands Redis ran, by name, from `INFO commandstats`.
#[allow(dead_code)]
pub async fn commandstats(redis: &Redis) -> std::collections::BTreeMap<String, u64> {
    let mut conn = redis.conn().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// Run `command` to its end, as `Command::output` does, trying again while
/// the program is "text file busy" (ETXTBSY): a binary the test has just
/// copied can still be open for writing in a child that another test's
/// thread forked at that moment, until that child's exec closes it.
#[allow(dead_code)]
pub fn output_of(command: &mut Command) -> std::io::Result<std::process::Output> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match command.output() {
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Wait until the Redis at `url` stops answering a PING within 50 ms (it
/// runs a DEBUG SLEEP), for at most 10 s.
pub fn wait_until_asleep(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(mut conn) = redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(50)))
        else {
            return;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
        match redis::cmd("PING").query::<String>(&mut conn) {
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return,
        }
    }
    panic!("Redis never fell asleep");
}
