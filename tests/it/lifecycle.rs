//! The daemon's life, with the real binary started as a process: drain on
//! SIGTERM, reload on SIGHUP, the embedded Redis, bad configurations,
//! socket activation, systemd notifications.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Client, Daemon, Redis, at, wait_until};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn sigterm_answers_every_request_in_flight_then_exits_0() {
    let redis = Redis::start();
    let mut daemon = Daemon::start(&redis, &[]);
    let mut setup = daemon.client();
    for u in 1..=10 {
        setup.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@x"
        ));
    }
    drop(setup);
    // Redis busy for a while: the requests below queue up in the daemon
    let sleeper = redis.sleep_in_background(0.4);
    std::thread::sleep(Duration::from_millis(50));
    let mut clients: Vec<Client> = (0..10).map(|_| daemon.client()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let batch: String = (0..10).map(|_| format!("USER GET {}\n", i + 1)).collect();
        client.send(batch.as_bytes());
    }
    std::thread::sleep(Duration::from_millis(50));
    daemon.signal(libc::SIGTERM);
    for (i, client) in clients.iter_mut().enumerate() {
        for n in 0..10 {
            let reply = client
                .reply()
                .unwrap_or_else(|| panic!("connection {i}: reply {n} missing"));
            assert_eq!(
                reply["result"]["id"],
                i + 1,
                "connection {i} reply {n}: {reply}"
            );
        }
        assert!(client.reply().is_none(), "then the connection closes");
    }
    sleeper.join().expect("sleeper");
    let status = daemon
        .wait(Duration::from_secs(10))
        .expect("the daemon exits");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(!daemon.socket().exists(), "the socket file is removed");
    assert!(
        Client::connect(daemon.socket()).is_err(),
        "nobody listens any more"
    );
}

#[test]
fn sighup_changes_the_log_level_and_the_admins_while_serving() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("meetingd.toml");
    std::fs::write(
        &config,
        "[log]\nlevel = \"info\"\n[socket]\nmode = \"0666\"\n",
    )
    .expect("config");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let socket = dir.path().join("meetingd.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_meetingd"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--redis")
        .arg(redis.url());
    let log_dir = tempfile::tempdir().expect("dir");
    let daemon = Daemon::spawn_command(command, &socket, &[], log_dir);
    wait_until("the daemon serves", Duration::from_secs(20), || {
        Client::connect(&socket).is_ok_and(|mut c| c.try_request("PING").is_some())
    });
    let mut steady = daemon.client();
    assert_eq!(steady.ok("PING"), "PONG");
    assert!(
        !daemon.log().contains("latency_ms"),
        "no debug lines at info: {}",
        daemon.log()
    );
    let ctl = dir.path().join("meetingctl");
    std::fs::copy(env!("CARGO_BIN_EXE_meetingctl"), &ctl).expect("copy meetingctl");
    let tick_as_nobody = || {
        let out = crate::harness::output_of(
            Command::new(&ctl)
                .arg("--socket")
                .arg(&socket)
                .arg("tick")
                .uid(65534)
                .gid(65534),
        )
        .expect("meetingctl as nobody");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    if is_root() {
        let (code, err) = tick_as_nobody();
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("permission_denied"), "{err}");
    }

    std::fs::write(
        &config,
        "[log]\nlevel = \"debug\"\n[socket]\nmode = \"0666\"\n[admin]\nuids = [65534]\n[redis]\ntimeout_ms = 999\n",
    )
    .expect("new config");
    daemon.signal(libc::SIGHUP);
    wait_until("the reload", Duration::from_secs(10), || {
        daemon.log().contains("configuration reloaded")
    });
    assert_eq!(
        steady.ok("PING"),
        "PONG",
        "the open connection is served throughout"
    );
    assert_eq!(daemon.client().ok("PING"), "PONG");
    assert!(
        daemon.log().contains("redis.timeout_ms") && daemon.log().contains("ignored"),
        "what needs a restart is logged as ignored: {}",
        daemon.log()
    );
    wait_until("a debug line", Duration::from_secs(5), || {
        daemon.log().contains("latency_ms")
    });
    if is_root() {
        let (code, err) = tick_as_nobody();
        assert_eq!(
            code,
            Some(0),
            "uid 65534 is an admin after the reload: {err}"
        );
    } else {
        eprintln!("the admin half needs root (CI runs as root)");
    }
    // a bad file is refused and the running configuration stays
    std::fs::write(&config, "[log]\nlevel = 42x\n").expect("bad config");
    daemon.signal(libc::SIGHUP);
    wait_until("the refusal", Duration::from_secs(10), || {
        daemon.log().contains("reload refused")
    });
    // the line itself says why (journalctl shows the message, not fields)
    let log = daemon.log();
    let refusal = log
        .lines()
        .find(|line| line.contains("reload refused"))
        .unwrap_or_default();
    assert!(refusal.contains("not valid TOML"), "{refusal}");
    assert_eq!(steady.ok("PING"), "PONG");
}

