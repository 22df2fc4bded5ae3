//! What an adversary tried, on real processes: clients that stop reading,
//! a Redis that stops answering mid-request, keys under the wrong tag,
//! inputs at Redis' limits, a tick during an outage, an end moved into the
//! past.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meetingd::scheduler::{Scheduler, Trigger};
use meetingd::stats::Stats;
use meetingd::store::{InstanceId, InstanceState};

use crate::harness::{Client, Daemon, MIN, Redis, at, public_meeting, t0, wait_until};

/// A meeting 1 running now with user 1 in it.
fn running_meeting(c: &mut Client) {
    c.ok("USER SET 1 name Ada age 30 gender x email ada@example.com");
    c.ok("MEETING SET 1 title M description d public true");
    c.ok(&format!("INSTANCE SET 1 1 from {} to {}", at(-5), at(60)));
    c.ok("TICK");
    c.ok("JOIN 1 1");
}

/// A process' resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Shrink a socket's receive buffer (as a client that reads slowly).
fn small_receive_buffer(stream: &UnixStream) {
    let size: libc::c_int = 4096;
    // SAFETY: the descriptor is open; the option is a c_int of that size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
}

/// 20 clients ask for pages of big messages (1,000 of 4,000 bytes) three
/// times each and never read. Each reply stops before the reply limit, a
/// connection holds one at a time, so the daemon's memory stays within 20
/// times a reply budget and its buffers; and a connection whose replies do
/// not drain is closed after the idle timeout, its slot free again.
#[test]
fn twenty_clients_that_stop_reading_are_bounded_then_dropped() {
    let redis = Redis::start();
    let daemon = Daemon::start(
        &redis,
        &[
            ("MEETINGD_SOCKET__MAX_CONNECTIONS", "20"),
            ("MEETINGD_SOCKET__IDLE_TIMEOUT_SECS", "3"),
        ],
    );
    {
        let mut c = daemon.client();
        running_meeting(&mut c);
        let text = "x".repeat(4000);
        let posts: String = (0..1000).map(|_| format!("POST 1 1 {text}\n")).collect();
        c.send(posts.as_bytes());
        for _ in 0..1000 {
            let reply = c.reply().expect("a reply");
            assert_eq!(reply["ok"], true, "{reply}");
        }
        let page = c.ok("MESSAGES 1/1 LIMIT 1000");
        let shown = page["messages"].as_array().map_or(0, Vec::len);
        assert!(
            (1..1000).contains(&shown) && page["next"].is_string(),
            "a page stops before the reply limit, next set: {shown} messages"
        );
        c.send(b"QUIT\n");
        assert_eq!(c.reply().expect("BYE")["result"], "BYE");
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(daemon.pid());

    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = UnixStream::connect(daemon.socket()).expect("connect");
        small_receive_buffer(&stream);
        stream
            .write_all(b"MESSAGES 1/1 LIMIT 1000\n".repeat(3).as_slice())
            .expect("send");
        stalled.push(stream);
    }
    // while they stall: every slot taken, memory bounded
    let mut highest = before;
    let mut refused = false;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        highest = highest.max(rss_kib(daemon.pid()));
        if !refused {
            let mut probe = Client::connect(daemon.socket()).expect("connect");
            let reply = probe.reply().unwrap_or_default();
            refused = reply["error"]["code"] == "unavailable";
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused, "20 stalled clients hold every slot");
    let grown_mib = highest.saturating_sub(before) / 1024;
    eprintln!(
        "daemon RSS: {} MiB before, at most {} MiB with 20 stalled clients",
        before / 1024,
        highest / 1024
    );
    // one reply budget (1 MiB) and buffers each: well under 3 MiB a client
    assert!(
        grown_mib < 20 * 3,
        "the daemon grew by {grown_mib} MiB for 20 stalled clients"
    );

    // after the idle timeout the stalled connections are closed
    let wait = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect(daemon.socket()) {
            if c.try_request("PING").is_some_and(|r| r["result"] == "PONG") {
                break;
            }
        }
        assert!(Instant::now() < wait, "a slot never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    for mut stream in stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut sink = Vec::new();
        let read = std::io::Read::read_to_end(&mut stream, &mut sink);
        assert!(read.is_ok(), "the daemon closed it: {read:?}");
    }
}

