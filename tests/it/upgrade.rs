//! Rolling upgrades: two daemon versions on one Redis never swap the
//! library under each other. A daemon loads its library only over an older
//! one; it serves with a newer one of its API level; it refuses (exit 2,
//! both versions named) to serve with a newer one of another level.

use std::time::Duration;

use meetingd::store::{API_LEVEL, DEFAULT_PARTITIONS, Library};

use crate::harness::{Daemon, Redis};

/// Load our library under another version string.
fn load_as(redis: &Redis, version: &str) {
    let ours = Library::new(DEFAULT_PARTITIONS);
    let source = ours.source.replace(&ours.version, version);
    let loaded = redis.cli(&["FUNCTION", "LOAD", "REPLACE", &source]);
    assert_eq!(loaded.trim(), "meetingd", "{loaded}");
}

fn loaded_version(redis: &Redis) -> String {
    redis
        .cli(&["FCALL", "meet_version", "0"])
        .trim()
        .to_string()
}

#[test]
fn a_newer_library_of_our_api_level_is_served_with() {
    let redis = Redis::start();
    let newer = format!("99.0.0+0123456789abcdef/p{DEFAULT_PARTITIONS}/api{API_LEVEL}");
    load_as(&redis, &newer);
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    c.ok("USER SET 1 name Ada age 30 gender x email ada@example.com");
    assert_eq!(c.ok("USER GET 1")["name"], "Ada");
    assert_eq!(
        loaded_version(&redis),
        newer,
        "not replaced by the older daemon"
    );
    assert!(
        daemon.log().contains("a newer library of our API level"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_newer_library_of_another_api_level_stops_the_daemon() {
    let redis = Redis::start();
    let newer = format!(
        "99.0.0+0123456789abcdef/p{DEFAULT_PARTITIONS}/api{}",
        API_LEVEL + 1
    );
    load_as(&redis, &newer);
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("meetingd.sock");
    let mut daemon = Daemon::spawn(&redis, &socket, &[], dir);
    let status = daemon
        .wait(Duration::from_secs(20))
        .expect("the daemon stops by itself");
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains(&newer) && log.contains(&Library::new(DEFAULT_PARTITIONS).version),
        "both versions named: {log}"
    );
    assert_eq!(loaded_version(&redis), newer, "left as it was");
}

#[test]
fn an_older_library_is_replaced() {
    let redis = Redis::start();
    load_as(&redis, "0.1.0+8df38f33de95be1b");
    let daemon = Daemon::start(&redis, &[]);
    daemon.client().ok("PING");
    assert_eq!(
        loaded_version(&redis),
        Library::new(DEFAULT_PARTITIONS).version
    );
}
