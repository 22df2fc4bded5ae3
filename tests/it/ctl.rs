//! `meetingctl`, the real binary, as a process: every subcommand against a
//! real daemon on a real redis-server, in table and `--json` form; its exit
//! statuses; and `import`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Timelike, Utc};
use serde_json::{Value, json};

use crate::harness::{Daemon, Redis, meetingctl};

// ---- running meetingctl ----

/// Run a subcommand that must succeed; its standard output (for people).
fn ctl(daemon: &Daemon, args: &[&str]) -> String {
    let run = meetingctl(daemon.socket(), args);
    assert_eq!(
        run.status, 0,
        "meetingctl {args:?} should succeed\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stderr, "", "meetingctl {args:?} wrote to stderr");
    run.stdout
}

/// Run a subcommand with `--json` that must succeed: its one line of
/// output is the reply, with `ok` true; its result.
fn ctl_json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = meetingctl(daemon.socket(), &all);
    assert_eq!(
        run.status, 0,
        "meetingctl {all:?} should succeed\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    one_json_line(&run.stdout, &all)
        .as_object()
        .map(|reply| {
            assert_eq!(reply["ok"], true, "{all:?}: {reply:?}");
            assert_eq!(reply.len(), 2, "a reply is ok and result: {reply:?}");
            reply["result"].clone()
        })
        .unwrap_or_else(|| panic!("{all:?} did not print a JSON object: {}", run.stdout))
}

/// The one JSON line of an output.
fn one_json_line(stdout: &str, args: &[&str]) -> Value {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} prints one line: {stdout:?}");
    serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout:?}"))
}

// ---- reading what it prints for people ----