/// Redis stops answering (SIGSTOP) while a POST is on its way: the reply
/// is `in_doubt`, never `unavailable`. The POST was applied once Redis came
/// back; sent again with the same ID it is not stored twice.
#[test]
fn a_post_without_reply_is_in_doubt_and_its_retry_stores_it_once() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__TIMEOUT_MS", "500")]);
    let mut c = daemon.client();
    running_meeting(&mut c);
    c.ok("POST 1 1 warm");
    // SAFETY: kill(2) on the test's own redis-server child.
    assert_eq!(unsafe { libc::kill(redis.pid() as i32, libc::SIGSTOP) }, 0);
    let reply = c.request("POST 1 1 \"while Redis sleeps\" ID once-1");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(redis.pid() as i32, libc::SIGCONT) }, 0);
    assert_eq!(reply["error"]["code"], "in_doubt", "{reply}");
    let again = c.ok("POST 1 1 \"while Redis sleeps\" ID once-1");
    assert_eq!(again["duplicate"], true, "it was applied: {again}");
    let page = c.ok("MESSAGES 1");
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, ["warm", "while Redis sleeps"]);
}

/// Keys under a tag that is not their partition's, written behind the
/// daemon's back: the library refuses them, `meetingd check` reports them.
#[test]
fn keys_under_the_wrong_tag_are_refused_and_reported() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    running_meeting(&mut c);
    redis.assert_consistent();
    for key in [
        "meetingd:{p5}:meeting:1",
        "meetingd:{p01}:meeting:1",
        "meetingd:{p99}:meeting:99",
    ] {
        let refused = redis.cli(&["FCALL", "meet_meeting_set", "1", key, "EVIL", "d", "true"]);
        assert!(refused.starts_with("BAD_REQUEST"), "{key}: {refused}");
        redis.cli(&["HSET", key, "title", "EVIL"]);
    }
    redis.cli(&["ZADD", "meetingd:{p99}:due", "1", "99/1"]);
    let (code, out) = redis.check();
    assert_eq!(code, 1, "{out}");
    for key in [
        "meetingd:{p5}:meeting:1",
        "meetingd:{p01}:meeting:1",
        "meetingd:{p99}:meeting:99",
        "meetingd:{p99}:due",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(key) && l.contains("wrong tag")),
            "{key} not reported: {out}"
        );
    }
}

/// The inputs that gave `internal`: stream ids past Redis' range, and an
/// AUDIENCE DEL of 8,500 addresses in one line.
#[test]
fn inputs_at_redis_limits_get_their_codes() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    running_meeting(&mut c);
    for line in [
        "MESSAGES 1/1 AFTER 999999999999999-99999999999999999999",
        "EVENTS 1/1 AFTER 0-18446744073709551616",
        "WATCH 1/1 AFTER 18446744073709551616",
    ] {
        assert_eq!(c.error_code(line), "bad_request", "{line}");
    }
    let max = format!("{0}-{0}", u64::MAX);
    let page = c.ok(&format!("EVENTS 1/1 AFTER {max}"));
    assert_eq!(page["events"], serde_json::json!([]));
    let emails: Vec<String> = (0..8500).map(|i| format!("{i}@x")).collect();
    let added = c.ok(&format!("AUDIENCE ADD 1 {}", emails.join(" ")));
    assert_eq!(added["changed"], 8500);
    let removed = c.ok(&format!("AUDIENCE DEL 1 {}", emails.join(" ")));
    assert_eq!(
        (removed["changed"].as_u64(), removed["total"].as_u64()),
        (Some(8500), Some(0))
    );
    redis.assert_consistent();
}

