//! The mistakes of a first hour with meetingd, each answered with what to
//! do: configuration errors exit 2 with one line naming the key, a socket
//! whose directory is missing, `meetingd check` with nothing configured,
//! logs written to a file, `meetingctl` without a daemon or without the
//! right to open its socket.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Client, Daemon, Redis, Run, meetingctl, serve_command};

/// `meetingd <args>` with a clean environment plus `env`.
fn meetingd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meetingd"));
    for (key, _) in std::env::vars() {
        if key.starts_with("MEETINGD_") || key == "RUST_LOG" || key == "RUNTIME_DIRECTORY" {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("meetingd runs")
}

/// Its exit status and standard error.
fn status_and_error(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn configuration_mistakes_exit_2_with_the_key_and_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("meetingd.toml");
    let file_arg = file.to_str().expect("a UTF-8 path");
    // (file, environment, what the one line must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 6] = [
        (
            "[log]\nlevel = \"loud\"\n",
            &[],
            &[
                "log.level",
                "\"loud\"",
                "error, warn, info, debug, trace, off",
            ],
        ),
        (
            "[socket]\nmod = \"0660\"\n",
            &[],
            &["socket.mod", "did you mean socket.mode?", file_arg],
        ),
        (
            "",
            &[("MEETINGD_SOCKET", "/tmp/x")],
            &[
                "MEETINGD_SOCKET",
                "MEETINGD_SOCKET__PATH=/tmp/x",
                "Unset it",
            ],
        ),
        (
            "",
            &[("MEETINGD_REDIS__URI", "redis://127.0.0.1")],
            &["did you mean MEETINGD_REDIS__URL?"],
        ),
        (
            "",
            &[("MEETINGD_LIMITS__PAGE", "lots")],
            &["limits.page", "an integer", "MEETINGD_LIMITS__PAGE"],
        ),
        (
            "",
            &[("RUST_LOG", "loud")],
            &["RUST_LOG", "not a log level"],
        ),
    ];
    for (text, env, words) in cases {
        std::fs::write(&file, text).expect("write the configuration");
        for subcommand in ["check-config", "serve", "check"] {
            let out = meetingd(
                &[
                    subcommand,
                    "--config",
                    file_arg,
                    "--socket",
                    "/nonexistent/m.sock",
                ],
                env,
            );
            let (code, stderr) = status_and_error(&out);
            assert_eq!(code, Some(2), "{subcommand} {text:?} {env:?}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
            for word in words {
                assert!(
                    stderr.contains(word),
                    "{subcommand} {text:?} {env:?}: {stderr:?} says {word:?}"
                );
            }
        }
    }
}

#[test]
fn check_config_shows_the_data_directory_it_would_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("a UTF-8 path");
    let out = meetingd(&["check-config"], &[("MEETINGD_EMBEDDED__DATA_DIR", data)]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(shown.contains(&format!("data_dir = {data:?}")), "{shown}");
    // with none given, the default one, not ""
    let out = meetingd(&["check-config"], &[]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("data_dir = \"\""), "{shown}");
    assert!(shown.contains("data_dir = \"/"), "{shown}");
}

#[test]
fn a_partition_count_other_than_the_data_s_exits_2() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("meetingd.sock");
    let socket = socket.to_str().expect("a UTF-8 path");
    // the first daemon records the default
    drop(Daemon::start(&redis, &[]));
    let out = meetingd(
        &["serve", "--socket", socket, "--redis", &redis.url()],
        &[("MEETINGD_REDIS__PARTITIONS", "8")],
    );
    let (code, stderr) = status_and_error(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "set redis.partitions = {}",
            meetingd::store::DEFAULT_PARTITIONS
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("internal error"), "{stderr}");
    assert!(
        !stderr.contains("loaded the Lua library"),
        "refused before loading a library of another count over the served one: {stderr}"
    );
    assert_eq!(
        redis.cli(&["FCALL", "meet_version", "0"]).trim(),
        meetingd::store::Library::new(meetingd::store::DEFAULT_PARTITIONS).version
    );
}

