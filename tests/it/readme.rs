//! The README's `redis-cli` examples, run exactly as written.
//!
//! Every ```console block of README.md is a list of `$ ` command lines, each
//! followed by what it prints. The commands run with `sh -c`, in order,
//! against one fresh redis-server: `redis-cli` on PATH is a shim that points
//! the real one at the test's socket (in `--no-raw` form, as the README
//! shows replies), and `meetingd` is the binary under test.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::Redis;

/// One `$ ` line of a console block and the lines it must print.
struct Step {
    /// Line number of the command in README.md (1-based).
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The steps of every ```console block, in order.
fn console_steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for (index, raw) in readme.lines().enumerate() {
        let line = raw.trim_end();
        if !in_block {
            in_block = line == "```console";
            continue;
        }
        if line.starts_with("```") {
            in_block = false;
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                line: index + 1,
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else {
            let step = steps.last_mut().unwrap_or_else(|| {
                panic!(
                    "README.md line {}: output before any `$ ` command in a console block",
                    index + 1
                )
            });
            step.expected.push(line.to_string());
        }
    }
    assert!(!in_block, "README.md: a ```console block is never closed");
    steps
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
            out.push_str(&line[copied..start]);
            out.push_str("<version>");
            copied = end;
        }
    }
    out.push_str(&line[copied..]);
    out
}

/// Whether the output matches: exactly, except that a library version
/// (`0.2.0+<digest>`) may be any, and so may the line of the Lua an error
/// was raised at (`on @user_function:<line>`).
fn matches(expected: &[String], actual: &[String]) -> bool {
    expected.len() == actual.len()
        && expected
            .iter()
            .zip(actual)
            .all(|(want, got)| loosened(want) == loosened(got))
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

/// Write a `redis-cli` shim into `dir` that talks to `socket`.
fn write_shim(dir: &Path, socket: &Path) {
    let real = real_redis_cli();
    let shim = dir.join("redis-cli");
    let script = format!(
        "#!/bin/sh\nexec {} -s {} --no-raw \"$@\"\n",
        sh_quote(&real),
        sh_quote(socket)
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

#[test]
fn readme_examples_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme_path = root.join("README.md");
    let readme = fs::read_to_string(&readme_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", readme_path.display()));
    let steps = console_steps(&readme);
    assert!(!steps.is_empty(), "README.md has no ```console examples");

    let missing: Vec<String> = registered_functions()
        .into_iter()
        .filter(|name| {
            let call = format!("FCALL {name} ");
            !steps.iter().any(|step| step.command.contains(&call))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README.md has no redis-cli example for {}",
        missing.join(", ")
    );

    let redis = Redis::start();
    let shims = tempfile::tempdir().expect("temp dir for the redis-cli shim");
    write_shim(shims.path(), redis.socket());
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
        assert!(
            matches(&expected, &actual),
            "README.md line {}: `{}` printed something else ({})\n\
             --- expected ---\n{}\n--- actual ---\n{}\n",
            step.line,
            step.command,
            output.status,
            expected.join("\n"),
            actual.join("\n"),
        );
    }
}

#[test]
fn versions_are_masked() {
    assert_eq!(
        mask_versions(r#""0.1.0+cd6e9d662b327892""#),
        r#""<version>""#
    );
    assert_eq!(
        mask_versions("1) \"12.3.4+0a\" and 1+2"),
        "1) \"<version>\" and 1+2"
    );
    assert_eq!(mask_versions("no version here +"), "no version here +");
    assert_eq!(
        loosened("(error) INACTIVE no script: meet_current, on @user_function:21."),
        "(error) INACTIVE no script: meet_current, on @user_function:<line>."
    );
}