/// A window that opens while Redis is down: the failed tick is tried again
/// within seconds, not at the next cron firing (a yearly cron here), and
/// the tries are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_that_fails_in_an_outage_is_tried_again_until_it_works() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (store, clock) = redis
        .store_with(t0(), |o| o.timeout = Duration::from_millis(300))
        .await;
    public_meeting(&store, 1).await;
    let instance = InstanceId::new(1, 1);
    store
        .instance_set(instance, t0() + MIN, t0() + 60 * MIN)
        .await
        .expect("instance");
    let stats = Arc::new(Stats::default());
    let scheduler = Scheduler::new(Arc::new(store.clone()), stats.clone());
    let _cron = scheduler.start("0 0 0 1 1 *").await.expect("cron");
    redis.stop();
    clock.set(t0() + 2 * MIN);
    assert!(scheduler.tick_or_retry(Trigger::Cron).await.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    // the retried tick opens the window, then goes on through the other
    // partitions before it counts as good: wait for both
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_or_none(&redis, &store, instance).await != Some(InstanceState::Active)
        || stats.last_good_tick().is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the window never opened, or no tick succeeded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stats.tick_retries() >= 1, "the tries are counted");
}

async fn stored_or_none(
    redis: &Redis,
    store: &meetingd::store::Store,
    instance: InstanceId,
) -> Option<InstanceState> {
    // the stored state, what the tick applied (reads answer by the clock,
    // which says active as soon as the window opens), or None while Redis
    // does not answer
    let client = redis::Client::open(redis.url()).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let packed: String = redis::cmd("HGET")
        .arg(store.keys().schedule(instance.meeting))
        .arg(instance.order)
        .query_async(&mut conn)
        .await
        .ok()?;
    packed.rsplit('|').next()?.parse().ok()
}

/// An end moved before now ends the instance now: the timeout is stamped
/// now, after the join it ends, with the moved end as its scheduled end.
#[test]
fn an_end_moved_into_the_past_ends_it_now() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    running_meeting(&mut c);
    let moved = c.ok(&format!(
        "INSTANCE SET 1 1 from {} to {}",
        at(-120),
        at(-60)
    ));
    assert_eq!(moved["state"], "ended", "{moved}");
    let events = c.ok("EVENTS 1/1");
    let log = events["events"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = log.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["start", "join", "end", "timeout"], "{events}");
    let (join, end, timeout) = (&log[1], &log[2], &log[3]);
    assert_eq!(end["reason"], "ended");
    assert_eq!(
        end["at"], timeout["at"],
        "the end and its timeout at one time"
    );
    assert!(
        timeout["at"].as_str() >= join["at"].as_str(),
        "the timeout follows the join: {events}"
    );
    assert_eq!(timeout["scheduled_end"], at(-60).replace('Z', ".000Z"));
    assert_eq!(c.ok("PARTICIPANTS 1/1"), serde_json::json!([]));
    redis.assert_consistent();
}

/// A raw connection to `redis` (for writes that go around the library, as
/// an older version could have made them).
fn raw_redis(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url())
        .and_then(|client| client.get_connection())
        .expect("a plain connection to redis")
}