/// The `key: value` lines a record starts with (up to the first empty line).
fn record(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// The table whose header's first column is `first`: the header's columns
/// (checked to be upper case) and each row as column -> cell, cut at the
/// columns' positions in the header.
fn table(text: &str, first: &str) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut lines = text.lines();
    let header = lines
        .by_ref()
        .find(|line| line.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no table with a {first} column in:\n{text}"));
    assert_eq!(
        header,
        header.to_uppercase(),
        "a table's header is upper case"
    );
    let chars: Vec<char> = header.chars().collect();
    let starts: Vec<usize> = (0..chars.len())
        .filter(|&i| chars[i] != ' ' && (i == 0 || chars[i - 1] == ' '))
        .collect();
    let columns: Vec<String> = header.split_whitespace().map(String::from).collect();
    assert_eq!(starts.len(), columns.len(), "header {header:?}");
    let rows = lines
        .take_while(|line| !line.is_empty())
        .map(|line| {
            let cells: Vec<char> = line.chars().collect();
            columns
                .iter()
                .enumerate()
                .map(|(i, column)| {
                    let from = starts[i].min(cells.len());
                    let to = starts
                        .get(i + 1)
                        .map_or(cells.len(), |&next| next.min(cells.len()));
                    let cell: String = cells[from..to].iter().collect();
                    (column.clone(), cell.trim().to_string())
                })
                .collect()
        })
        .collect();
    (columns, rows)
}

/// One column of a table's rows.
fn column(rows: &[BTreeMap<String, String>], name: &str) -> Vec<String> {
    rows.iter()
        .map(|row| {
            row.get(name)
                .unwrap_or_else(|| panic!("no column {name} in {row:?}"))
                .clone()
        })
        .collect()
}

// ---- time ----

/// An instant as the request takes it: RFC 3339, seconds, UTC.
fn rfc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The same instant as replies give it (milliseconds).
fn reply_time(request_time: &str) -> String {
    let bare = request_time
        .strip_suffix('Z')
        .expect("request times end in Z");
    format!("{bare}.000Z")
}

/// A window around now: from 10 minutes ago to 50 minutes from now.
fn window() -> (String, String) {
    let now = Utc::now();
    (
        rfc(now - TimeDelta::minutes(10)),
        rfc(now + TimeDelta::minutes(50)),
    )
}

/// A reply's time: RFC 3339 with milliseconds, UTC, and within a minute of
/// now.
fn assert_recent(text: &str) {
    assert!(
        text.len() == 24 && text.ends_with('Z'),
        "{text:?} is not a UTC time with milliseconds"
    );
    let at = DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    let off = (Utc::now() - at.with_timezone(&Utc)).num_seconds().abs();
    assert!(off < 60, "{text} is not now");
}

/// The daemon ticks by itself every minute at second 0: keep the few
/// milliseconds between scheduling an instance and `meetingctl tick` away
/// from it, so that the tick reported is ours.
fn clear_of_the_cron_tick() {
    let second = Utc::now().second();
    let wait = match second {
        57.. => 63 - second,
        0..3 => 3 - second,
        _ => 0,
    };
    std::thread::sleep(Duration::from_secs(u64::from(wait)));
}

// ---- data ----

/// Users 1 (Ada), 2 (Bob) and 3 (Cy), through the protocol.
fn people(daemon: &Daemon) {
    let mut client = daemon.client();
    for (id, name) in [(1, "Ada"), (2, "Bob"), (3, "Cy")] {
        let email = format!("{}@example.com", name.to_lowercase());
        client.ok(&format!(
            "USER SET {id} name {name} age 30 gender - email {email}"
        ));
    }
}

/// The people, and meeting 1 ("Standup", private to all three of them)
/// with instance 1/1 active from 10 minutes ago to 50 minutes from now;
/// the window.
fn standup(daemon: &Daemon) -> (String, String) {
    people(daemon);
    let (from, to) = window();
    let mut client = daemon.client();
    client.ok("MEETING SET 1 title Standup description \"every day\" public false");
    client.ok("AUDIENCE ADD 1 ada@example.com bob@example.com cy@example.com");
    client.ok(&format!("INSTANCE SET 1 1 from {from} to {to}"));
    client.ok("TICK");
    let state = client.ok("MEETING GET 1")["instances"][0]["state"].clone();
    assert_eq!(state, "active", "the standup is on");
    (from, to)
}

/// A fresh redis-server and daemon.
fn daemon() -> (Redis, Daemon) {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    (redis, daemon)
}

// ---- every subcommand ----

#[test]
fn ping() {
    let (_redis, daemon) = daemon();
    assert_eq!(ctl(&daemon, &["ping"]), "PONG\n");
    assert_eq!(ctl_json(&daemon, &["ping"]), "PONG");
}

#[test]
fn help_lists_the_commands_and_one_command_s_syntax() {
    let (_redis, daemon) = daemon();
    let every = [
        "PING",
        "HELP",
        "USER SET",
        "USER GET",
        "MEETING SET",
        "MEETING GET",
        "AUDIENCE ADD",
        "AUDIENCE DEL",
        "INSTANCE SET",
        "END",
        "TICK",
        "JOIN",
        "LEAVE",
        "PARTICIPANTS",
        "ACTIVE",
        "ATTENDANCE",
        "POST",
        "MESSAGES",
        "EVENTS",
        "STATS",
        "QUIT",
    ];

    let out = ctl(&daemon, &["help"]);
    let (columns, rows) = table(&out, "COMMAND");
    assert_eq!(columns, ["COMMAND", "SYNTAX", "ADMIN", "SUMMARY"]);
    let commands = column(&rows, "COMMAND");
    for command in every {
        assert!(commands.iter().any(|c| c == command), "{command} in {out}");
    }
    let join = rows
        .iter()
        .find(|row| row["COMMAND"] == "JOIN")
        .expect("a JOIN row");
    assert_eq!(join["SYNTAX"], "JOIN <user> <mref> [ID <key>]");
    assert_eq!(join["ADMIN"], "false");
    let tick = rows
        .iter()
        .find(|row| row["COMMAND"] == "TICK")
        .expect("a TICK row");
    assert_eq!(tick["ADMIN"], "true");

    let result = ctl_json(&daemon, &["help"]);
    let listed: Vec<&str> = result["commands"]
        .as_array()
        .expect("a command list")
        .iter()
        .map(|c| c["command"].as_str().expect("a command name"))
        .collect();
    for command in every {
        assert!(listed.contains(&command), "{command} in {result}");
    }

    // a group of commands
    let (_, rows) = table(&ctl(&daemon, &["help", "user"]), "COMMAND");
    assert_eq!(column(&rows, "COMMAND"), ["USER SET", "USER GET"]);
    let result = ctl_json(&daemon, &["help", "user"]);
    assert_eq!(result["commands"][0]["command"], "USER SET");
    assert_eq!(result["commands"][1]["command"], "USER GET");
    assert_eq!(result["commands"].as_array().map(Vec::len), Some(2));

    // one command
    let join = record(&ctl(&daemon, &["help", "join"]));
    assert_eq!(join["syntax"], "JOIN <user> <mref> [ID <key>]");
    let result = ctl_json(&daemon, &["help", "USER", "SET"]);
    assert_eq!(
        result["syntax"],
        "USER SET <user> name <s> age <n> gender <s> email <s>"
    );
    assert_eq!(result["admin"], true);
}

/// `meetingd library | head -2` (as the upgrade notes say to run it) and
/// `meetingctl help | head`: a reader that stops reading ends the tool
/// quietly, status 0, where `print!` panicked.
#[test]
fn a_closed_pipe_ends_the_tools_quietly() {
    for (tool, args) in [
        (env!("CARGO_BIN_EXE_meetingd"), &["library"][..]),
        (env!("CARGO_BIN_EXE_meetingctl"), &["help"][..]),
    ] {
        let mut child = Command::new(tool)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tool runs");
        // read a little (the library is far more than a pipe holds), then
        // go away
        let mut stdout = child.stdout.take().expect("stdout");
        let mut first = [0u8; 16];
        std::io::Read::read_exact(&mut stdout, &mut first).expect("the first bytes");
        drop(stdout);
        let out = child.wait_with_output().expect("the tool ends");
        assert!(out.status.success(), "{tool} {args:?}: {:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{tool} {args:?}");
    }
}

#[test]
fn user_set_and_get() {
    let (_redis, daemon) = daemon();
    let set = record(&ctl(
        &daemon,
        &[
            "user",
            "set",
            "1",
            "--name",
            "Ada Lovelace",
            "--age",
            "36",
            "--gender",
            "female",
            "--email",
            "Ada@Example.COM",
        ],
    ));
    assert_eq!(set["id"], "1");
    assert_eq!(set["name"], "Ada Lovelace");
    assert_eq!(set["age"], "36");
    assert_eq!(set["gender"], "female");
    assert_eq!(set["email"], "ada@example.com", "e-mails are lower-cased");

    let result = ctl_json(
        &daemon,
        &[
            "user",
            "set",
            "2",
            "--name",
            "Bob \"the builder\"",
            "--age",
            "0",
            "--gender",
            "male",
            "--email",
            "bob@example.com",
        ],
    );
    let bob = json!({"id": 2, "name": "Bob \"the builder\"", "age": 0, "gender": "male",
        "email": "bob@example.com"});
    assert_eq!(result, bob);

    let got = record(&ctl(&daemon, &["user", "get", "1"]));
    assert_eq!(got, set);
    assert_eq!(ctl_json(&daemon, &["user", "get", "2"]), bob);
    assert_eq!(daemon.client().ok("USER GET 2"), bob);
}

#[test]
fn meeting_audience_and_instance_admin() {
    let (_redis, daemon) = daemon();
    let meeting = record(&ctl(
        &daemon,
        &[
            "meeting",
            "set",
            "1",
            "--title",
            "Standup",
            "--description",
            "every day, 10 minutes",
            "--public",
            "false",
        ],
    ));
    assert_eq!(meeting["id"], "1");
    assert_eq!(meeting["title"], "Standup");
    assert_eq!(meeting["description"], "every day, 10 minutes");
    assert_eq!(meeting["public"], "false");
    let result = ctl_json(
        &daemon,
        &[
            "meeting",
            "set",
            "2",
            "--title",
            "Town hall",
            "--public",
            "true",
        ],
    );
    assert_eq!(
        result,
        json!({"id": 2, "title": "Town hall", "description": "", "public": true})
    );

    let added = record(&ctl(
        &daemon,
        &[
            "audience",
            "add",
            "1",
            "ada@example.com",
            "Bob@Example.com",
            "cy@example.com",
        ],
    ));
    assert_eq!(added["meeting"], "1");
    assert_eq!(added["total"], "3");
    for email in ["ada@example.com", "bob@example.com", "cy@example.com"] {
        assert!(added["audience"].contains(email), "{email} in {added:?}");
    }
    let result = ctl_json(&daemon, &["audience", "del", "1", "cy@example.com"]);
    assert_eq!(result["meeting"], 1);
    assert_eq!(result["total"], 2);
    let mut audience: Vec<&str> = result["audience"]
        .as_array()
        .expect("the audience")
        .iter()
        .map(|e| e.as_str().expect("an e-mail"))
        .collect();
    audience.sort_unstable();
    assert_eq!(audience, ["ada@example.com", "bob@example.com"]);

    let (from, to) = window();
    let instance = record(&ctl(
        &daemon,
        &["instance", "set", "1", "1", "--from", &from, "--to", &to],
    ));
    assert_eq!(instance["meeting"], "1");
    assert_eq!(instance["order"], "1");
    assert_eq!(instance["from"], reply_time(&from));
    assert_eq!(instance["to"], reply_time(&to));
    assert_eq!(instance["state"], "scheduled");
    let later = Utc::now() + TimeDelta::days(1);
    let (from2, to2) = (rfc(later), rfc(later + TimeDelta::hours(1)));
    let result = ctl_json(
        &daemon,
        &["instance", "set", "1", "2", "--from", &from2, "--to", &to2],
    );
    assert_eq!(
        result,
        json!({"meeting": 1, "order": 2, "from": reply_time(&from2), "to": reply_time(&to2),
            "state": "scheduled"})
    );

    let out = ctl(&daemon, &["meeting", "get", "1"]);
    let got = record(&out);
    assert_eq!(got["title"], "Standup");
    assert_eq!(got["public"], "false");
    let (columns, rows) = table(&out, "MEETING");
    assert_eq!(columns, ["MEETING", "ORDER", "FROM", "TO", "STATE"]);
    assert_eq!(column(&rows, "ORDER"), ["1", "2"]);
    assert_eq!(
        column(&rows, "FROM"),
        [reply_time(&from), reply_time(&from2)]
    );
    // the first window opened ten minutes ago: running by the clock, though
    // no tick has started it
    assert_eq!(column(&rows, "STATE"), ["active", "scheduled"]);

    let result = ctl_json(&daemon, &["meeting", "get", "1"]);
    assert_eq!(result["id"], 1);
    assert_eq!(result["title"], "Standup");
    assert_eq!(result["public"], false);
    assert_eq!(result["audience"].as_array().map(Vec::len), Some(2));
    assert_eq!(result["instances"].as_array().map(Vec::len), Some(2));
    assert_eq!(result["instances"][1]["to"], reply_time(&to2));
}

#[test]
fn tick_activates_a_due_instance() {
    let (_redis, daemon) = daemon();
    let mut client = daemon.client();
    client.ok("MEETING SET 1 title One description d public true");
    client.ok("MEETING SET 2 title Two description d public true");
    let (from, to) = window();

    clear_of_the_cron_tick();
    client.ok(&format!("INSTANCE SET 1 1 from {from} to {to}"));
    let tick = record(&ctl(&daemon, &["tick"]));
    assert_eq!(tick["activated"], "1/1");
    assert_eq!(tick["ended"], "-");
    assert_eq!(
        client.ok("MEETING GET 1")["instances"][0]["state"],
        "active"
    );

    clear_of_the_cron_tick();
    client.ok(&format!("INSTANCE SET 2 7 from {from} to {to}"));
    let result = ctl_json(&daemon, &["tick"]);
    assert_eq!(result["activated"], json!(["2/7"]));
    assert_eq!(result["ended"], json!([]));

    // nothing left to do
    let result = ctl_json(&daemon, &["tick"]);
    assert_eq!(result["activated"], json!([]));
    assert_eq!(result["ended"], json!([]));
}

#[test]
fn join_leave_and_participants() {
    let (_redis, daemon) = daemon();
    standup(&daemon);

    let joined = record(&ctl(&daemon, &["join", "1", "1"]));
    assert_eq!(joined["meeting"], "1");
    assert_eq!(joined["order"], "1");
    assert_eq!(joined["user"], "1");
    assert_recent(&joined["joined_at"]);
    let result = ctl_json(&daemon, &["join", "2", "1/1"]);
    assert_eq!(result["meeting"], 1);
    assert_eq!(result["order"], 1);
    assert_eq!(result["user"], 2);
    assert_recent(result["joined_at"].as_str().expect("joined_at"));
    ctl(&daemon, &["join", "3", "1"]);

    let out = ctl(&daemon, &["participants", "1"]);
    let (columns, rows) = table(&out, "USER");
    assert_eq!(columns, ["USER", "NAME", "EMAIL", "JOINED_AT"]);
    assert_eq!(column(&rows, "USER"), ["1", "2", "3"]);
    assert_eq!(column(&rows, "NAME"), ["Ada", "Bob", "Cy"]);
    assert_eq!(rows[0]["EMAIL"], "ada@example.com");
    assert_eq!(rows[0]["JOINED_AT"], joined["joined_at"]);

    // a page: after user 1, one of them
    let page = ctl(
        &daemon,
        &["participants", "1/1", "--after", "1", "--limit", "1"],
    );
    let (_, rows) = table(&page, "USER");
    assert_eq!(column(&rows, "USER"), ["2"]);
    let result = ctl_json(
        &daemon,
        &["participants", "1", "--after", "2", "--limit", "5"],
    );
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{result}");
    assert_eq!(result[0]["user"], 3);
    assert_eq!(result[0]["name"], "Cy");
    assert_eq!(result[0]["email"], "cy@example.com");

    let left = record(&ctl(&daemon, &["leave", "2", "1"]));
    assert_eq!(left["meeting"], "1");
    assert_eq!(left["order"], "1");
    assert_eq!(left["user"], "2");
    assert_recent(&left["left_at"]);
    let result = ctl_json(&daemon, &["leave", "3", "1/1"]);
    assert_eq!(result["user"], 3);
    assert_recent(result["left_at"].as_str().expect("left_at"));

    let result = ctl_json(&daemon, &["participants", "1"]);
    let users: Vec<&Value> = result
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| &p["user"])
        .collect();
    assert_eq!(users, [&json!(1)]);
}

