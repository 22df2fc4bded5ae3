//! Who may hold the socket's connection slots, on a real daemon: one uid
//! holds its share only (`socket.max_connections_per_uid`), a few slots
//! are kept for admins, and a daemon out of file descriptors still tells a
//! new client `unavailable` instead of leaving it hanging.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::harness::{Client, Daemon, Redis, connect_as, serve_command, wait_until};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Let any uid reach the daemon's socket (its mode is set by the daemon;
/// its directory is the test's).
fn open_to_all(daemon: &Daemon) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the daemon's directory");
}

/// The reply of a connection the daemon refused at once: `unavailable`,
/// whose message is returned, then the connection closes.
fn refused(client: &mut Client, what: &str) -> String {
    let reply = client
        .reply()
        .unwrap_or_else(|| panic!("{what}: closed without a reply"));
    assert_eq!(reply["error"]["code"], "unavailable", "{what}: {reply}");
    assert!(
        client.reply().is_none(),
        "{what}: then the daemon closes it"
    );
    reply["error"]["message"].as_str().unwrap_or("").to_string()
}

/// Six slots, three per uid, one kept for admins. One uid (nobody) gets
/// three and no fourth; another uid still gets in; when the slots open to
/// everybody are taken, an ordinary uid is refused and root (an admin)
/// takes the reserved one; past every slot, root is refused too. Each
/// refusal names its limit and is counted by reason; a slot given back is
/// taken again.
#[test]
fn one_uid_holds_its_share_of_the_slots_and_admins_have_a_reserve() {
    if !is_root() {
        eprintln!("needs root (CI runs as root): clients under other uids");
        return;
    }
    let redis = Redis::start();
    let daemon = Daemon::start(
        &redis,
        &[
            ("MEETINGD_SOCKET__MODE", "0666"),
            ("MEETINGD_SOCKET__MAX_CONNECTIONS", "6"),
            ("MEETINGD_SOCKET__MAX_CONNECTIONS_PER_UID", "3"),
            ("MEETINGD_SOCKET__ADMIN_RESERVED_CONNECTIONS", "1"),
        ],
    );
    open_to_all(&daemon);
    let mut admin = daemon.client();
    // the start-up probe's connection is gone: the admin's is the only one
    wait_until("one connection open", Duration::from_secs(10), || {
        admin.ok("STATS")["connections"]["open"] == 1
    });

    let mut nobody = connect_as(daemon.socket(), 65534, 4);
    for (i, c) in nobody.iter_mut().take(3).enumerate() {
        assert_eq!(c.ok("PING"), "PONG", "nobody's connection {i}");
    }
    let message = refused(&mut nobody[3], "nobody's fourth");
    assert!(
        message.contains("uid 65534") && message.contains("socket.max_connections_per_uid is 3"),
        "{message}"
    );

    let mut other = connect_as(daemon.socket(), 65533, 1);
    assert_eq!(other[0].ok("PING"), "PONG", "another uid is served");

    // 5 open: every slot but the admins' is taken
    let mut third = connect_as(daemon.socket(), 65532, 1);
    let message = refused(&mut third[0], "a third uid past the slots open to all");
    assert!(
        message.contains("socket.admin_reserved_connections"),
        "{message}"
    );
    let mut reserved = daemon.client();
    assert_eq!(reserved.ok("PING"), "PONG", "root takes the reserved slot");
    let message = refused(&mut daemon.client(), "root past every slot");
    assert!(message.contains("socket.max_connections is 6"), "{message}");

    let stats = admin.ok("STATS");
    let connections = &stats["connections"];
    assert_eq!(connections["refused"], 3, "{stats}");
    assert_eq!(
        connections["refused_by_reason"],
        serde_json::json!({
            "max_connections": 1,
            "admin_reserve": 1,
            "per_uid": 1,
            "file_descriptors": 0,
        }),
        "{stats}"
    );

    // nobody gives one back: nobody may take one again
    drop(reserved);
    nobody.truncate(2);
    wait_until(
        "nobody's slot is given back",
        Duration::from_secs(10),
        || {
            let mut again = connect_as(daemon.socket(), 65534, 1);
            again[0]
                .try_request("PING")
                .is_some_and(|r| r["result"] == "PONG")
        },
    );
}