/// Bytes that are not UTF-8 already stored (by an older version, or a
/// write around the library, which now refuses them) never make a reply
/// `internal` and never stall a watcher: reads show them as U+FFFD, the
/// other instances of the same reader keep being delivered, and `meetingd
/// check` names every such text.
#[test]
fn bad_bytes_already_stored_read_as_replacement_and_are_reported() {
    let redis = Redis::start();
    // two partitions: meetings 1 and 3 share one
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__PARTITIONS", "2")]);
    let mut c = daemon.client();
    running_meeting(&mut c);
    c.ok("USER SET 2 name Bob age 30 gender x email bob@example.com");
    c.ok("MEETING SET 3 title Other description d public true");
    c.ok(&format!("INSTANCE SET 3 1 from {} to {}", at(-5), at(60)));
    c.ok("TICK");
    c.ok("JOIN 1 3");
    let mut neighbour = daemon.client();
    neighbour.ok("WATCH 3/1");

    let mut raw = raw_redis(&redis);
    let bad = b"caf\xe9 \xff".as_slice();
    let shown = "caf\u{fffd} \u{fffd}";
    let _: () = redis::cmd("HSET")
        .arg("meetingd:{u2}:user")
        .arg("name")
        .arg(bad)
        .query(&mut raw)
        .expect("a raw user name");
    let _: () = redis::cmd("HSET")
        .arg("meetingd:{p1}:meeting:3")
        .arg("title")
        .arg(bad)
        .query(&mut raw)
        .expect("a raw title");
    let _: String = redis::cmd("XADD")
        .arg("meetingd:{p1}:chat:1/1")
        .arg("*")
        .arg("u")
        .arg("1")
        .arg("text")
        .arg(bad)
        .query(&mut raw)
        .expect("a raw message");

    assert_eq!(c.ok("USER GET 2")["name"], shown);
    assert_eq!(c.ok("MEETING GET 3")["title"], shown);
    let page = c.ok("MESSAGES 1/1");
    assert_eq!(page["messages"][0]["text"], shown, "{page}");
    c.ok("JOIN 2 3");
    let people = c.ok("PARTICIPANTS 3/1");
    assert_eq!(people[1]["name"], shown, "{people}");
    // a watcher replaying 1/1 gets the raw message (written past the
    // library, so published to nobody: it is read from the stream), and
    // delivery goes on: the message posted in meeting 3 afterwards arrives
    let mut watcher = daemon.client();
    watcher.ok("WATCH 1/1 AFTER 0");
    c.ok("POST 1 3 after");
    let first_text = |w: &mut Client| loop {
        let line = w.reply().expect("an entry");
        if let Some(text) = line["event"]["text"].as_str() {
            return text.to_string();
        }
    };
    assert_eq!(first_text(&mut watcher), shown);
    assert_eq!(first_text(&mut neighbour), "after");
    let stats = c.ok("STATS");
    assert_eq!(stats["errors"]["internal"], 0, "{stats}");

    let (code, out) = redis.check();
    assert_ne!(code, 0, "{out}");
    for place in [
        "user 2: its name",
        "meeting 3: its title",
        "instance 1/1: message",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(place) && l.contains("not UTF-8")),
            "{place}: {out}"
        );
    }
}

/// A last line without its newline is no request: a client that dies
/// writing `LEAVE 8 13\n` after `LEAVE 8 1` leaves user 8 in meeting 1;
/// the dropped line is counted.
#[test]
fn an_unterminated_last_line_is_dropped_not_run() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    running_meeting(&mut c);
    {
        let mut dying = daemon.client();
        dying.send(b"PING\nLEAVE 1 1");
        assert_eq!(dying.reply().expect("the PING's reply")["result"], "PONG");
        dying
            .try_clone_writer()
            .shutdown(std::net::Shutdown::Write)
            .expect("close the writing half");
        assert!(dying.reply().is_none(), "no reply to a partial line");
    }
    wait_until("the partial line counted", Duration::from_secs(10), || {
        c.ok("STATS")["connections"]["partial_lines"] == 1
    });
    let people = c.ok("PARTICIPANTS 1");
    assert_eq!(people[0]["user"], 1, "user 1 is still in: {people}");
}

