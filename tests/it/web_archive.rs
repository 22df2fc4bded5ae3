//! The web view reads an ended instance from the archive (issue 26): an
//! instance archived and then deleted from Redis by `retention.days` still
//! shows its events, chat (paged as in Redis), attendance and timeline
//! bars, and says it read the archive; an ended instance the archive does
//! not hold is read from Redis and says so. Against SQLite, PostgreSQL and
//! MariaDB started by the test (`dbs.rs`), over plain HTTP.
//!
//! The instances are written with a store on a clock of the test's own,
//! three days back (relative to `t0()`), before the daemon starts: its
//! ticks on the real clock find them ended. Instance 5/2 ends before the
//! outboxes exist, so nothing queues it for the archive; 5/1 ends after,
//! and is archived once the daemon runs. With `retention.days = 1` the
//! archiver then gives 5/1's history an expiry already past, so Redis
//! deletes it at once.

use std::time::Duration;

use meetingd::protocol::format_time;
use meetingd::store::{EventKind, InstanceId, InstanceRef};

use crate::dbs::{ArchiveDb, Mariadb, Postgres, Sqlite};
use crate::harness::{Daemon, MIN, Redis, t0, wait_until};
use crate::web::{daemon_with_http, get, retro_cast, retro_script};

/// An attribute's value in a tag's text.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[start..].split('"').next()
}

/// The text of the HTML table whose id is `id`.
fn table<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {page}"));
    let rest = &page[start..];
    &rest[..rest.find("</table>").unwrap_or(rest.len())]
}

/// The event log's rows: (id, kind, user).
fn event_rows(page: &str) -> Vec<(String, String, Option<u64>)> {
    table(page, "events")
        .split("<tr data-id=\"")
        .skip(1)
        .map(|row| {
            let id = row.split('"').next().unwrap_or_default().to_string();
            let kind = row
                .split("class=\"badge ")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string();
            let user = row
                .split("class=\"id\">#")
                .nth(1)
                .and_then(|r| r.split('<').next())
                .map(|u| u.parse().unwrap_or_else(|_| panic!("a user in {row}")));
            (id, kind, user)
        })
        .collect()
}

/// The chat's rows: (id, text as the HTML has it).
fn chat_rows(page: &str) -> Vec<(String, String)> {
    table(page, "chat")
        .split("<tr data-id=\"")
        .skip(1)
        .map(|row| {
            let id = row.split('"').next().unwrap_or_default().to_string();
            let text = row
                .split("<td class=\"text\">")
                .nth(1)
                .and_then(|r| r.split("</td>").next())
                .unwrap_or_default()
                .to_string();
            (id, text)
        })
        .collect()
}

/// The timeline's bars: (user, data-start, data-end), sorted.
fn bars(svg: &str) -> Vec<(u64, String, String)> {
    let mut bars: Vec<(u64, String, String)> = svg
        .split("<rect class=\"bar")
        .skip(1)
        .map(|rect| {
            let tag = rect.split('>').next().unwrap_or_default();
            (
                attr(tag, "data-user")
                    .and_then(|u| u.parse().ok())
                    .expect("data-user"),
                attr(tag, "data-start").expect("data-start").to_string(),
                attr(tag, "data-end").expect("data-end").to_string(),
            )
        })
        .collect();
    bars.sort();
    bars
}