/// A daemon whose open-file limit is 64 (set before it starts): clients
/// connect and are served until its descriptors run out; the next one gets
/// `unavailable` saying so, and is closed, rather than waiting in the
/// backlog (the 10 s read timeout only tells a hang). Clients that leave
/// free descriptors, and new ones are served again.
#[test]
fn out_of_file_descriptors_a_new_client_gets_unavailable() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("meetingd.sock");
    let mut command = serve_command(&socket, &["--redis", &redis.url()]);
    // SAFETY: setrlimit is async-signal-safe and reads a struct of the
    // closure's own.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let daemon = Daemon::spawn_command(
        command,
        &socket,
        &[("MEETINGD_SOCKET__MAX_CONNECTIONS", "1000")],
        dir,
    );
    wait_until("the daemon serves", Duration::from_secs(20), || {
        Client::connect(&socket).is_ok_and(|mut c| c.try_request("PING").is_some())
    });

    let mut served = Vec::new();
    let message = loop {
        assert!(
            served.len() < 100,
            "100 clients served under a limit of 64 descriptors: {}",
            daemon.log()
        );
        let stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        // a refused client may be closed before its request is written
        let _ = (&stream).write_all(b"PING\n");
        let mut line = String::new();
        let read = std::io::BufReader::new(&stream).read_line(&mut line);
        match read {
            Ok(n) if n > 0 => {}
            Ok(_) => panic!("a client was closed without a reply: {}", daemon.log()),
            Err(e) => panic!(
                "a client got no reply ({e}): it hangs once descriptors run out: {}",
                daemon.log()
            ),
        }
        let reply: serde_json::Value = serde_json::from_str(&line).expect("a JSON reply");
        if reply["ok"] == true {
            served.push(stream);
            continue;
        }
        assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
        break reply["error"]["message"].as_str().unwrap_or("").to_string();
    };
    assert!(message.contains("out of file descriptors"), "{message}");
    assert!(!served.is_empty(), "some clients were served first");
    eprintln!("{} clients served, the next refused", served.len());

    served.truncate(served.len() / 2);
    wait_until(
        "a new client is served again",
        Duration::from_secs(10),
        || {
            Client::connect(&socket)
                .is_ok_and(|mut c| c.try_request("PING").is_some_and(|r| r["ok"] == true))
        },
    );
    let stats = daemon.client().ok("STATS");
    assert!(
        stats["connections"]["refused_by_reason"]["file_descriptors"].as_u64() >= Some(1),
        "{stats}"
    );
}

/// SIGHUP applies a new per-uid limit to the next client: nobody, held to
/// one connection, gets a second after the file says two.
#[test]
fn a_reload_changes_the_per_uid_limit() {
    if !is_root() {
        eprintln!("needs root (CI runs as root): clients under another uid");
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("meetingd.toml");
    let write_config = |per_uid: u32| {
        let text = format!("[socket]\nmode = \"0666\"\nmax_connections_per_uid = {per_uid}\n");
        std::fs::write(&config, text).expect("config");
    };
    write_config(1);
    let socket = dir.path().join("meetingd.sock");
    let mut command = serve_command(&socket, &["--redis", &redis.url()]);
    command.arg("--config").arg(&config);
    let daemon = Daemon::spawn_command(command, &socket, &[], dir);
    open_to_all(&daemon);
    wait_until("the daemon serves", Duration::from_secs(20), || {
        Client::connect(&socket).is_ok_and(|mut c| c.try_request("PING").is_some())
    });
    let mut first = connect_as(&socket, 65534, 2);
    assert_eq!(first[0].ok("PING"), "PONG");
    let message = refused(&mut first[1], "nobody's second under a limit of 1");
    assert!(
        message.contains("socket.max_connections_per_uid is 1"),
        "{message}"
    );

    write_config(2);
    daemon.signal(libc::SIGHUP);
    wait_until("the reload", Duration::from_secs(10), || {
        daemon.log().contains("configuration reloaded")
    });
    let mut second = connect_as(&socket, 65534, 2);
    assert_eq!(second[0].ok("PING"), "PONG", "a second one now");
    let message = refused(&mut second[1], "nobody's third under a limit of 2");
    assert!(
        message.contains("socket.max_connections_per_uid is 2"),
        "{message}"
    );
}