/// `meetingd serve` with no Redis configured, its data in `data`.
fn embedded(data: &Path) -> Daemon {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("meetingd.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_meetingd"));
    command.arg("serve").arg("--socket").arg(&socket);
    let data_dir = data.display().to_string();
    let daemon = Daemon::spawn_command(
        command,
        &socket,
        &[("MEETINGD_EMBEDDED__DATA_DIR", &data_dir)],
        dir,
    );
    wait_until("the embedded daemon", Duration::from_secs(30), || {
        Client::connect(&socket).is_ok_and(|mut c| c.try_request("PING").is_some())
    });
    daemon
}

fn redis_pid(data: &Path) -> Option<i32> {
    std::fs::read_to_string(data.join("redis.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn the_embedded_redis_keeps_data_and_comes_back_after_kill_9() {
    let data = tempfile::tempdir().expect("data dir");
    let mut daemon = embedded(data.path());
    daemon
        .client()
        .ok("USER SET 1 name Ada age 36 gender f email a@x");
    let first_pid = redis_pid(data.path()).expect("redis.pid");
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.log()
    );
    wait_until(
        "the embedded redis-server to stop",
        Duration::from_secs(10),
        || !alive(first_pid),
    );

    let daemon = embedded(data.path());
    assert_eq!(
        daemon.client().ok("USER GET 1")["name"],
        "Ada",
        "the data survived the restart (AOF)"
    );
    let pid = redis_pid(data.path()).expect("redis.pid");
    // SAFETY: killing the redis-server the daemon started for this test.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let mut client = daemon.client();
    wait_until("requests to succeed again", Duration::from_secs(10), || {
        client
            .try_request("USER SET 2 name Bob age 40 gender m email b@x")
            .is_some_and(|r| r["ok"] == true)
    });
    assert!(
        redis_pid(data.path()).is_some_and(|new| new != pid),
        "a new redis-server runs"
    );
    assert!(daemon.log().contains("restarting"), "{}", daemon.log());
}

#[test]
fn a_bad_configuration_stops_start_up_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        ("[socket]\nmod = \"0660\"\n", "mod"),
        (
            "[socket]\nmax_connections = \"lots\"\n",
            "socket.max_connections",
        ),
        ("[redis]\nurl = \"http://example\"\n", "redis.url"),
        ("[socket]\nmode = \"rw-rw----\"\n", "socket.mode"),
        ("[scheduler]\ncron = \"hourly\"\n", "scheduler.cron"),
    ];
    for (text, key) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).expect("write");
        for subcommand in ["serve", "check-config"] {
            let out = Command::new(env!("CARGO_BIN_EXE_meetingd"))
                .arg(subcommand)
                .arg("--config")
                .arg(&file)
                .env_remove("RUST_LOG")
                .output()
                .expect("meetingd runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{subcommand} {text:?}: {stderr}"
            );
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
            assert!(stderr.contains(key), "{text:?}: {stderr} names {key}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .args(["check-config"])
        .env("MEETINGD_REDIS__URL", "redis://:hunter2@127.0.0.1:6379/0")
        .output()
        .expect("check-config");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        shown.contains("redis://:***@127.0.0.1:6379/0") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn the_documented_configuration_file_is_the_defaults() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/meetingd.toml");
    let with_file = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .env_remove("MEETINGD_EMBEDDED__DATA_DIR")
        .output()
        .expect("check-config");
    let without = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(
        with_file.status.success(),
        "{}",
        String::from_utf8_lossy(&with_file.stderr)
    );
    assert_eq!(
        with_file.stdout, without.stdout,
        "config/meetingd.toml lists every key with its default"
    );
}

#[test]
fn socket_activation_serves_on_the_passed_socket() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" serve --redis \"$1\" --socket /nonexistent/never-bound.sock")
        .arg(env!("CARGO_BIN_EXE_meetingd"))
        .arg(redis.url());
    // SAFETY: dup2/fcntl in the child before exec: the listener becomes
    // fd 3, kept open across exec.
    unsafe {
        command.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let log_dir = tempfile::tempdir().expect("dir");
    let daemon = Daemon::spawn_command(command, &path, &[], log_dir);
    drop(listener);
    wait_until(
        "the daemon serves on the passed socket",
        Duration::from_secs(20),
        || {
            Client::connect(&path)
                .is_ok_and(|mut c| c.try_request("PING").is_some_and(|r| r["result"] == "PONG"))
        },
    );
    assert!(!Path::new("/nonexistent/never-bound.sock").exists());
    assert!(
        daemon.log().contains("passed by systemd"),
        "{}",
        daemon.log()
    );
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().expect("dir");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let notify_env = notify_path.display().to_string();
    let daemon = Daemon::start(
        &redis,
        &[
            ("NOTIFY_SOCKET", &notify_env),
            ("WATCHDOG_USEC", "400000"),
            ("MEETINGD_SCHEDULER__CRON", "* * * * * *"),
            ("MEETINGD_REDIS__TIMEOUT_MS", "200"),
        ],
    );
    let mut heard: Vec<String> = Vec::new();
    let has = |lines: &[String], what: &str| lines.iter().any(|l| l == what);
    // what systemd would hear, until `until` or `limit`
    let listen = |heard: &mut Vec<String>, until: &dyn Fn(&[String]) -> bool, limit: Duration| {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !until(heard) {
            if let Ok(n) = notify.recv(&mut buf) {
                heard.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_string),
                );
            }
        }
    };
    listen(
        &mut heard,
        &|h| has(h, "READY=1") && has(h, "WATCHDOG=1"),
        Duration::from_secs(10),
    );
    let ready = heard.iter().position(|l| l == "READY=1").expect("READY=1");
    let first_watchdog = heard
        .iter()
        .position(|l| l == "WATCHDOG=1")
        .expect("WATCHDOG=1");
    assert!(
        ready < first_watchdog,
        "READY before the watchdog: {heard:?}"
    );
    assert!(heard.iter().any(|l| l.starts_with("STATUS=")), "{heard:?}");

    // ticks stop (Redis gone): after two intervals the watchdog is not fed
    redis.stop();
    std::thread::sleep(Duration::from_millis(3000));
    // what was sent before the two intervals passed is still queued: drop it
    listen(&mut heard, &|_| false, Duration::from_millis(300));
    heard.clear();
    listen(&mut heard, &|_| false, Duration::from_millis(1500));
    assert!(
        !has(&heard, "WATCHDOG=1"),
        "no WATCHDOG=1 while ticks fail: {heard:?}\n{}",
        daemon.log()
    );

    daemon.signal(libc::SIGTERM);
    listen(
        &mut heard,
        &|h| has(h, "STOPPING=1"),
        Duration::from_secs(10),
    );
    assert!(has(&heard, "STOPPING=1"), "{heard:?}");
}