/// The link of the pager named `label` (`Next page →`), if any.
fn pager_link(page: &str, section: &str, label: &str) -> Option<String> {
    let start = page.find(&format!("id=\"{section}\""))?;
    let pager = page[start..].split("<nav class=\"pager\">").nth(1)?;
    let pager = pager.split("</nav>").next()?;
    pager
        .split("<a href=\"")
        .skip(1)
        .find(|a| a.contains(label))
        .and_then(|a| a.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
}

/// What the test wrote and Redis said of it before the daemon ran.
struct Written {
    /// 5/1's events as EVENTS gave them: (id, kind, user).
    events: Vec<(String, String, Option<u64>)>,
    /// 5/1's messages as MESSAGES gave them: (id, text).
    messages: Vec<(String, String)>,
    /// 5/2's events.
    events_2: Vec<(String, String, Option<u64>)>,
    /// 5/1's window's start.
    from: i64,
}

/// The HTML maud writes for a text.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Users 1..3 and meeting 5; instance 5/2 (three days and five hours back)
/// ended with no outbox; then the outboxes, and 5/1 (three days back, two
/// hours long): joins and leaves at known minutes, 60 messages, Cy still
/// in at the end (a timeout).
async fn write(redis: &Redis) -> Written {
    let from = t0() - 3 * 24 * 60 * MIN;
    let to = from + 120 * MIN;
    let from_2 = from - 300 * MIN;
    let (store, clock) = redis.store(from_2 - MIN).await;
    retro_cast(&store).await;
    let two = InstanceId::new(5, 2);
    store
        .instance_set(two, from_2, from_2 + 60 * MIN)
        .await
        .expect("instance 5/2");
    clock.set(from_2 + 5 * MIN);
    store
        .join(2, InstanceRef::Exact(two))
        .await
        .expect("join 5/2");
    store
        .post(2, InstanceRef::Exact(two), "before the archive", None)
        .await
        .expect("post 5/2");
    clock.set(from_2 + 61 * MIN);
    store.tick(from_2 + 61 * MIN).await.expect("5/2 ends");
    // from here on, what ends is queued for the archive
    store.outbox_enable().await.expect("outboxes");
    clock.set(from - MIN);
    let one = InstanceId::new(5, 1);
    store
        .instance_set(one, from, to)
        .await
        .expect("instance 5/1");
    let target = InstanceRef::Exact(one);
    retro_script(&store, &clock, target, from, async |minute| {
        if minute == 20 {
            // 60 messages while Ada and Bob are in: two pages of the chat
            for i in 0..60 {
                clock.set(from + 20 * MIN + i * 1000 + 500);
                let text = if i == 7 {
                    "<b>not bold</b> & \"quoted\"".to_string()
                } else if i == 8 {
                    "héllo 🎉 ✓".to_string()
                } else {
                    format!("message {i}")
                };
                store
                    .post(1 + (i as u64 % 2), target, &text, None)
                    .await
                    .expect("post");
            }
        }
    })
    .await;
    clock.set(to + MIN);
    store.tick(to + MIN).await.expect("the tick ends it");
    let (_, mut events) = store.events(target, None, 1000).await.expect("events");
    let (_, messages) = store
        .messages(target, None, None, 1000)
        .await
        .expect("messages");
    let (_, events_2) = store
        .events(InstanceRef::Exact(two), None, 1000)
        .await
        .expect("events 5/2");
    let rows = |events: &[meetingd::store::Event]| -> Vec<(String, String, Option<u64>)> {
        events
            .iter()
            .map(|e| (e.id.clone(), e.kind.as_str().to_string(), e.user))
            .collect()
    };
    // the log opens with the instance's start and has its end before the
    // timeouts: entries the archive keeps in the instance's row instead
    events.items.retain(|e| e.user.is_some());
    assert_eq!(events.items.len(), 8, "7 events and Cy's timeout");
    assert_eq!(
        events.items.last().map(|e| e.kind),
        Some(EventKind::Timeout)
    );
    assert_eq!(messages.items.len(), 60);
    Written {
        events: rows(&events.items),
        messages: messages
            .items
            .iter()
            .map(|m| (m.id.clone(), escaped(&m.text)))
            .collect(),
        events_2: rows(&events_2.items),
        from,
    }
}

/// The test's Redis, its daemon and the daemon's HTTP address.
type Running = (Redis, Daemon, String);

async fn an_archived_instance_reads_from_the_archive(db: &dyn ArchiveDb) -> Running {
    let redis = Redis::start();
    let written = write(&redis).await;
    let url = db.url();
    let (daemon, address) = daemon_with_http(
        &redis,
        &[
            ("MEETINGD_ARCHIVE__URL", url.as_str()),
            ("MEETINGD_ARCHIVE__POLL_MS", "50"),
            ("MEETINGD_RETENTION__DAYS", "1"),
        ],
    );
    wait_until("5/1 archived", Duration::from_secs(60), || {
        db.rows("SELECT count(*) FROM instances WHERE archived_at IS NOT NULL")
            .first()
            .map(String::as_str)
            == Some("1")
    });
    // archived, its expiry (a day after its end) is past: Redis deletes it
    for key in ["events:5/1", "chat:5/1"] {
        let key = format!("meetingd:{{p5}}:{key}");
        wait_until(&format!("{key} deleted"), Duration::from_secs(30), || {
            redis.cli(&["EXISTS", &key]).trim() == "0"
        });
    }
    let mut client = daemon.client();
    let events = client.ok("EVENTS 5/1");
    assert_eq!(events["events"], serde_json::json!([]), "{events}");

    // the page reads the archive: every event, the chat a page at a time
    let page = get(&address, "/i/5/1", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains("Read from the archive"),
        "{body}\n{}",
        daemon.log()
    );
    assert!(!body.contains("from Redis"), "{body}");
    assert!(!body.contains("data-live"), "an archived page is not live");
    assert_eq!(event_rows(body), written.events);
    let chat = chat_rows(body);
    assert_eq!(chat, written.messages[..50].to_vec());
    assert!(
        body.contains("&lt;b&gt;not bold&lt;/b&gt; &amp; &quot;quoted&quot;"),
        "the message escaped: {body}"
    );
    // the next page, by the link the page gives: the last 10
    let next = pager_link(body, "chat", "Next page").expect("a next page of the chat");
    assert_eq!(
        next,
        format!("/i/5/1?chat_after={}", written.messages[49].0)
    );
    let second = get(&address, &next, &[]);
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(chat_rows(&second.body), written.messages[50..].to_vec());
    assert!(pager_link(&second.body, "chat", "Next page").is_none());
    assert_eq!(
        pager_link(&second.body, "chat", "First page").as_deref(),
        Some("/i/5/1")
    );
    // past the end of the event log: no rows
    let past = get(
        &address,
        &format!("/i/5/1?events_after={}", written.events[7].0),
        &[],
    );
    assert!(event_rows(&past.body).is_empty(), "{}", past.body);
    // a cursor that is no id: the error EVENTS gives
    let bad = get(&address, "/i/5/1?events_after=x", &[]);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("after must be an id"), "{}", bad.body);

    // the timeline, drawn from the archived events: bars where they say
    let t = |minute: i64| format_time(written.from + minute * MIN);
    let expected: Vec<(u64, String, String)> = vec![
        (1, t(10), t(40)),
        (1, t(60), t(110)),
        (2, t(20), t(90)),
        (3, t(100), t(120)),
    ];
    assert_eq!(bars(body), expected, "the page's timeline");
    let svg = get(&address, "/i/5/1/timeline.svg", &[]);
    assert_eq!(svg.status, 200);
    assert_eq!(bars(&svg.body), expected, "the SVG file");
    assert!(svg.body.contains("Ada #1"), "names: {}", svg.body);
    // the attendance rows: Ada 30 + 50 min, 2 joins, 30 messages
    let attendance = table(body, "attendance");
    let ada = attendance
        .split("<tr data-user=\"1\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("Ada's row");
    assert!(ada.contains(">1:20:00<"), "{ada}");
    assert!(ada.contains(">2<") && ada.contains(">30<"), "{ada}");
    assert!(attendance.contains("<tr data-user=\"3\">"), "{attendance}");

    // 5/2 ended, but the archive does not hold it: read from Redis
    let page = get(&address, "/i/5/2", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Read from Redis: the archive does not hold it yet."),
        "{}",
        page.body
    );
    assert_eq!(event_rows(&page.body), written.events_2);
    assert_eq!(chat_rows(&page.body).len(), 1);
    assert!(page.body.contains("id=\"participants\""), "{}", page.body);

    // the meeting's page marks the archived one
    let meeting = get(&address, "/m/5", &[]).body;
    let row = |order: u64| -> String {
        meeting
            .split(&format!("<a href=\"/i/5/{order}\">"))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("5/{order} in {meeting}"))
            .to_string()
    };
    assert!(row(1).contains("badge archived"), "{}", row(1));
    assert!(!row(2).contains("badge archived"), "{}", row(2));
    (redis, daemon, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_archive_sqlite_an_instance_gone_from_redis_shows_from_the_archive() {
    an_archived_instance_reads_from_the_archive(&Sqlite::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_archive_postgres_an_instance_gone_from_redis_shows_from_the_archive() {
    let mut pg = Postgres::start();
    let (_redis, daemon, address) = an_archived_instance_reads_from_the_archive(&pg).await;
    // the archive down: the page reads Redis (whose history is gone) and
    // says why; back up, the archive again
    pg.stop();
    let page = get(&address, "/i/5/1", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(
            "Read from Redis: the archive cannot be read right now (the daemon's log says why)."
        ),
        "{}",
        page.body
    );
    assert!(event_rows(&page.body).is_empty());
    assert!(
        page.body
            .contains("deleted from Redis 1 days after its end"),
        "{}",
        page.body
    );
    assert!(
        daemon
            .log()
            .contains("the archive cannot be read, showing 5/1 from Redis"),
        "{}",
        daemon.log()
    );
    let svg = get(&address, "/i/5/1/timeline.svg", &[]);
    assert_eq!(svg.status, 200, "{}", svg.body);
    assert!(bars(&svg.body).is_empty(), "{}", svg.body);
    pg.start_again();
    wait_until("the archive read again", Duration::from_secs(30), || {
        get(&address, "/i/5/1", &[])
            .body
            .contains("Read from the archive")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_archive_mariadb_an_instance_gone_from_redis_shows_from_the_archive() {
    an_archived_instance_reads_from_the_archive(&Mariadb::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_archive_without_an_archive_an_ended_instance_reads_from_redis() {
    let redis = Redis::start();
    let written = write(&redis).await;
    let (_daemon, address) = daemon_with_http(&redis, &[]);
    let page = get(&address, "/i/5/1", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Read from Redis (no archive is configured)."),
        "{}",
        page.body
    );
    // Redis' log shows the start and the end too; the users' rows are the
    // same
    let rows: Vec<_> = event_rows(&page.body)
        .into_iter()
        .filter(|row| row.2.is_some())
        .collect();
    assert_eq!(rows, written.events);
    assert_eq!(chat_rows(&page.body), written.messages[..50].to_vec());
    let t = |minute: i64| format_time(written.from + minute * MIN);
    assert_eq!(
        bars(&page.body),
        vec![
            (1, t(10), t(40)),
            (1, t(60), t(110)),
            (2, t(20), t(90)),
            (3, t(100), t(120)),
        ]
    );
    let meeting = get(&address, "/m/5", &[]).body;
    assert!(!meeting.contains("badge archived"), "{meeting}");
}