/// The retry of a POST with its `ID` answers the first message, marked
/// duplicate, after its user left and after its instance ended; the same
/// key with another text is `bad_request` and stores nothing.
#[test]
fn a_post_retried_with_its_id_confirms_after_leave_and_end() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    running_meeting(&mut c);
    let first = c.ok("POST 1 1 hello ID k-1");
    let repeat = |c: &mut Client, line: &str| {
        let again = c.ok(line);
        assert_eq!(again["id"], first["id"], "{line}: {again}");
        assert_eq!(again["order"], 1, "{line}: {again}");
        assert_eq!(again["duplicate"], true, "{line}: {again}");
    };
    c.ok("LEAVE 1 1");
    repeat(&mut c, "POST 1 1 hello ID k-1");
    repeat(&mut c, "POST 1 1/1 hello ID k-1");
    c.ok("END 1");
    repeat(&mut c, "POST 1 1 hello ID k-1");
    repeat(&mut c, "POST 1 1/1 hello ID k-1");
    assert_eq!(
        c.error_code("POST 1 1/1 \"another text\" ID k-1"),
        "bad_request"
    );
    assert_eq!(c.error_code("POST 1 1/1 hello ID k-2"), "inactive");
    let page = c.ok("MESSAGES 1/1");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1), "{page}");
}

/// JOIN and LEAVE with an `ID`: a JOIN that got `in_doubt` (Redis stopped
/// while it was on its way) is retried with its key and answers the first
/// join, marked duplicate, never `already_joined`; so does a LEAVE, and
/// both still do after the instance ended. A JOIN's key and a LEAVE's
/// never meet, and keys are per user.
#[test]
fn join_and_leave_retried_with_their_id_answer_the_first() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_REDIS__TIMEOUT_MS", "500")]);
    let mut c = daemon.client();
    running_meeting(&mut c);
    c.ok("USER SET 2 name Bo age 30 gender x email bo@example.com");
    // once in and out, so that the daemon knows the user (a JOIN of a user
    // it does not know reads it first, and a stopped Redis is then
    // `unavailable`, nothing sent)
    c.ok("JOIN 2 1");
    c.ok("LEAVE 2 1");
    // SAFETY: kill(2) on the test's own redis-server child.
    assert_eq!(unsafe { libc::kill(redis.pid() as i32, libc::SIGSTOP) }, 0);
    let reply = c.request("JOIN 2 1 ID j-1");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(redis.pid() as i32, libc::SIGCONT) }, 0);
    assert_eq!(reply["error"]["code"], "in_doubt", "{reply}");
    let again = c.ok("JOIN 2 1 ID j-1");
    assert_eq!(again["duplicate"], true, "it was applied: {again}");
    let events = c.ok("EVENTS 1");
    let joins = events["events"].as_array().map(|e| {
        e.iter()
            .filter(|e| e["user"] == 2 && e["type"] == "join")
            .count()
    });
    assert_eq!(joins, Some(2), "the first join and one more: {events}");
    let last = events["events"].as_array().and_then(|e| e.last()).cloned();
    assert_eq!(
        Some(again["id"].clone()),
        last.map(|e| e["id"].clone()),
        "{again} {events}"
    );

    let left = c.ok("LEAVE 2 1 ID j-1");
    assert!(
        left.get("duplicate").is_none(),
        "a LEAVE's key is not a JOIN's: {left}"
    );
    assert_eq!(c.ok("LEAVE 2 1 ID j-1")["id"], left["id"]);
    assert_eq!(
        c.ok("JOIN 2 1 ID j-1")["id"],
        again["id"],
        "after the leave"
    );
    // another user's key of the same name is its own
    let other = c.ok("JOIN 2 1 ID j-2");
    assert!(other.get("duplicate").is_none(), "{other}");
    c.ok("END 1");
    for (line, first) in [("JOIN 2 1/1 ID j-1", &again), ("LEAVE 2 1 ID j-1", &left)] {
        let repeat = c.ok(line);
        assert_eq!(repeat["duplicate"], true, "{line}: {repeat}");
        assert_eq!(repeat["id"], first["id"], "{line}: {repeat}");
    }
    assert_eq!(c.error_code("JOIN 2 1 ID j-3"), "inactive");
    assert_eq!(c.error_code("JOIN 2 1 ID bad/key"), "bad_request");
    redis.assert_consistent();
}