#[test]
fn a_socket_in_a_directory_that_does_not_exist_is_refused_naming_it() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no/such/dir");
    let socket = missing.join("m.sock");
    let out = meetingd(
        &[
            "serve",
            "--socket",
            socket.to_str().expect("a UTF-8 path"),
            "--redis",
            &redis.url(),
        ],
        &[],
    );
    let (code, stderr) = status_and_error(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "its directory {} does not exist",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--socket"), "says what to do: {stderr}");
    assert!(
        !dir.path().join("no").exists(),
        "nothing was created on the way"
    );
}

#[test]
fn the_runtime_directory_systemd_names_is_the_daemon_s_to_create() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = dir.path().join("run-meetingd");
    let socket = runtime.join("meetingd.sock");
    let command = serve_command(&socket, &["--redis", &redis.url()]);
    let log_dir = tempfile::tempdir().expect("temp dir");
    let runtime_text = runtime.to_str().expect("a UTF-8 path");
    let daemon = Daemon::spawn_command(
        command,
        &socket,
        &[("RUNTIME_DIRECTORY", runtime_text)],
        log_dir,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Client::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon serves in {runtime_text}: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(runtime.is_dir());
}

#[test]
fn check_with_nothing_configured_names_the_socket_it_tried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = meetingd(
        &["check"],
        &[(
            "MEETINGD_EMBEDDED__DATA_DIR",
            data.to_str().expect("a UTF-8 path"),
        )],
    );
    let (code, stderr) = status_and_error(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&data.join("redis.sock").display().to_string()),
        "names the socket it tried: {stderr}"
    );
    assert!(stderr.contains("--redis"), "says what to do: {stderr}");
    // a Redis given that does not answer is named too
    let nowhere = format!("redis+unix://{}", dir.path().join("nobody.sock").display());
    let out = meetingd(&["check", "--redis", &nowhere], &[]);
    let (code, stderr) = status_and_error(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&nowhere), "{stderr}");
}

#[test]
fn logs_written_to_a_file_hold_no_colour_codes() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut client = daemon.client();
    // a failed request is logged
    client.error_code("USER GET 99");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("request failed") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log();
    assert!(log.contains(" INFO "), "{log}");
    assert!(!log.contains('\u{1b}'), "no escape codes: {log:?}");
}

// ---- meetingctl ----

#[test]
fn meetingctl_help_needs_no_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nobody = dir.path().join("nobody.sock");
    let Run {
        status: code,
        stdout: out,
        stderr: err,
    } = meetingctl(&nobody, &["help"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("JOIN <user> <mref>"), "{out}");
    assert!(out.contains("INSTANCE SET <meeting> <order> from <time> to <time> [FUTURE]"));
    let Run {
        status: code,
        stdout: out,
        ..
    } = meetingctl(&nobody, &["--json", "help", "post"]);
    assert_eq!(code, 0);
    let reply: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        reply["result"]["syntax"],
        "POST <user> <mref> <text> [ID <key>]"
    );
    let Run {
        status: code,
        stderr: err,
        ..
    } = meetingctl(&nobody, &["help", "frobnicate"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("unknown_command: "), "{err}");
}

#[test]
fn meetingctl_help_describes_meetingctl_and_its_exit_statuses() {
    let out = Command::new(env!("CARGO_BIN_EXE_meetingctl"))
        .arg("--help")
        .output()
        .expect("meetingctl --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.starts_with("The command-line client of meetingd"),
        "{help}"
    );
    assert!(
        !help.contains("meeting-presence daemon"),
        "not the daemon's"
    );
    for word in [
        "Exit status: 0",
        "1 the daemon refused",
        "2 meetingctl could not",
    ] {
        assert!(help.contains(word), "{word} in {help}");
    }
    assert!(help.contains("MEETINGD_SOCKET__PATH"), "{help}");
}