#[test]
fn active_and_attendance() {
    let (_redis, daemon) = daemon();
    let (from, to) = standup(&daemon);
    let mut client = daemon.client();
    let ada = client.ok("JOIN 1 1")["joined_at"].clone();
    let bob = client.ok("JOIN 2 1")["joined_at"].clone();

    let out = ctl(&daemon, &["active"]);
    let (columns, rows) = table(&out, "MEETING");
    assert_eq!(
        columns,
        [
            "MEETING",
            "ORDER",
            "TITLE",
            "DESCRIPTION",
            "PUBLIC",
            "FROM",
            "TO",
            "PARTICIPANTS"
        ]
    );
    assert_eq!(rows.len(), 1, "{out}");
    let row = &rows[0];
    assert_eq!(row["MEETING"], "1");
    assert_eq!(row["ORDER"], "1");
    assert_eq!(row["TITLE"], "Standup");
    assert_eq!(row["DESCRIPTION"], "every day");
    assert_eq!(row["PUBLIC"], "false");
    assert_eq!(row["FROM"], reply_time(&from));
    assert_eq!(row["TO"], reply_time(&to));
    assert_eq!(row["PARTICIPANTS"], "2");
    assert_eq!(record(&out)["next"], "-", "{out}");
    let result = ctl_json(&daemon, &["active"]);
    assert_eq!(
        result,
        json!({"instances": [{"meeting": 1, "order": 1, "title": "Standup",
            "description": "every day", "public": false, "from": reply_time(&from),
            "to": reply_time(&to), "participants": 2}], "next": null})
    );
    let page = ctl_json(&daemon, &["active", "--after", "1", "--limit", "5"]);
    assert_eq!(page, json!({"instances": [], "next": null}));

    let out = ctl(&daemon, &["attendance"]);
    let (columns, rows) = table(&out, "MEETING");
    assert_eq!(columns, ["MEETING", "ORDER", "TITLE", "PARTICIPANTS"]);
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["TITLE"], "Standup");
    let who = &rows[0]["PARTICIPANTS"];
    for (user, at) in [(1, &ada), (2, &bob)] {
        let at = at.as_str().expect("joined_at");
        assert!(
            who.contains(&format!("{user} {at}")),
            "{user} at {at} in {who}"
        );
    }
    let result = ctl_json(&daemon, &["attendance"]);
    assert_eq!(
        result,
        json!({"instances": [{"meeting": 1, "order": 1, "title": "Standup",
            "participants": [{"user": 1, "joined_at": ada}, {"user": 2, "joined_at": bob}]}],
            "next": null})
    );
    // a page of one participant goes on after its join position
    let first = ctl_json(&daemon, &["attendance", "--limit", "1"]);
    let next = first["next"].as_str().expect("a next page").to_string();
    assert!(next.starts_with("1/1:1@"), "{next}");
    let rest = ctl_json(&daemon, &["attendance", "--after", &next]);
    assert_eq!(
        rest["instances"][0]["participants"],
        json!([{"user": 2, "joined_at": bob}])
    );
}