#[test]
fn the_retention_setting_reaches_the_data() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_RETENTION__DAYS", "2")]);
    let mut c = daemon.client();
    c.ok("USER SET 1 name Ada age 36 gender f email a@x");
    c.ok("MEETING SET 1 title T description d public true");
    let (from, to) = (at(-60), at(60));
    c.ok(&format!("INSTANCE SET 1 1 from {from} to {to}"));
    c.ok("TICK");
    c.ok("JOIN 1 1");
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_connection()
        .expect("connect");
    let expires: i64 = redis::cmd("PEXPIRETIME")
        .arg("meetingd:{p1}:events:1/1")
        .query(&mut conn)
        .expect("PEXPIRETIME");
    let end = chrono::DateTime::parse_from_rfc3339(&to)
        .expect("time")
        .timestamp_millis();
    assert_eq!(expires, end + 2 * 86_400_000);
}

#[test]
fn without_redis_server_the_error_says_how_to_install_it() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .arg("serve")
        .arg("--socket")
        .arg(dir.path().join("meetingd.sock"))
        .env(
            "MEETINGD_EMBEDDED__REDIS_SERVER",
            "/nonexistent/redis-server",
        )
        .env("MEETINGD_EMBEDDED__DATA_DIR", dir.path().join("data"))
        .output()
        .expect("meetingd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("apt-get install redis-server"), "{stderr}");
}