#[test]
fn meetingctl_says_why_it_cannot_connect_and_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nobody = dir.path().join("nobody.sock");
    let Run {
        status: code,
        stderr: err,
        ..
    } = meetingctl(&nobody, &["ping"]);
    assert_eq!(code, 2);
    assert!(err.contains("is meetingd running?"), "{err}");
    assert!(err.contains("MEETINGD_SOCKET__PATH"), "{err}");

    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("a listener"));
    let Run {
        status: code,
        stderr: err,
        ..
    } = meetingctl(&stale, &["ping"]);
    assert_eq!(code, 2);
    assert!(err.contains("no meetingd listens on it"), "{err}");
}

#[test]
fn meetingctl_on_a_socket_it_may_not_open_names_the_group_to_ask_for() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    if !is_root() {
        eprintln!("the other half needs root (CI runs as root): a client under another uid");
        return;
    }
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the daemon's directory");
    // a copy of meetingctl that uid 65534 may run
    let ctl = daemon.dir().join("meetingctl");
    std::fs::copy(env!("CARGO_BIN_EXE_meetingctl"), &ctl).expect("copy meetingctl");
    use std::os::unix::process::CommandExt;
    let out = crate::harness::output_of(
        Command::new(&ctl)
            .arg("--socket")
            .arg(daemon.socket())
            .arg("ping")
            .env_remove("MEETINGD_SOCKET__PATH")
            .uid(65534)
            .gid(65534),
    )
    .expect("meetingctl as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        err.contains("0660 root:root"),
        "the socket's mode and owner: {err}"
    );
    assert!(
        err.contains("socket.group") && !err.contains("usermod -aG root"),
        "what to do: the socket's group setting, not joining root: {err}"
    );
}

/// A path that is there but is no socket (a directory, a file) is named
/// for what it is.
#[test]
fn meetingctl_on_a_path_that_is_no_socket_says_what_it_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("README.md");
    std::fs::write(&file, "# not a socket\n").expect("a file");
    for (path, kind) in [
        (dir.path(), "a directory"),
        (file.as_path(), "a regular file"),
    ] {
        let Run { status, stderr, .. } = meetingctl(path, &["ping"]);
        assert_eq!(status, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("it is {kind}, not meetingd's socket")),
            "{stderr}"
        );
        assert!(!stderr.contains("no meetingd listens"), "{stderr}");
    }
}

/// A data directory that cannot be made: one error line (not two) that
/// names embedded.data_dir.
#[test]
fn a_data_directory_that_cannot_be_made_is_said_once_with_the_setting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("a file");
    let data = file.join("data");
    let socket = dir.path().join("m.sock");
    let out = meetingd(
        &["serve", "--socket", socket.to_str().expect("a UTF-8 path")],
        &[(
            "MEETINGD_EMBEDDED__DATA_DIR",
            data.to_str().expect("a UTF-8 path"),
        )],
    );
    let (code, stderr) = status_and_error(&out);
    assert_ne!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("cannot make its data directory").count(),
        1,
        "said once: {stderr}"
    );
    assert!(stderr.contains("embedded.data_dir"), "{stderr}");
}

/// A socket directory that exists but is closed to the daemon's user: the
/// error names the directory, the uid and what to do.
#[test]
fn a_socket_directory_closed_to_the_daemon_s_user_says_what_to_do() {
    if !is_root() {
        eprintln!("needs root (CI runs as root): a daemon under another uid");
        return;
    }
    let redis = Redis::start_with(&["--unixsocketperm", "777"]);
    std::fs::set_permissions(redis.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("open the Redis directory to others");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("a directory root owns and others may read");
    // a copy of meetingd that uid 65534 may run
    let binary = dir.path().join("meetingd");
    std::fs::copy(env!("CARGO_BIN_EXE_meetingd"), &binary).expect("copy meetingd");
    let socket = dir.path().join("m.sock");
    use std::os::unix::process::CommandExt;
    let out = crate::harness::output_of(
        Command::new(&binary)
            .args(["serve", "--socket"])
            .arg(&socket)
            .args(["--redis", &redis.url()])
            .env_remove("MEETINGD_SOCKET__PATH")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .uid(65534)
            .gid(65534),
    )
    .expect("meetingd as nobody");
    let (code, stderr) = status_and_error(&out);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "uid 65534) may not create files in {}",
            dir.path().display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--socket"), "what to do: {stderr}");
}