/// Control characters never reach the terminal raw: chat text and names
/// written behind the daemon's back (the protocol and the library refuse
/// them) are printed escaped by `messages`, `participants` and `watch`,
/// here through a pipe.
#[test]
fn control_characters_are_printed_escaped() {
    let (redis, daemon) = daemon();
    standup(&daemon);
    let mut client = daemon.client();
    client.ok("JOIN 1 1");
    let nasty = "esc\u{1b}[31m bell\u{7} cr\r nul\u{0} end";
    assert_eq!(
        client.error_code(&format!(
            "POST 1 1 {}",
            serde_json::to_string(nasty).unwrap_or_default()
        )),
        "bad_request",
        "the protocol refuses them"
    );
    // as older data may hold them: straight into the chat and a name
    let mut conn = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("a connection to the test redis");
    let _: String = redis::cmd("XADD")
        .arg("meetingd:{p1}:chat:1/1")
        .arg("*")
        .arg("u")
        .arg("1")
        .arg("text")
        .arg(nasty)
        .query(&mut conn)
        .expect("XADD");
    let _: i64 = redis::cmd("HSET")
        .arg("meetingd:{u1}:user")
        .arg("name")
        .arg("Ada\u{1b}]0;pwned\u{7}")
        .query(&mut conn)
        .expect("HSET");
    // the daemon reads the user again once Redis has told it of the change
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ctl(&daemon, &["participants", "1"]).contains("pwned") {
        assert!(
            std::time::Instant::now() < deadline,
            "the new name never showed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let watch = meetingctl(
        daemon.socket(),
        &["watch", "1", "--after", "0-0", "--count", "2"],
    );
    assert_eq!(watch.status, 0, "{}", watch.stderr);
    let watched = watch.stdout;
    for out in [
        ctl(&daemon, &["messages", "1"]),
        ctl(&daemon, &["participants", "1"]),
        watched,
    ] {
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "a raw control character in {out:?}"
        );
    }
    let out = ctl(&daemon, &["messages", "1"]);
    assert!(
        out.contains("esc\\u001b[31m bell\\u0007 cr\\r nul\\u0000 end"),
        "{out}"
    );
    assert!(ctl(&daemon, &["participants", "1"]).contains("Ada\\u001b]0;pwned\\u0007"));
    // --json keeps the text as stored (JSON escapes it)
    let page = ctl_json(&daemon, &["messages", "1"]);
    assert_eq!(page["messages"][0]["text"], nasty);
}

/// `meetingctl post` sends a key of its own: the message is stored once,
/// and a key given with --id makes a repeat a duplicate.
#[test]
fn post_goes_with_a_key() {
    let (_redis, daemon) = daemon();
    standup(&daemon);
    daemon.client().ok("JOIN 1 1");
    let first = ctl_json(&daemon, &["post", "1", "1", "once", "--id", "mine-1"]);
    let again = ctl_json(&daemon, &["post", "1", "1", "once", "--id", "mine-1"]);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(first.get("duplicate"), None);
    ctl(&daemon, &["post", "1", "1", "twice"]);
    let page = ctl_json(&daemon, &["messages", "1"]);
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2));
}

#[test]
fn post_and_messages() {
    let (_redis, daemon) = daemon();
    standup(&daemon);
    let mut client = daemon.client();
    client.ok("JOIN 1 1");
    client.ok("JOIN 2 1");

    let posted = record(&ctl(&daemon, &["post", "1", "1", "hello, world"]));
    assert_eq!(posted["meeting"], "1");
    assert_eq!(posted["order"], "1");
    assert_eq!(posted["user"], "1");
    assert!(!posted["id"].is_empty(), "a message id");
    assert_recent(&posted["at"]);
    let quoted = "say \"hi\"\tand \\ more";
    let result = ctl_json(&daemon, &["post", "2", "1/1", quoted]);
    assert_eq!(result["user"], 2);
    assert_eq!(result["meeting"], 1);
    let bob_id = result["id"].as_str().expect("an id").to_string();
    ctl(&daemon, &["post", "1", "1", "second"]);

    let out = ctl(&daemon, &["messages", "1"]);
    assert_eq!(record(&out)["next"], "-");
    let (columns, rows) = table(&out, "ID");
    assert_eq!(columns, ["ID", "USER", "TEXT", "AT"]);
    assert_eq!(column(&rows, "USER"), ["1", "2", "1"]);
    assert_eq!(rows[0]["ID"], posted["id"]);
    assert_eq!(rows[0]["TEXT"], "hello, world");
    assert_eq!(rows[2]["TEXT"], "second");

    // one user's, a page at a time
    let page = ctl_json(&daemon, &["messages", "1", "--user", "1", "--limit", "1"]);
    assert_eq!(
        page["messages"],
        json!([{"id": posted["id"], "user": 1, "text": "hello, world", "at": posted["at"]}])
    );
    let next = page["next"].as_str().expect("a next page").to_string();
    let page = ctl_json(
        &daemon,
        &["messages", "1/1", "--user", "1", "--after", &next],
    );
    let texts: Vec<&Value> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["text"])
        .collect();
    assert_eq!(texts, [&json!("second")]);
    assert_eq!(page["next"], Value::Null);

    let out = ctl(&daemon, &["messages", "1/1", "--user", "2"]);
    let (_, rows) = table(&out, "ID");
    assert_eq!(column(&rows, "ID"), [bob_id]);
    let page = ctl_json(&daemon, &["messages", "1", "--user", "2"]);
    assert_eq!(
        page["messages"][0]["text"], quoted,
        "the text as it was sent"
    );
}

