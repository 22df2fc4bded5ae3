//! One Redis call per request: counted in Redis' own command statistics,
//! over a real socket to a real daemon. And what makes it safe: the
//! daemon's users stay right whoever changes them, and requests sent
//! together still apply in order.

use crate::harness::{Client, Daemon, Redis, at};

/// A private meeting 1 whose audience is users 1-3's e-mails, running
/// now; public meeting 2, running now.
fn setup(c: &mut Client) {
    for u in 1..=3 {
        c.ok(&format!(
            "USER SET {u} name U{u} age 30 gender x email u{u}@example.com"
        ));
    }
    c.ok("MEETING SET 1 title Private description d public false");
    c.ok("MEETING SET 2 title Open description d public true");
    c.ok("AUDIENCE ADD 1 u1@example.com u2@example.com u3@example.com");
    for m in 1..=2 {
        c.ok(&format!("INSTANCE SET {m} 1 from {} to {}", at(-5), at(60)));
    }
    c.ok("TICK");
}

/// Calls the daemon sent Redis since `CONFIG RESETSTAT`: function calls,
/// and reads of users (each behind a CLIENT CACHING YES).
fn calls(redis: &Redis) -> (u64, u64) {
    let stats = redis.cli(&["INFO", "commandstats"]);
    let calls_of = |name: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        calls_of("fcall") + calls_of("fcall_ro"),
        calls_of("client|caching"),
    )
}

fn reset(redis: &Redis) {
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).trim(), "OK");
}

/// Send `lines` in one write; every reply must be ok.
fn all_ok(c: &mut Client, lines: &[String]) {
    let batch: String = lines.iter().map(|l| format!("{l}\n")).collect();
    c.send(batch.as_bytes());
    for line in lines {
        let reply = c.reply().expect("a reply");
        assert_eq!(reply["ok"], true, "{line}: {reply}");
    }
}

#[test]
fn join_leave_and_post_are_one_redis_call_each() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    setup(&mut c);
    // the daemon meets users 1-3 (and reads them once)
    all_ok(
        &mut c,
        &(1..=3)
            .flat_map(|u| [format!("JOIN {u} 1"), format!("LEAVE {u} 1")])
            .collect::<Vec<_>>(),
    );

    reset(&redis);
    let mut lines = Vec::new();
    for round in 0..5 {
        for u in 1..=3 {
            // by meeting id (the running instance) and by M/O, private and
            // public
            let m = if round % 2 == 0 { "1" } else { "2/1" };
            lines.push(format!("JOIN {u} {m}"));
            lines.push(format!("POST {u} {m} \"round {round}\""));
            lines.push(format!("POST {u} {m} again ID r{round}"));
            lines.push(format!("LEAVE {u} {m}"));
        }
    }
    all_ok(&mut c, &lines);
    assert_eq!(
        calls(&redis),
        (lines.len() as u64, 0),
        "one function call per request, no user read"
    );

    // the reads: one call each (PARTICIPANTS' names from the cache)
    c.ok("JOIN 1 1");
    reset(&redis);
    let reads = [
        "PARTICIPANTS 1",
        "MESSAGES 1",
        "MESSAGES 1/1 USER 2",
        "EVENTS 2/1",
    ]
    .map(String::from);
    all_ok(&mut c, &reads);
    assert_eq!(calls(&redis), (reads.len() as u64, 0));
    let people = c.ok("PARTICIPANTS 1");
    assert_eq!(people[0]["name"], "U1", "{people}");
}

/// A user changed behind the daemon's back, by redis-cli through the
/// library or by a bare HSET, is dropped from the daemon's cache: Redis
/// tells the daemon (client tracking) before it answers the change, and
/// the daemon reads the user again. (How soon the daemon reads Redis'
/// message after it arrives is up to the machine's scheduler: the test
/// waits for the new name to show before it looks at admission.)
#[test]
fn a_user_changed_by_redis_cli_is_read_again() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    setup(&mut c);
    c.ok("JOIN 1 1");
    c.ok("JOIN 1 2");
    let name = |c: &mut Client| c.ok("PARTICIPANTS 2")[0]["name"].clone();
    assert_eq!(name(&mut c), "U1");

    // out of the audience, through the library
    let set = redis.cli(&[
        "FCALL",
        "meet_user_set",
        "1",
        "meetingd:{u1}:user",
        "Renamed",
        "31",
        "x",
        "elsewhere@example.com",
    ]);
    assert!(set.contains("elsewhere@example.com"), "{set}");
    wait_for_name(&mut c, "Renamed");
    c.ok("LEAVE 1 1");
    assert_eq!(c.error_code("JOIN 1 1"), "not_allowed");

    // back in, by a bare HSET that bypasses the library
    let hset = redis.cli(&["HSET", "meetingd:{u1}:user", "name", "Again"]);
    assert_eq!(hset.trim(), "0");
    let hset = redis.cli(&["HSET", "meetingd:{u1}:user", "email", "u1@example.com"]);
    assert_eq!(hset.trim(), "0");
    wait_for_name(&mut c, "Again");
    c.ok("JOIN 1 1");

    // through the daemon itself: forgotten at once, no waiting
    c.ok("USER SET 2 name Two age 30 gender x email u2@example.com");
    c.ok("JOIN 2 1");
    c.ok("LEAVE 2 1");
    c.ok("USER SET 2 name Two age 30 gender x email gone@example.com");
    assert_eq!(c.error_code("JOIN 2 1"), "not_allowed");
}

/// Wait until PARTICIPANTS of meeting 2 names user 1 `name` (10 s at
/// most: a daemon that never hears of the change fails the test).
fn wait_for_name(c: &mut Client, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let people = c.ok("PARTICIPANTS 2");
        if people[0]["name"] == name {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never saw user 1 renamed {name}: {people}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Requests sent in one write are sent to Redis together, in order: a
/// request sees the effects of those before it, whether it is one call or
/// needs more (the first JOIN of a user the daemon has not met).
#[test]
fn requests_sent_together_apply_in_order() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    setup(&mut c);
    let lines = [
        "JOIN 3 1",
        "POST 3 1 first",
        "LEAVE 3 1",
        "POST 3 1 refused",
        "USER SET 3 name Three age 30 gender x email u3@example.com",
        "JOIN 3 1",
        "POST 3 1 second",
        "PARTICIPANTS 1",
        "MESSAGES 1",
    ];
    let batch: String = lines.iter().map(|l| format!("{l}\n")).collect();
    c.send(batch.as_bytes());
    let replies: Vec<serde_json::Value> =
        lines.iter().map(|_| c.reply().expect("a reply")).collect();
    let outcome: Vec<String> = replies
        .iter()
        .map(|r| match r["ok"].as_bool() {
            Some(true) => "ok".to_string(),
            _ => r["error"]["code"].as_str().unwrap_or("?").to_string(),
        })
        .collect();
    assert_eq!(
        outcome,
        ["ok", "ok", "ok", "not_joined", "ok", "ok", "ok", "ok", "ok"],
        "{replies:?}"
    );
    assert_eq!(replies[7]["result"][0]["name"], "Three");
    let texts: Vec<&str> = replies[8]["result"]["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, ["first", "second"]);
}
