//! Generated input against the whole daemon: thousands of command-like
//! lines, well-formed or not, over a real socket to a real daemon on a
//! real Redis. Every line gets exactly one reply, in order, with a code of
//! the spec and never `internal` (a generated WATCH may stream entries
//! between them); the daemon keeps serving, and the data stays consistent
//! (`meetingd check`).

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use crate::harness::{Daemon, Redis, at};

/// Arguments that are sometimes right and mostly a little wrong.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u64..6).prop_map(|n| n.to_string()),
        (1u64..4, 1u64..4).prop_map(|(m, o)| format!("{m}/{o}")),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("9007199254740992".to_string()),
        Just("3/x".to_string()),
        Just("a@b.c".to_string()),
        Just("no-at".to_string()),
        Just(at(60)),
        Just("\"quoted \\\"text\\\"\"".to_string()),
        Just("\"unterminated".to_string()),
        Just("true".to_string()),
        prop::sample::select(vec![
            "name",
            "age",
            "gender",
            "email",
            "title",
            "description",
            "public",
            "from",
            "to",
            "AFTER",
            "LIMIT",
            "USER"
        ])
        .prop_map(String::from),
        "[ -~]{0,8}",
        any::<u32>().prop_map(|n| n.to_string()),
        // stream ids at and past what Redis takes (each part 2^64-1 at most)
        prop::sample::select(vec![
            "999999999999999-99999999999999999999",
            "0-18446744073709551616",
            "18446744073709551615-18446744073709551615",
            "18446744073709551615",
            "18446744073709551616-0",
            "1-2-3",
            "-5",
        ])
        .prop_map(String::from),
        any::<u64>().prop_map(|n| n.to_string()),
        (any::<u64>(), any::<u64>()).prop_map(|(ms, seq)| format!("{ms}-{seq}")),
        // POST keys, fit and unfit
        prop::sample::select(vec!["ID", "k-1.a:b", "bad key!", ""]).prop_map(String::from),
    ]
}

/// A long list of e-mails for AUDIENCE ADD or DEL (up to ~60 KB, just
/// under the line limit): the library takes them in chunks.
fn long_audience_line() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["AUDIENCE ADD", "AUDIENCE DEL"]),
        1u64..4,
        0usize..2600,
    )
        .prop_map(|(command, meeting, n)| {
            let emails: Vec<String> = (0..n).map(|i| format!("p{i}@example.com")).collect();
            format!("{command} {meeting} {}", emails.join(" "))
        })
}

fn line() -> impl Strategy<Value = String> {
    // every command of the protocol, and a few that are not, or cased
    let mut names: Vec<&'static str> = meetingd::protocol::COMMANDS
        .iter()
        .map(|c| c.name)
        .collect();
    names.retain(|n| *n != "QUIT");
    names.extend(["FROB", "user get", "join"]);
    let command = prop::sample::select(names);
    let short = (command, prop::collection::vec(token(), 0..7))
        .prop_map(|(c, args)| format!("{c} {}", args.join(" ")));
    prop_oneof![30 => short, 1 => long_audience_line()]
}

const CODES: [&str; 10] = [
    "bad_request",
    "unknown_command",
    "not_found",
    "inactive",
    "not_allowed",
    "already_joined",
    "not_joined",
    "permission_denied",
    "too_large",
    "unavailable",
];

/// The reply to `line`: a generated WATCH may stream entries before it.
fn reply_skipping_entries(c: &mut crate::harness::Client, line: &str) -> serde_json::Value {
    loop {
        let next = c.reply().unwrap_or_else(|| panic!("no reply to {line:?}"));
        if !(next["event"].is_object() || next["dropped"].is_u64()) {
            return next;
        }
    }
}

#[test]
fn thousands_of_generated_lines_each_get_one_reply() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    // some data for the generated commands to hit
    for u in 1..=5 {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@b.c"
        ));
    }
    for m in 1..=3 {
        c.ok(&format!(
            "MEETING SET {m} title M{m} description d public {}",
            m != 3
        ));
        c.ok(&format!(
            "INSTANCE SET {m} 1 from {} to {}",
            at(-60),
            at(24 * 60)
        ));
    }
    c.ok("TICK");
    let mut runner = TestRunner::deterministic();
    let strategy = line();
    let mut sent = 0;
    for _round in 0..10 {
        let lines: Vec<String> = (0..300)
            .map(|_| strategy.new_tree(&mut runner).expect("a line").current())
            .filter(|l| !l.trim_start().to_ascii_uppercase().starts_with("QUIT"))
            .collect();
        let batch: String = lines.iter().map(|l| format!("{l}\n")).collect();
        c.send(batch.as_bytes());
        for line in &lines {
            let reply = reply_skipping_entries(&mut c, line);
            match reply["ok"].as_bool() {
                Some(true) => {}
                Some(false) => {
                    let code = reply["error"]["code"].as_str().unwrap_or("?");
                    assert!(CODES.contains(&code), "{line:?} got {reply}");
                }
                None => panic!("{line:?} got {reply}"),
            }
        }
        sent += lines.len();
        // a round may have left the connection watching
        c.send(b"UNWATCH\n");
        assert_eq!(reply_skipping_entries(&mut c, "UNWATCH")["ok"], true);
        assert_eq!(c.ok("PING"), "PONG", "the same connection goes on");
    }
    assert!(sent >= 2900, "{sent} lines");
    redis.assert_consistent();
}