#[test]
fn events_and_end() {
    let (_redis, daemon) = daemon();
    let (_, to) = standup(&daemon);
    let mut client = daemon.client();
    client.ok("JOIN 1 1");
    client.ok("JOIN 2 1");
    client.ok("LEAVE 2 1");

    let out = ctl(&daemon, &["events", "1"]);
    assert_eq!(record(&out)["next"], "-");
    let (columns, rows) = table(&out, "ID");
    assert_eq!(
        columns,
        ["ID", "USER", "TYPE", "CODE", "AT", "PROCESSED_AT"]
    );
    assert_eq!(column(&rows, "USER"), ["-", "1", "2", "2"]);
    assert_eq!(column(&rows, "TYPE"), ["start", "join", "join", "leave"]);
    assert_eq!(column(&rows, "CODE"), ["4", "1", "1", "2"]);

    let ended = record(&ctl(&daemon, &["end", "1"]));
    assert_eq!(ended["meeting"], "1");
    assert_eq!(ended["order"], "1");
    assert_eq!(ended["timed_out"], "1");
    assert_recent(&ended["ended_at"]);
    assert_eq!(client.ok("MEETING GET 1")["instances"][0]["state"], "ended");
    assert_eq!(ctl(&daemon, &["participants", "1/1"]), "(none)\n");
    assert_eq!(ctl_json(&daemon, &["participants", "1/1"]), json!([]));

    // the log is kept after the end, and pages
    let result = ctl_json(&daemon, &["events", "1/1"]);
    let events = result["events"].as_array().expect("events");
    let kinds: Vec<(&Value, &Value, &Value)> = events
        .iter()
        .map(|e| (&e["user"], &e["type"], &e["code"]))
        .collect();
    assert_eq!(
        kinds,
        [
            (&Value::Null, &json!("start"), &json!(4)),
            (&json!(1), &json!("join"), &json!(1)),
            (&json!(2), &json!("join"), &json!(1)),
            (&json!(2), &json!("leave"), &json!(2)),
            (&Value::Null, &json!("end"), &json!(5)),
            (&json!(1), &json!("timeout"), &json!(3)),
        ]
    );
    assert_eq!(events[4]["reason"], "ended");
    assert_eq!(events[5]["scheduled_end"], reply_time(&to));
    assert_eq!(result["next"], Value::Null);
    let page = ctl_json(&daemon, &["events", "1/1", "--limit", "3"]);
    assert_eq!(page["events"].as_array().map(Vec::len), Some(3));
    let next = page["next"].as_str().expect("a next page").to_string();
    let page = ctl_json(
        &daemon,
        &["events", "1/1", "--after", &next, "--limit", "2"],
    );
    assert_eq!(page["events"][0]["type"], "leave");
    assert_eq!(page["events"][1]["type"], "end");

    // END by meeting and order, in JSON
    let (from, to) = window();
    client.ok("MEETING SET 2 title Open description d public true");
    client.ok(&format!("INSTANCE SET 2 1 from {from} to {to}"));
    client.ok("TICK");
    client.ok("JOIN 3 2");
    let result = ctl_json(&daemon, &["end", "2/1"]);
    assert_eq!(result["meeting"], 2);
    assert_eq!(result["order"], 1);
    assert_eq!(result["timed_out"], json!([3]));
    assert_recent(result["ended_at"].as_str().expect("ended_at"));
}

#[test]
fn stats_and_raw() {
    let (_redis, daemon) = daemon();
    people(&daemon);

    assert_eq!(ctl(&daemon, &["raw", "PING"]), "PONG\n");
    let user = record(&ctl(&daemon, &["raw", "user get 1"]));
    assert_eq!(user["name"], "Ada");
    let result = ctl_json(&daemon, &["raw", "USER GET 2"]);
    assert_eq!(result["email"], "bob@example.com");
    let run = meetingctl(daemon.socket(), &["raw", "JOIN 1"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("bad_request: "), "{}", run.stderr);

    let out = ctl(&daemon, &["stats"]);
    let stats = record(&out);
    for key in ["connections", "requests", "errors", "ticks"] {
        assert!(stats.contains_key(key), "{key} in {out}");
    }
    // a request that does not parse is counted as such, not as a JOIN
    assert!(stats["requests"].contains("USER GET=2"), "{out}");
    assert!(stats["requests"].contains("(unparsed)=1"), "{out}");
    assert!(stats["errors"].contains("bad_request=1"), "{out}");
    // latency by command is a table
    let (columns, rows) = table(&out, "COMMAND");
    assert_eq!(
        columns,
        [
            "COMMAND", "COUNT", "P50_MS", "P90_MS", "P99_MS", "P999_MS", "MAX_MS"
        ]
    );
    let user_set = rows
        .iter()
        .find(|row| row["COMMAND"] == "USER SET")
        .expect("a USER SET row");
    assert_eq!(user_set["COUNT"], "3", "{out}");

    let result = ctl_json(&daemon, &["stats"]);
    assert!(
        result["connections"]["total"].as_u64().unwrap_or(0) >= 5,
        "{result}"
    );
    assert_eq!(result["requests"]["USER SET"], 3);
    assert_eq!(result["requests"]["USER GET"], 2);
    assert_eq!(result["requests"]["(unparsed)"], 1);
    assert_eq!(result["errors"]["bad_request"], 1);
    assert_eq!(result["errors"]["not_found"], 0);
}

// ---- exit statuses ----

#[test]
fn an_error_reply_exits_1_with_its_code_on_stderr() {
    let (_redis, daemon) = daemon();
    standup(&daemon);
    ctl(&daemon, &["join", "1", "1"]);

    let run = meetingctl(daemon.socket(), &["join", "1", "1"]);
    assert_eq!(run.status, 1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with("already_joined: "),
        "stderr: {:?}",
        run.stderr
    );
    assert!(run.stderr.contains("user 1"), "{}", run.stderr);

    // with --json the reply is printed as it came, and the status is still 1
    let run = meetingctl(daemon.socket(), &["--json", "join", "1", "1/1"]);
    assert_eq!(run.status, 1);
    let reply = one_json_line(&run.stdout, &["--json", "join"]);
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "already_joined");
    assert!(run.stderr.starts_with("already_joined: "), "{}", run.stderr);

    for (args, code) in [
        (&["user", "get", "99"][..], "not_found"),
        (&["leave", "2", "1"][..], "not_joined"),
        (&["join", "1", "42"][..], "not_found"),
        (&["participants", "1", "--limit", "0"][..], "bad_request"),
    ] {
        let run = meetingctl(daemon.socket(), args);
        assert_eq!(run.status, 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with(&format!("{code}: ")),
            "{args:?}: {}",
            run.stderr
        );
    }
    // the failures wrote nothing
    let participants = daemon.client().ok("PARTICIPANTS 1");
    assert_eq!(participants.as_array().map(Vec::len), Some(1));
}

#[test]
fn a_usage_error_exits_2_and_sends_nothing() {
    let (_redis, daemon) = daemon();
    for args in [
        &["join", "1"][..],
        &["user", "set", "1", "--name", "Ada"][..],
        &["audience", "add", "1"][..],
        &["frobnicate"][..],
        &["participants", "1", "--page", "2"][..],
        &[][..],
    ] {
        let run = meetingctl(daemon.socket(), args);
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(run.stderr.contains("Usage"), "{args:?}: {}", run.stderr);
    }
    let run = meetingctl(daemon.socket(), &["join", "1"]);
    assert!(
        run.stderr.contains("<MREF>"),
        "names what is missing: {}",
        run.stderr
    );

    let stats = daemon.client().ok("STATS");
    for command in ["JOIN", "USER SET", "AUDIENCE ADD", "PARTICIPANTS"] {
        assert_eq!(stats["requests"][command], 0, "{command}: {stats}");
    }
    assert_eq!(stats["requests"]["(unparsed)"], 0, "{stats}");
}

