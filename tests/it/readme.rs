//! The examples of the README and of docs/, run exactly as written.
//!
//! Every ```console block of README.md and of docs/*.md is a list of `$ `
//! command lines, each followed by what it prints. The commands run with
//! `sh -c`, in order.
//!
//! The blocks of docs/library.md (the Lua library from redis-cli) run
//! against one fresh redis-server: `redis-cli` on PATH is a shim that
//! points the real one at the test's socket (in `--no-raw` form, as a
//! terminal shows replies), and `meetingd` is the binary under test.
//!
//! Every other block runs in the state the quick start leaves: the demo
//! script itself (`scripts/demo.sh --no-build`) runs in a copy of the
//! checkout made of the script, the sample data and the binaries under
//! test in `target/debug`, and the commands run from there, as a reader's
//! would from the checkout (an `export` line holds for the commands after
//! it), README.md's first, then those of docs/ by file name. Times and ids
//! differ from run to run: they are compared as `<time>` and `<id>`. The
//! lines the demo prints to talk to it must be the README's.

use std::ffi::OsString;
use std::fs;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Redis;

/// The page whose blocks run against an empty Redis.
const LIBRARY_PAGE: &str = "docs/library.md";

/// One `$ ` line of a console block and the lines it must print.
struct Step {
    /// The file it is in (README.md, docs/...).
    file: &'static str,
    /// Line number of the command in its file (1-based).
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The steps of every ```console block of `text` (the file `file`), in
/// order.
fn console_steps(file: &'static str, text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if !in_block {
            in_block = line == "```console";
            continue;
        }
        if line.starts_with("```") {
            in_block = false;
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                file,
                line: index + 1,
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else {
            let step = steps.last_mut().unwrap_or_else(|| {
                panic!(
                    "{file} line {}: output before any `$ ` command in a console block",
                    index + 1
                )
            });
            step.expected.push(line.to_string());
        }
    }
    assert!(!in_block, "{file}: a ```console block is never closed");
    steps
}

/// The documents whose examples run: README.md, then docs/*.md by name.
const DOCUMENTS: [&str; 5] = [
    "README.md",
    "docs/internals.md",
    "docs/library.md",
    "docs/operations.md",
    "docs/protocol.md",
];

/// The steps of every document, in order.
fn all_steps() -> Vec<Step> {
    DOCUMENTS
        .into_iter()
        .flat_map(|file| console_steps(file, &read(file)))
        .collect()
}

/// The lines of a command's output, trailing whitespace and trailing empty
/// lines dropped.
fn lines_of(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut lines: Vec<String> = lines
        .into_iter()
        .map(|l| l.trim_end().to_string())
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// `line` with every library version (`0.1.0+cd6e9d662b327892`) replaced by
/// `<version>`: the digest changes with every change to the Lua.
fn mask_versions(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    for (plus, &byte) in bytes.iter().enumerate() {
        if byte != b'+' || plus < copied {
            continue;
        }
        let start = bytes[..plus]
            .iter()
            .rposition(|b| !(b.is_ascii_digit() || *b == b'.'))
            .map_or(0, |i| i + 1)
            .max(copied);
        let end = bytes[plus + 1..]
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .map_or(bytes.len(), |i| plus + 1 + i);
        if bytes[start..plus].contains(&b'.') && end > plus + 1 {
            out.push_str(&line[copied..=plus]);
            out.push_str("<digest>");
            copied = end;
        }
    }
    out.push_str(&line[copied..]);
    out
}

/// Whether the output matches: exactly, except that the digest of a
/// library version (`0.2.0+<digest>`, as README.md writes it) may be any
/// (the crate's version is checked), and so may the line of the Lua an error
/// was raised at (`on @user_function:<line>`).
fn matches(expected: &[String], actual: &[String]) -> bool {
    expected.len() == actual.len()
        && expected
            .iter()
            .zip(actual)
            .all(|(want, got)| loosened(want) == loosened(got))
}

/// Fail, showing both, unless `step` printed what README.md says.
fn assert_printed(
    step: &Step,
    status: &std::process::ExitStatus,
    expected: &[String],
    actual: &[String],
) {
    assert!(
        matches(expected, actual),
        "{} line {}: `{}` printed something else ({status})\n\
         --- expected ---\n{}\n--- actual ---\n{}\n",
        step.file,
        step.line,
        step.command,
        expected.join("\n"),
        actual.join("\n"),
    );
}

fn loosened(line: &str) -> String {
    let line = mask_versions(line);
    let marker = "@user_function:";
    match line.split_once(marker) {
        Some((before, after)) => {
            let rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{before}{marker}<line>{rest}")
        }
        None => line,
    }
}

/// The real redis-cli: the first on PATH, else /usr/bin/redis-cli.
fn real_redis_cli() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-cli"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-cli"))
}