#[test]
fn a_connection_error_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nothing = dir.path().join("nobody-listens.sock");
    for args in [&["ping"][..], &["--json", "active"][..]] {
        let run = meetingctl(&nothing, args);
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "");
        assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
        assert!(
            run.stderr.contains(&nothing.display().to_string()),
            "names the socket: {}",
            run.stderr
        );
    }
    // a socket file that nobody listens on any more
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("a listener"));
    assert!(stale.exists(), "the socket file stays");
    let run = meetingctl(&stale, &["ping"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);

    let file = dir.path().join("import.json");
    std::fs::write(&file, r#"{"users":[]}"#).expect("write the import file");
    let run = meetingctl(&nothing, &["import", file.to_str().expect("a UTF-8 path")]);
    assert_eq!(run.status, 2, "{}", run.stderr);
}

// ---- import ----

/// An import file with good and bad entries, the bad ones first.
fn mixed_import() -> Value {
    let soon = Utc::now() + TimeDelta::days(1);
    let (from, to) = (rfc(soon), rfc(soon + TimeDelta::hours(1)));
    let (from2, to2) = (
        rfc(soon + TimeDelta::days(1)),
        rfc(soon + TimeDelta::days(1) + TimeDelta::hours(1)),
    );
    json!({
        "users": [
            {"id": 2, "name": "Methuselah", "age": 200, "gender": "male",
                "email": "old@example.com"},
            {"id": 3, "name": "Nomail", "age": 20, "gender": "female"},
            {"id": 1, "name": "Ada", "age": 36, "gender": "female", "email": "ada@example.com"},
            {"id": 4, "name": "Extra", "age": 20, "gender": "male", "email": "x@example.com",
                "nickname": "x"},
            {"id": 5, "name": "Eve", "age": 29, "gender": "female", "email": "Eve@Example.COM"},
        ],
        "meetings": [
            {"id": 10, "title": "Backwards", "description": "d", "public": true,
                "instances": [{"order": 1, "from": to, "to": from},
                              {"order": 2, "from": from, "to": to}]},
            {"id": 11, "title": "Bad audience", "description": "d", "public": false,
                "audience": ["ada@example.com", "nobody.example.com"]},
            {"id": 12, "title": "Standup", "description": "daily", "public": false,
                "audience": ["ada@example.com", "EVE@example.com"],
                "instances": [{"order": 1, "from": from, "to": to},
                              {"order": 2, "from": from2, "to": to2}]},
            {"id": 13, "title": "Town hall", "description": "", "public": true},
        ],
    })
}

/// The loaded entries of the mixed import, in the report's order.
const MIXED_LOADED: [&str; 10] = [
    "user 1",
    "user 5",
    "meeting 10",
    "instance 10/2",
    "meeting 11",
    "meeting 12",
    "meeting 12 audience",
    "instance 12/1",
    "instance 12/2",
    "meeting 13",
];

/// The refused entries of the mixed import: (entry, code, a word of the
/// message).
const MIXED_REFUSED: [(&str, &str, &str); 5] = [
    ("user 2", "bad_request", "age"),
    ("user 3", "bad_request", "email"),
    ("user 4", "bad_request", "nickname"),
    ("instance 10/1", "bad_request", "from"),
    ("meeting 11 audience", "bad_request", "nobody.example.com"),
];

/// Write an import file in a temp dir.
fn import_file(dir: &tempfile::TempDir, data: &Value) -> String {
    let path = dir.path().join("import.json");
    let text = serde_json::to_string_pretty(data).expect("import data serializes");
    std::fs::write(&path, text).expect("write the import file");
    path.to_str().expect("a UTF-8 path").to_string()
}

#[test]
fn import_reports_every_refusal_and_loads_the_rest() {
    let (_redis, daemon) = daemon();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = import_file(&dir, &mixed_import());

    let run = meetingctl(daemon.socket(), &["import", &file]);
    assert_eq!(run.status, 1, "something was refused: {}", run.stdout);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let loaded: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("loaded   "))
        .collect();
    assert_eq!(loaded, MIXED_LOADED, "{}", run.stdout);
    let refused: Vec<&str> = lines
        .iter()
        .filter(|line| line.starts_with("refused  "))
        .copied()
        .collect();
    assert_eq!(refused.len(), MIXED_REFUSED.len(), "{}", run.stdout);
    for (entry, code, word) in MIXED_REFUSED {
        let line = refused
            .iter()
            .find(|line| line.starts_with(&format!("refused  {entry}: ")))
            .unwrap_or_else(|| panic!("{entry} is reported refused:\n{}", run.stdout));
        assert!(
            line.starts_with(&format!("refused  {entry}: {code}: ")),
            "{line}"
        );
        assert!(line.contains(word), "{line} says why ({word})");
    }
    assert_eq!(
        lines.last().copied(),
        Some(
            format!(
                "{} loaded, {} refused",
                MIXED_LOADED.len(),
                MIXED_REFUSED.len()
            )
            .as_str()
        )
    );
    assert_eq!(run.stderr, "");

    // the good data is there, the bad is not
    let mut client = daemon.client();
    assert_eq!(
        client.ok("USER GET 1"),
        json!({"id": 1, "name": "Ada", "age": 36, "gender": "female",
            "email": "ada@example.com"})
    );
    assert_eq!(client.ok("USER GET 5")["email"], "eve@example.com");
    for user in [2, 3, 4] {
        assert_eq!(client.error_code(&format!("USER GET {user}")), "not_found");
    }
    let backwards = client.ok("MEETING GET 10");
    assert_eq!(backwards["title"], "Backwards");
    let orders: Vec<&Value> = backwards["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| &i["order"])
        .collect();
    assert_eq!(orders, [&json!(2)], "only the good instance");
    let bad_audience = client.ok("MEETING GET 11");
    assert_eq!(
        bad_audience["audience"],
        json!([]),
        "nothing of the refused AUDIENCE ADD"
    );
    let standup = client.ok("MEETING GET 12");
    assert_eq!(standup["public"], false);
    let mut audience: Vec<&str> = standup["audience"]
        .as_array()
        .expect("audience")
        .iter()
        .map(|e| e.as_str().expect("an e-mail"))
        .collect();
    audience.sort_unstable();
    assert_eq!(audience, ["ada@example.com", "eve@example.com"]);
    assert_eq!(standup["instances"].as_array().map(Vec::len), Some(2));
    assert_eq!(standup["instances"][0]["state"], "scheduled");
    assert_eq!(client.ok("MEETING GET 13")["public"], true);
}

#[test]
fn import_with_json_prints_a_parsable_report() {
    let (_redis, daemon) = daemon();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = import_file(&dir, &mixed_import());

    let run = meetingctl(daemon.socket(), &["--json", "import", &file]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let report = one_json_line(&run.stdout, &["--json", "import"]);
    assert_eq!(report["loaded"], json!(MIXED_LOADED));
    let refused = report["refused"].as_array().expect("a refused list");
    assert_eq!(refused.len(), MIXED_REFUSED.len(), "{report}");
    for (entry, code, word) in MIXED_REFUSED {
        let item = refused
            .iter()
            .find(|r| r["entry"] == entry)
            .unwrap_or_else(|| panic!("{entry} in {report}"));
        assert_eq!(item["code"], code, "{item}");
        let message = item["message"].as_str().expect("a message");
        assert!(message.contains(word), "{item} says why ({word})");
    }
}

#[test]
fn a_good_import_exits_0_and_its_data_works() {
    let (_redis, daemon) = daemon();
    let dir = tempfile::tempdir().expect("temp dir");
    let (from, to) = window();
    let data = json!({
        "users": [
            {"id": 1, "name": "Ada", "age": 36, "gender": "female", "email": "ada@example.com"},
            {"id": 2, "name": "Bob", "age": 41, "gender": "male", "email": "bob@example.com"},
        ],
        "meetings": [
            {"id": 7, "title": "Review", "description": "weekly", "public": false,
                "audience": ["ada@example.com"],
                "instances": [{"order": 3, "from": from, "to": to}]},
        ],
    });
    let file = import_file(&dir, &data);

    let out = ctl(&daemon, &["import", &file]);
    assert_eq!(
        out,
        "loaded   user 1\nloaded   user 2\nloaded   meeting 7\nloaded   meeting 7 audience\n\
         loaded   instance 7/3\n5 loaded, 0 refused\n"
    );
    // again, in JSON: an import is an upsert
    let run = meetingctl(daemon.socket(), &["--json", "import", &file]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let report = one_json_line(&run.stdout, &["--json", "import"]);
    assert_eq!(report["loaded"].as_array().map(Vec::len), Some(5));
    assert_eq!(report["refused"], json!([]));

    // the imported instance runs: the audience may join, the others not
    ctl(&daemon, &["tick"]);
    ctl(&daemon, &["join", "1", "7"]);
    let run = meetingctl(daemon.socket(), &["join", "2", "7"]);
    assert_eq!(run.status, 1);
    assert!(run.stderr.starts_with("not_allowed: "), "{}", run.stderr);
    let (_, rows) = table(&ctl(&daemon, &["participants", "7/3"]), "USER");
    assert_eq!(column(&rows, "NAME"), ["Ada"]);
}

#[test]
fn an_unreadable_import_file_exits_2_and_loads_nothing() {
    let (redis, daemon) = daemon();
    let dir = tempfile::tempdir().expect("temp dir");
    let before = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(redis.digest());
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, "users: [ada]").expect("write");
    let wrong_shape = dir.path().join("shape.json");
    std::fs::write(&wrong_shape, r#"{"people":[]}"#).expect("write");
    let missing = dir.path().join("missing.json");
    for path in [&not_json, &wrong_shape, &missing] {
        let run = meetingctl(
            daemon.socket(),
            &["import", path.to_str().expect("a UTF-8 path")],
        );
        assert_eq!(run.status, 2, "{}: {}", path.display(), run.stderr);
        assert!(
            run.stderr.contains(&path.display().to_string()),
            "names the file: {}",
            run.stderr
        );
    }
    let after = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(redis.digest());
    assert_eq!(before, after, "nothing was written");
}

/// A big import must not deadlock: the daemon reads only so far ahead and
/// waits for its replies to be taken, so meetingctl reads replies while it
/// still writes (it once wrote everything first and hung at some thousands
/// of entries).
#[test]
fn a_big_import_finishes() {
    let (_redis, daemon) = daemon();
    let dir = tempfile::tempdir().expect("temp dir");
    let users: Vec<Value> = (1..=20_000)
        .map(|id| {
            json!({"id": id, "name": format!("u{id}"), "age": 20, "gender": "-",
                "email": format!("u{id}@example.com")})
        })
        .collect();
    let file = import_file(&dir, &json!({ "users": users }));
    let mut child = Command::new(env!("CARGO_BIN_EXE_meetingctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["import", &file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("meetingctl runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("meetingctl's status") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("meetingctl import of 20000 users ends within 60 s");
    assert!(status.success());
    assert_eq!(daemon.client().ok("USER GET 20000")["name"], "u20000");
}

#[test]
fn watch_prints_entries_as_they_come() {
    let (_redis, daemon) = daemon();
    standup(&daemon);
    let mut client = daemon.client();
    client.ok("JOIN 1 1");
    client.ok(r#"POST 1 1 "hi there""#);
    client.ok("LEAVE 1 1");

    // the history, for people
    let run = meetingctl(
        daemon.socket(),
        &["watch", "1/1", "--after", "0", "--count", "4"],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "watching 1/1 (Ctrl-C stops)\n");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(lines[0].ends_with("  1/1  start"), "{}", lines[0]);
    assert!(lines[1].ends_with("  1/1  join     user 1"), "{}", lines[1]);
    assert!(
        lines[2].ends_with("  1/1  message  user 1: hi there"),
        "{}",
        lines[2]
    );
    assert!(lines[3].ends_with("  1/1  leave    user 1"), "{}", lines[3]);
    assert_recent(lines[1].split("  ").next().unwrap_or_default());

    // live, for scripts: started first, then the entries happen. The
    // daemon lets go of the first watch when it reads the end of that
    // connection, which may come after meetingctl exited: until the count
    // has been 0, a count of 1 may still be that watch, and the entries
    // would happen before the second one starts
    wait_for_watchers(&mut client, 0);
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_meetingctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["--json", "watch", "1", "--count", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("meetingctl runs");
    let out = lines_of(watcher.stdout.take().expect("stdout"));
    wait_for_watchers(&mut client, 1);
    let joined = client.ok("JOIN 2 1");
    let posted = client.ok(r#"POST 2 1 "live""#);
    // each line within a limit: an entry that never comes fails the test
    // rather than hanging it
    let lines: Vec<Value> = (0..2)
        .map(|_| serde_json::from_str(&next_line(&out)).expect("a JSON line"))
        .collect();
    assert_eq!(watcher.wait().expect("meetingctl ends").code(), Some(0));
    assert!(out.recv().is_err(), "two lines, then the end");
    assert_eq!(lines[0]["event"]["id"], joined["id"]);
    assert_eq!(lines[0]["event"]["type"], "join");
    assert_eq!(lines[1]["event"]["id"], posted["id"]);
    assert_eq!(lines[1]["event"]["text"], "live");

    // an unknown instance: exit 1 with the code
    let run = meetingctl(daemon.socket(), &["watch", "1/7"]);
    assert_eq!(run.status, 1);
    assert!(run.stderr.starts_with("not_found: "), "{}", run.stderr);
}

/// An import into a store in use: what already happened stays as it was
/// (an instance that has started keeps its start, an ended one its
/// window), entry by entry, while the rest of the file loads; loading the
/// same file again changes nothing and refuses nothing.
#[test]
fn an_import_never_rewrites_what_already_happened() {
    let (_redis, daemon) = daemon();
    let dir = tempfile::tempdir().expect("temp dir");
    let now = Utc::now();
    let window = |from: TimeDelta, to: TimeDelta| (rfc(now + from), rfc(now + to));
    let running = window(TimeDelta::minutes(-10), TimeDelta::minutes(50));
    let coming = window(TimeDelta::days(1), TimeDelta::days(1) + TimeDelta::hours(1));
    let past = window(TimeDelta::hours(-3), TimeDelta::hours(-2));
    let file = |title: &str, shift: TimeDelta| {
        let instance = |order: u64, (from, to): &(String, String)| {
            let moved = |t: &str| {
                rfc(DateTime::parse_from_rfc3339(t)
                    .expect("a time")
                    .with_timezone(&Utc)
                    + shift)
            };
            json!({"order": order, "from": moved(from), "to": moved(to)})
        };
        json!({
            "users": [{"id": 1, "name": "Ada", "age": 36, "gender": "female",
                "email": "ada@example.com"}],
            "meetings": [{"id": 1, "title": title, "description": "daily", "public": true,
                "instances": [instance(1, &running), instance(2, &coming), instance(3, &past)]}],
        })
    };
    let first = import_file(&dir, &file("Standup", TimeDelta::zero()));
    assert_eq!(
        ctl(&daemon, &["import", &first]).lines().last(),
        Some("5 loaded, 0 refused")
    );
    clear_of_the_cron_tick();
    ctl(&daemon, &["tick"]);
    ctl(&daemon, &["join", "1", "1/1"]);
    let states = |daemon: &Daemon| -> Vec<(String, String, String)> {
        ctl_json(daemon, &["meeting", "get", "1"])["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| {
                let text = |key: &str| i[key].as_str().expect("a string").to_string();
                (text("from"), text("to"), text("state"))
            })
            .collect()
    };
    let before = states(&daemon);
    assert_eq!(
        before.iter().map(|s| s.2.as_str()).collect::<Vec<_>>(),
        ["active", "scheduled", "ended"]
    );

    // the same data an hour earlier (a time-zone slip, say)
    let dir2 = tempfile::tempdir().expect("temp dir");
    let moved = import_file(&dir2, &file("Standup (moved)", TimeDelta::hours(-1)));
    let run = meetingctl(daemon.socket(), &["import", &moved]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for loaded in ["user 1", "meeting 1", "instance 1/2"] {
        assert!(
            lines.contains(&format!("loaded   {loaded}").as_str()),
            "{loaded}: {}",
            run.stdout
        );
    }
    let refused = |entry: &str, why: &str| {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("refused  {entry}: bad_request: ")))
            .unwrap_or_else(|| panic!("{entry} is refused: {}", run.stdout));
        assert!(line.contains(why), "{line} says {why:?}");
    };
    refused("instance 1/1", "has started");
    refused("instance 1/3", "has ended");
    assert_eq!(lines.last(), Some(&"3 loaded, 2 refused"));

    let after = states(&daemon);
    assert_eq!(after[0], before[0], "the running instance kept its window");
    assert_eq!(after[2], before[2], "the ended one too");
    assert_ne!(after[1], before[1], "the one to come moved");
    assert_eq!(
        ctl_json(&daemon, &["meeting", "get", "1"])["title"],
        "Standup (moved)"
    );
    let participants = ctl_json(&daemon, &["participants", "1/1"]);
    assert_eq!(
        participants[0]["user"], 1,
        "Ada is still in: {participants}"
    );

    // the first file again: equal windows are accepted as they are
    let run = meetingctl(daemon.socket(), &["import", &first]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(states(&daemon), before);

    // by hand, with --future: a running instance's end may move ahead,
    // not to the past
    let (from, _) = &running;
    let ahead = rfc(now + TimeDelta::hours(2));
    let moved = ctl_json(
        &daemon,
        &[
            "instance", "set", "1", "1", "--from", from, "--to", &ahead, "--future",
        ],
    );
    assert_eq!(moved["state"], "active");
    assert_eq!(moved["to"], reply_time(&ahead));
    let behind = rfc(now - TimeDelta::minutes(1));
    let run = meetingctl(
        daemon.socket(),
        &[
            "instance", "set", "1", "1", "--from", from, "--to", &behind, "--future",
        ],
    );
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("is running"), "{}", run.stderr);
    assert_eq!(states(&daemon)[0].2, "active");
}

/// A line of a child's output, read on a thread of its own into a channel
/// (so that a test can wait for it with a limit).
fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// The next line that `lines` brings within 20 s.
fn next_line(lines: &std::sync::mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(20))
        .expect("meetingctl printed a line")
}

/// SIGTERM to a daemon the test started, and wait for it to exit 0.
fn drain(daemon: &mut Daemon) {
    // SAFETY: signalling the daemon this test started, by its pid.
    unsafe {
        libc::kill(daemon.pid() as libc::pid_t, libc::SIGTERM);
    }
    let status = daemon.wait(Duration::from_secs(20)).expect("drained");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
}

/// `meetingctl watch` outlives a daemon restart: it reconnects by itself
/// and resumes after the last entry it printed, so what happens after the
/// restart is printed once and nothing twice; `--ids` shows each entry's
/// id first.
#[test]
fn watch_reconnects_after_a_restart_and_resumes_where_it_was() {
    let redis = Redis::start();
    let place = tempfile::tempdir().expect("a directory for the socket");
    let socket = place.path().join("meetingd.sock");
    let mut first = Daemon::start_on_socket(&redis, &socket, &[]);
    standup(&first);
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_meetingctl"))
        .arg("--socket")
        .arg(&socket)
        .args(["watch", "1", "--ids"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meetingctl runs");
    let out = lines_of(watcher.stdout.take().expect("stdout"));
    let err = lines_of(watcher.stderr.take().expect("stderr"));
    assert_eq!(next_line(&err), "watching 1/1 (Ctrl-C stops)");
    let mut client = first.client();
    let joined = client.ok("JOIN 1 1");
    let line = next_line(&out);
    assert!(line.ends_with("  1/1  join     user 1"), "{line}");
    let (id, rest) = line.split_once("  ").unwrap_or_default();
    assert!(id.contains('-'), "the id comes first: {line}");
    assert!(
        rest.starts_with(joined["joined_at"].as_str().unwrap_or("?")),
        "{line}"
    );

    drain(&mut first);
    let said = next_line(&err);
    assert!(
        said.contains("closed the watch (shutdown); reconnecting, to resume 1/1 --after"),
        "{said}"
    );
    let second = Daemon::start_on_socket(&redis, &socket, &[]);
    let mut client = second.client();
    client.ok("POST 1 1 \"after the restart\"");
    assert_eq!(next_line(&err), "watching 1/1 (Ctrl-C stops)");
    let line = next_line(&out);
    assert!(
        line.ends_with("  1/1  message  user 1: after the restart"),
        "{line}"
    );
    client.ok("LEAVE 1 1");
    let line = next_line(&out);
    assert!(
        line.ends_with("  1/1  leave    user 1"),
        "nothing twice: {line}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
}

/// With `--no-reconnect`, a watch whose daemon stops ends with status 3 and
/// says how to resume.
#[test]
fn watch_without_reconnect_stops_and_says_where_to_resume() {
    let redis = Redis::start();
    let mut daemon = Daemon::start(&redis, &[]);
    standup(&daemon);
    let mut client = daemon.client();
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_meetingctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["--json", "watch", "1/1", "--no-reconnect"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meetingctl runs");
    let out = lines_of(watcher.stdout.take().expect("stdout"));
    let err = lines_of(watcher.stderr.take().expect("stderr"));
    wait_for_watchers(&mut client, 1);
    let joined = client.ok("JOIN 1 1");
    // the join printed before the daemon stops
    let event: Value = serde_json::from_str(&next_line(&out)).expect("the join, as JSON");
    assert_eq!(event["event"]["at"], joined["joined_at"]);
    let id = event["event"]["id"].as_str().expect("an id").to_string();
    drain(&mut daemon);
    let status = watcher.wait().expect("meetingctl ends");
    assert_eq!(status.code(), Some(3));
    let said = next_line(&err);
    assert!(
        said.contains(&format!("to resume: meetingctl watch 1/1 --after {id}")),
        "{said}"
    );
}

/// Wait until the daemon counts `n` watching connections.
fn wait_for_watchers(client: &mut crate::harness::Client, n: u64) {
    crate::harness::wait_until("the watcher", Duration::from_secs(20), || {
        client.ok("STATS")["watch"]["watchers"] == n
    });
}