/// A path quoted for sh.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Write a `redis-cli` shim into `dir` that talks to `socket` (or, with
/// none, where its arguments say), answering as in a terminal.
fn write_shim(dir: &Path, socket: Option<&Path>) {
    let real = real_redis_cli();
    let shim = dir.join("redis-cli");
    let target = socket.map_or(String::new(), |s| format!("-s {} ", sh_quote(s)));
    let script = format!(
        "#!/bin/sh\nexec {} {target}--no-raw \"$@\"\n",
        sh_quote(&real),
    );
    fs::write(&shim, script).expect("write the redis-cli shim");
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755))
        .expect("make the redis-cli shim executable");
}

/// The functions the library registers (`meet_...`), in either form of
/// `redis.register_function`.
fn registered_functions() -> Vec<String> {
    let source = meetingd::store::Library::new(16).source;
    ["function_name = '", "redis.register_function('"]
        .iter()
        .flat_map(|marker| {
            source
                .split(marker)
                .skip(1)
                .filter_map(|rest| rest.split('\'').next())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// README.md's text.
/// A file of the checkout, as text.
fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn readme_examples_run_as_written() {
    let steps: Vec<Step> = console_steps(LIBRARY_PAGE, &read(LIBRARY_PAGE));
    assert!(
        !steps.is_empty(),
        "{LIBRARY_PAGE} has no ```console examples"
    );

    let missing: Vec<String> = registered_functions()
        .into_iter()
        .filter(|name| {
            let call = format!("FCALL {name} ");
            !steps.iter().any(|step| step.command.contains(&call))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{LIBRARY_PAGE} has no redis-cli example for {}",
        missing.join(", ")
    );

    let redis = Redis::start();
    let shims = tempfile::tempdir().expect("temp dir for the redis-cli shim");
    write_shim(shims.path(), Some(redis.socket()));
    let binary = Path::new(env!("CARGO_BIN_EXE_meetingd"));
    let bin_dir = binary
        .parent()
        .expect("the meetingd binary has a directory");
    let mut path = vec![shims.path().to_path_buf(), bin_dir.to_path_buf()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path: OsString = std::env::join_paths(path).expect("PATH from the test's directories");

    for step in &steps {
        let output = Command::new("sh")
            .arg("-c")
            .arg(&step.command)
            .env("PATH", &path)
            .current_dir(shims.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run sh for `{}`: {e}", step.command));
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let actual = lines_of(printed.lines().map(str::to_string));
        let expected = lines_of(step.expected.iter().cloned());
        assert_printed(step, &output.status, &expected, &actual);
    }
}

/// `line` with every time (`2026-11-22T10:03:00.000Z`) replaced by
/// `<time>` and every stream id (`1795341780000-0`) by `<id>`.
fn mask_times_and_ids(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let digits = |from: usize, count: usize| {
        (from..from + count).all(|i| chars.get(i).is_some_and(char::is_ascii_digit))
    };
    let at = |i: usize, c: char| chars.get(i) == Some(&c);
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let word_start = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        // 2026-11-22T10:03:00(.000)Z
        if word_start
            && digits(i, 4)
            && at(i + 4, '-')
            && digits(i + 5, 2)
            && at(i + 7, '-')
            && digits(i + 8, 2)
            && at(i + 10, 'T')
            && digits(i + 11, 2)
            && at(i + 13, ':')
            && digits(i + 14, 2)
            && at(i + 16, ':')
            && digits(i + 17, 2)
        {
            let mut end = i + 19;
            if at(end, '.') && digits(end + 1, 3) {
                end += 4;
            }
            if at(end, 'Z') {
                out.push_str("<time>");
                i = end + 1;
                continue;
            }
        }
        // 1795341780000-0
        if word_start && digits(i, 13) && at(i + 13, '-') && digits(i + 14, 1) {
            let mut end = i + 14;
            while chars.get(end).is_some_and(char::is_ascii_digit) {
                end += 1;
            }
            out.push_str("<id>");
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The demo script, running in a copy of the checkout; stopped (it
/// drains its daemon) when dropped.
struct Demo {
    script: Child,
    root: PathBuf,
    /// What it printed, line by line.
    printed: Vec<String>,
}

impl Demo {
    /// Start the demo in `root` (see [`demo_checkout`]) and wait until it
    /// says it is running.
    fn start(root: &Path) -> Demo {
        Demo::start_with(root, &[])
    }

    /// [`Demo::start`] with the script's options `args`.
    fn start_with(root: &Path, args: &[&str]) -> Demo {
        let mut command = Command::new("bash");
        command
            .arg("scripts/demo.sh")
            .arg("--no-build")
            .args(args)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clean_env(&mut command);
        let mut script = command.spawn().expect("bash runs the demo");
        let stdout = script.stdout.take().expect("the demo's output");
        let stderr = script.stderr.take().expect("the demo's errors");
        let (lines, received) = std::sync::mpsc::channel();
        let errors = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if errors.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        let mut demo = Demo {
            script,
            root: root.to_path_buf(),
            printed: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with("Ctrl-C stops it");
                    demo.printed.push(line);
                    if done {
                        return demo;
                    }
                }
                Err(_) => panic!("the demo did not say it runs:\n{}", demo.printed.join("\n")),
            }
        }
    }

    /// The lines it printed to talk to it (indented, after "To talk to
    /// it"), with the checkout's path written `$PWD`.
    fn talk_lines(&self) -> Vec<String> {
        let root = self.root.display().to_string();
        self.printed
            .iter()
            .skip_while(|line| !line.starts_with("To talk to it"))
            .filter_map(|line| line.strip_prefix("  "))
            .map(|line| line.replace(&root, "$PWD"))
            .collect()
    }
}

/// A checkout of the demo's own: the script, the sample data, and the
/// binaries under test in target/debug.
fn demo_checkout() -> tempfile::TempDir {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = tempfile::tempdir().expect("a directory for the demo's checkout");
    for path in ["scripts/demo.sh", "config/sample.json"] {
        let to = root.path().join(path);
        fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        fs::copy(manifest.join(path), &to).unwrap_or_else(|e| panic!("copy {path}: {e}"));
    }
    let bin = root.path().join("target/debug");
    fs::create_dir_all(&bin).expect("mkdir target/debug");
    for (name, binary) in [
        ("meetingd", env!("CARGO_BIN_EXE_meetingd")),
        ("meetingctl", env!("CARGO_BIN_EXE_meetingctl")),
    ] {
        std::os::unix::fs::symlink(binary, bin.join(name)).expect("link a binary");
    }
    root
}

/// `bash scripts/demo.sh --no-build <args>` in `root`, to its end.
fn demo_run(root: &Path, args: &[&str]) -> std::process::Output {
    let mut command = Command::new("bash");
    command
        .arg("scripts/demo.sh")
        .arg("--no-build")
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null());
    clean_env(&mut command);
    command.output().expect("bash runs the demo")
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: kill sends a signal to the process we started.
        unsafe {
            libc::kill(self.script.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.script.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // it did not stop: its daemon goes too
        if let Ok(pid) = fs::read_to_string(self.root.join("target/demo/pid")) {
            if let Ok(pid) = pid.trim().parse::<libc::pid_t>() {
                // SAFETY: as above, the daemon the demo started for us.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = self.script.kill();
        let _ = self.script.wait();
    }
}

/// The environment of a reader's shell: nothing of meetingd's set.
fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("MEETINGD_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
}

#[test]
fn readme_meetingctl_examples_run_on_the_demo() {
    let readme = read("README.md");
    let steps: Vec<Step> = all_steps()
        .into_iter()
        .filter(|step| step.file != LIBRARY_PAGE)
        .collect();
    for needed in [
        "export ",
        "meetingctl user set",
        "meetingctl meeting set",
        "meetingctl audience add",
        "meetingctl instance set",
        "meetingctl join",
        "meetingctl import",
        "meetingctl watch",
    ] {
        assert!(
            steps.iter().any(|step| step.command.starts_with(needed)),
            "README.md and docs/ have no `{needed}...` example that runs on the demo"
        );
    }

    let root = demo_checkout();
    let demo = Demo::start(root.path());
    let talk = demo.talk_lines();
    assert!(
        talk.iter().any(|line| line.starts_with("export ")),
        "the demo prints an export line: {:?}",
        demo.printed
    );
    for line in &talk {
        assert!(
            readme.contains(line.as_str()),
            "the demo prints `{line}`, which README.md does not show"
        );
    }
    // The README's import comes after the demo's: in a later second, so
    // that its shifted times differ from the demo's.
    std::thread::sleep(Duration::from_millis(1100));

    let shims = tempfile::tempdir().expect("temp dir for the redis-cli shim");
    write_shim(shims.path(), None);
    let mut path = vec![shims.path().to_path_buf()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path: OsString = std::env::join_paths(path).expect("PATH from the test's directories");

    let mut exports = String::new();
    for step in &steps {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("exec 2>&1\n{exports}{}", step.command))
            .env("PATH", &path)
            .current_dir(root.path())
            .stdin(Stdio::null());
        clean_env(&mut command);
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("run sh for `{}`: {e}", step.command));
        let printed = String::from_utf8_lossy(&output.stdout);
        let actual = lines_of(printed.lines().map(mask_times_and_ids));
        let expected = lines_of(step.expected.iter().map(|l| mask_times_and_ids(l)));
        assert_printed(step, &output.status, &expected, &actual);
        if step.command.starts_with("export ") {
            exports.push_str(&step.command);
            exports.push('\n');
        }
    }
}

/// The quick start runs again and again in one checkout (each run from
/// fresh data, or the last run's with `--keep`), and while one runs a
/// second says so and how to reach it. The check mode (CI's) works in a
/// directory of its own: it runs beside a demo and leaves its data alone.
#[test]
fn the_demo_runs_again_and_one_at_a_time() {
    let root = demo_checkout();
    let demo = Demo::start(root.path());
    let second = demo_run(root.path(), &[]);
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(
        said.contains("another copy of the demo is running"),
        "{said}"
    );
    let socket = root.path().join("target/demo/meetingd.sock");
    assert!(
        said.contains(&format!("MEETINGD_SOCKET__PATH=\"{}\"", socket.display())),
        "says how to reach it: {said}"
    );
    for run in 1..=2 {
        let out = demo_run(root.path(), &["--check"]);
        assert!(
            out.status.success(),
            "check run {run} beside the demo: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("demo check passed"));
    }
    let messages = |root: &Path| {
        let run = crate::harness::meetingctl(
            &root.join("target/demo/meetingd.sock"),
            &["--json", "messages", "1"],
        );
        assert_eq!(run.status, 0, "{}", run.stderr);
        run.stdout
    };
    let said_before = messages(root.path());
    assert!(said_before.contains("hello, town hall"), "{said_before}");
    drop(demo);

    let kept = Demo::start_with(root.path(), &["--keep"]);
    assert!(
        kept.printed
            .iter()
            .any(|l| l.contains("keeping the data of the last run")),
        "{:?}",
        kept.printed
    );
    assert_eq!(messages(root.path()), said_before, "the chat was kept");
    drop(kept);
    let fresh = Demo::start(root.path());
    assert!(
        fresh.printed.iter().any(|l| l.contains("starting afresh")),
        "{:?}",
        fresh.printed
    );
}

#[test]
fn times_and_ids_are_masked() {
    assert_eq!(
        mask_times_and_ids("joined_at: 2026-11-22T10:03:00.000Z"),
        "joined_at: <time>"
    );
    assert_eq!(
        mask_times_and_ids("1795341780000-12  2  hi  2026-11-22T10:03:00Z"),
        "<id>  2  hi  <time>"
    );
    assert_eq!(
        mask_times_and_ids(r#"{"id":"1795341780000-0","at":"2026-11-22T10:03:00.000Z"}"#),
        r#"{"id":"<id>","at":"<time>"}"#
    );
    assert_eq!(mask_times_and_ids("user 2 of 12"), "user 2 of 12");
}

#[test]
fn versions_are_masked() {
    assert_eq!(
        mask_versions(r#""0.1.0+cd6e9d662b327892/p16/api2""#),
        r#""0.1.0+<digest>/p16/api2""#
    );
    assert_eq!(
        mask_versions("1) \"12.3.4+0a\" and 1+2"),
        "1) \"12.3.4+<digest>\" and 1+2"
    );
    assert_eq!(
        mask_versions(r#""0.2.0+<digest>/p64/api2""#),
        r#""0.2.0+<digest>/p64/api2""#
    );
    assert_eq!(mask_versions("no version here +"), "no version here +");
    assert_eq!(
        loosened("(error) INACTIVE no script: meet_current, on @user_function:21."),
        "(error) INACTIVE no script: meet_current, on @user_function:<line>."
    );
}
