//! The listings, MEETINGS and USERS: their library functions through FCALL
//! (a bad call writes nothing), paging over the socket across partitions,
//! a USER SET that failed half-way, the start-up backfill of a store
//! written without indexes (by several daemons), `meetingd repartition`
//! keeping them, `meetingd check` on them, and meetingctl.

use std::time::Duration;

use meetingd::store::{Keys, Library, Load, Meeting};
use redis::Value;
use serde_json::Value as Json;

use crate::harness::{
    Client, Daemon, Redis, at, code_of, fcall, field, meetingctl, t0, text, wait_until,
};
use crate::socket::Backend;

/// The ids of a reply's list `name` (`ids` of meet_ids).
fn ids(reply: &Value, name: &str) -> Vec<String> {
    match field(reply, name) {
        Value::Array(items) => items.iter().map(text).collect(),
        other => panic!("{other:?}"),
    }
}

/// The `next` of a meet_ids reply (None: nil).
fn next_of(reply: &Value) -> Option<String> {
    match field(reply, "next") {
        Value::Nil | Value::Boolean(false) => None,
        other => Some(text(&other)),
    }
}

#[tokio::test]
async fn the_index_functions_through_fcall_and_bad_calls_write_nothing() {
    let redis = Redis::start();
    let mut conn = redis.conn().await;
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&Library::new(16).source)
        .query_async(&mut conn)
        .await
        .expect("the library loads");
    // meetings 1, 17 and 33 are of partition 1 (of 16), 2 of partition 2
    for m in [33, 1, 17, 2] {
        let key = format!("meetingd:{{p{}}}:meeting:{m}", m % 16);
        fcall(&mut conn, "meet_meeting_set", &[&key], &["T", "", "true"])
            .await
            .expect("meeting set");
    }
    let p1 = "meetingd:{p1}:meetings";
    let page = fcall(&mut conn, "meet_ids", &[p1], &["", "2"])
        .await
        .expect("ids");
    assert_eq!(ids(&page, "ids"), ["1", "17"]);
    assert_eq!(next_of(&page).as_deref(), Some("17"));
    let page = fcall(&mut conn, "meet_ids", &[p1], &["17", "2"])
        .await
        .expect("ids");
    assert_eq!(
        (ids(&page, "ids"), next_of(&page)),
        (vec!["33".into()], None)
    );
    let page = fcall(&mut conn, "meet_ids", &[p1], &[]).await.expect("ids");
    assert_eq!(ids(&page, "ids"), ["1", "17", "33"]);

    // 17 gets two instances, the first running; 49 (partition 1) does
    // not exist and is left out
    let key17 = "meetingd:{p1}:meeting:17";
    let (from, to) = (t0().to_string(), (t0() + 3_600_000).to_string());
    let later = (t0() + 7_200_000).to_string();
    let later_end = (t0() + 9_000_000).to_string();
    fcall(
        &mut conn,
        "meet_instance_set",
        &[key17],
        &["4", &from, &to, &from],
    )
    .await
    .expect("instance 4");
    fcall(
        &mut conn,
        "meet_instance_set",
        &[key17],
        &["5", &later, &later_end, &from],
    )
    .await
    .expect("instance 5");
    fcall(&mut conn, "meet_tick", &["meetingd:{p1}:due"], &[&from])
        .await
        .expect("tick");
    let rows = fcall(&mut conn, "meet_meetings", &[p1], &["17", "49", "1"])
        .await
        .expect("meetings");
    let Value::Array(rows) = field(&rows, "rows") else {
        panic!("{rows:?}")
    };
    let shown: Vec<Vec<String>> = rows
        .iter()
        .map(|row| match row {
            Value::Array(cells) => cells
                .iter()
                .map(|c| match c {
                    Value::Nil => "nil".to_string(),
                    other => text(other),
                })
                .collect(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shown,
        [
            vec!["17", "T", "true", "2", "4"],
            vec!["1", "T", "true", "0", "nil"]
        ]
    );

    // users: entered once, in their partition's index
    let u5 = "meetingd:{p5}:users";
    let added = fcall(&mut conn, "meet_user_index", &[u5], &["21"]).await;
    assert_eq!(added, Ok(Value::Int(1)));
    let added = fcall(&mut conn, "meet_user_index", &[u5], &["5"]).await;
    assert_eq!(added, Ok(Value::Int(1)));
    let again = fcall(&mut conn, "meet_user_index", &[u5], &["5"]).await;
    assert_eq!(again, Ok(Value::Int(0)));
    let page = fcall(&mut conn, "meet_ids", &[u5], &[]).await.expect("ids");
    assert_eq!(ids(&page, "ids"), ["5", "21"]);

    let before = redis.digest().await;
    let bad: [(&str, &str, &[&str]); 13] = [
        ("meet_user_index", "meetingd:{p4}:users", &["5"]),
        ("meet_user_index", u5, &["0"]),
        ("meet_user_index", u5, &[]),
        ("meet_user_index", "meetingd:{p16}:users", &["16"]),
        ("meet_user_index", "meetingd:{p5}:meetings", &["5"]),
        ("meet_ids", "meetingd:{p1}:due", &[]),
        ("meet_ids", "meetingd:{p16}:meetings", &[]),
        ("meet_ids", p1, &["x"]),
        ("meet_ids", p1, &["", "1001"]),
        ("meet_meetings", p1, &["2"]),
        ("meet_meetings", p1, &[]),
        ("meet_meetings", "meetingd:{p1}:users", &["1"]),
        (
            "meet_meeting_set",
            "meetingd:{p1}:meeting:65",
            &["T", "", "maybe"],
        ),
    ];
    for (function, key, args) in bad {
        let result = fcall(&mut conn, function, &[key], args).await;
        assert_eq!(code_of(result), "BAD_REQUEST", "{function} {key} {args:?}");
    }
    assert_eq!(redis.digest().await, before, "a refused call wrote nothing");
}

/// The ids of a page's rows, and its `next`.
fn page(c: &mut Client, line: &str, list: &str) -> (Vec<u64>, Option<u64>) {
    let result = c.ok(line);
    let rows = result[list]
        .as_array()
        .unwrap_or_else(|| panic!("{line}: {result}"))
        .iter()
        .map(|row| row["id"].as_u64().expect("an id"))
        .collect();
    (rows, result["next"].as_u64())
}

/// Every id of a listing, page by page of `limit`; and the pages' lengths.
fn all_pages(c: &mut Client, command: &str, limit: u64) -> (Vec<u64>, Vec<usize>) {
    let (mut all, mut lengths) = (Vec::new(), Vec::new());
    let mut line = format!("{command} LIMIT {limit}");
    loop {
        let (rows, next) = page(c, &line, &command.to_ascii_lowercase());
        lengths.push(rows.len());
        all.extend(rows);
        match next {
            Some(after) => line = format!("{command} AFTER {after} LIMIT {limit}"),
            None => return (all, lengths),
        }
    }
}

#[test]
fn listings_page_by_id_across_partitions() {
    listings_on(&Backend::single());
}

/// MEETINGS and USERS over the socket (64 partitions): pages in id order
/// across partitions, AFTER, LIMIT and `next`; bad pages refused; a USER
/// SET that failed after entering the user in the index is not listed
/// until it is sent again.
pub fn listings_on(backend: &Backend) {
    let daemon = backend.daemon(&[]);
    let mut c = daemon.client();
    let users: [u64; 9] = [3, 64, 65, 128, 1000, 7, 129, 2, 9_007_199_254_740_991];
    for u in users {
        c.ok(&format!(
            "USER SET {u} name \"User {u}\" age 30 gender x email u{u}@example.com"
        ));
    }
    let meetings: [u64; 7] = [5, 69, 133, 1, 70, 6, 500];
    for m in meetings {
        c.ok(&format!(
            "MEETING SET {m} title \"Meeting {m}\" description \"\" public {}",
            m != 70
        ));
    }
    c.ok(&format!("INSTANCE SET 69 1 from {} to {}", at(-5), at(55)));
    c.ok(&format!(
        "INSTANCE SET 69 2 from {} to {}",
        at(100),
        at(160)
    ));
    c.ok(&format!("INSTANCE SET 5 1 from {} to {}", at(100), at(160)));
    c.ok("TICK");

    let mut sorted = meetings.to_vec();
    sorted.sort_unstable();
    assert_eq!(
        page(&mut c, "MEETINGS LIMIT 3", "meetings"),
        (vec![1, 5, 6], Some(6))
    );
    assert_eq!(
        page(&mut c, "MEETINGS AFTER 6 LIMIT 3", "meetings"),
        (vec![69, 70, 133], Some(133))
    );
    assert_eq!(
        page(&mut c, "meetings limit 3 after 133", "meetings"),
        (vec![500], None)
    );
    assert_eq!(page(&mut c, "MEETINGS", "meetings"), (sorted.clone(), None));
    assert_eq!(
        page(&mut c, "MEETINGS AFTER 500", "meetings"),
        (vec![], None)
    );
    assert_eq!(all_pages(&mut c, "MEETINGS", 2).0, sorted);
    let rows = c.ok("MEETINGS AFTER 5 LIMIT 1");
    assert_eq!(
        rows,
        serde_json::json!({"meetings": [{"id": 6, "title": "Meeting 6", "public": true,
            "instances": 0, "running": null}], "next": 6})
    );
    let row = &c.ok("MEETINGS AFTER 6 LIMIT 2")["meetings"];
    assert_eq!(row[0]["instances"], 2, "{row}");
    assert_eq!(row[0]["running"], 1, "{row}");
    assert_eq!(row[1]["public"], false, "{row}");
    assert_eq!(c.ok("MEETINGS LIMIT 1")["meetings"][0]["id"], 1);
    let five = &c.ok("MEETINGS AFTER 1 LIMIT 1")["meetings"][0];
    assert_eq!(
        (&five["instances"], &five["running"]),
        (&Json::from(1), &Json::Null)
    );

    let mut sorted_users = users.to_vec();
    sorted_users.sort_unstable();
    let (listed, lengths) = all_pages(&mut c, "USERS", 4);
    assert_eq!(listed, sorted_users);
    assert_eq!(lengths, [4, 4, 1]);
    let user = &c.ok("USERS AFTER 64 LIMIT 1")["users"][0];
    assert_eq!(
        *user,
        serde_json::json!({"id": 65, "name": "User 65", "age": 30, "gender": "x",
            "email": "u65@example.com"})
    );

    for bad in [
        "MEETINGS LIMIT 0",
        "MEETINGS LIMIT 1001",
        "MEETINGS AFTER 0",
        "MEETINGS AFTER x",
        "MEETINGS 5",
        "USERS AFTER 9007199254740992",
        "USERS LIMIT 2 LIMIT 3",
        "USERS FROM 3",
    ] {
        assert_eq!(c.error_code(bad), "bad_request", "{bad}");
    }

    // USER SET 12 fails after entering 12 in the index (its key is of
    // another type): USERS skips it; sent again, it is listed
    backend.cli(&["SET", "meetingd:{u12}:user", "not a hash"]);
    assert_eq!(
        c.error_code("USER SET 12 name Twelve age 12 gender x email t@example.com"),
        "internal"
    );
    let entered = backend.cli(&["ZSCORE", "meetingd:{p12}:users", "12"]);
    assert_eq!(
        entered.trim(),
        "12",
        "entered in the index before the write"
    );
    backend.cli(&["DEL", "meetingd:{u12}:user"]);
    assert_eq!(
        page(&mut c, "USERS AFTER 7 LIMIT 2", "users"),
        (vec![64], Some(64)),
        "an index entry without a user is skipped (the page is one short)"
    );
    c.ok("USER SET 12 name Twelve age 12 gender x email t@example.com");
    assert_eq!(
        page(&mut c, "USERS AFTER 7 LIMIT 2", "users"),
        (vec![12, 64], Some(64))
    );
}

#[test]
fn a_page_stops_at_the_reply_limit() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_LIMITS__REPLY_BYTES", "400")]);
    let mut c = daemon.client();
    let title = "t".repeat(100);
    for m in 1..=10 {
        c.ok(&format!(
            "MEETING SET {m} title {title} description \"\" public true"
        ));
    }
    let (listed, lengths) = all_pages(&mut c, "MEETINGS", 1000);
    assert_eq!(listed, (1..=10).collect::<Vec<u64>>());
    assert!(lengths.len() > 1, "cut into pages: {lengths:?}");
    for line in ["MEETINGS", "MEETINGS AFTER 3"] {
        let reply = serde_json::to_string(&c.ok(line)).expect("JSON");
        assert!(reply.len() <= 400, "{line}: {} bytes", reply.len());
    }
}

/// Users 1..=1200 and meetings 1..=30 written as meetingd 0.2 wrote them
/// (no index), on 64 partitions.
fn store_of_0_2(redis: &Redis) {
    let mut lines = String::from("SET meetingd:{layout}:partitions 64\n");
    for u in 1..=1200 {
        lines.push_str(&format!(
            "HSET meetingd:{{u{u}}}:user name U{u} age 20 gender x email u{u}@example.com\n"
        ));
    }
    for m in 1..=30 {
        lines.push_str(&format!(
            "HSET meetingd:{{p{}}}:meeting:{m} title M{m} description d public true\n",
            m % 64
        ));
    }
    let path = redis.dir().join("0.2.txt");
    std::fs::write(&path, lines).expect("write the commands");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -s {} < {}",
            redis.socket().display(),
            path.display()
        ))
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "{out:?}");
}

/// Every member of the 64 partitions' indexes, as redis-cli shows them.
fn indexes(redis: &Redis) -> Vec<String> {
    (0..64)
        .flat_map(|p| [Keys::meetings(p), Keys::users(p)])
        .map(|key| redis.cli(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]))
        .collect()
}

const BUILT: &str = "the listings' indexes are built";

#[test]
fn a_store_without_indexes_is_indexed_at_start_up_once_by_any_daemon() {
    let redis = Redis::start();
    store_of_0_2(&redis);
    let (code, out) = redis.check();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("30 meetings and 1200 users are not in the listings' indexes yet"),
        "{out}"
    );

    let daemon = Daemon::start(&redis, &[]);
    wait_until("the backfill", Duration::from_secs(30), || {
        daemon.log().contains(BUILT)
    });
    assert!(
        daemon.log().contains("meetings=30 users=1200"),
        "{}",
        daemon.log()
    );
    let mut c = daemon.client();
    let (users, lengths) = all_pages(&mut c, "USERS", 1000);
    assert_eq!(users, (1..=1200).collect::<Vec<u64>>());
    assert_eq!(lengths, [1000, 200]);
    assert_eq!(
        all_pages(&mut c, "MEETINGS", 7).0,
        (1..=30).collect::<Vec<u64>>()
    );
    assert_eq!(redis.cli(&["GET", "meetingd:{layout}:indexed"]).trim(), "1");
    redis.assert_consistent();

    // another daemon: the flag says it is done
    let second = Daemon::start(&redis, &[]);
    second.client().ok("PING");
    drop(second);
    // with the flag gone, a daemon indexes again and changes nothing else
    let before = indexes(&redis);
    redis.cli(&["DEL", "meetingd:{layout}:indexed"]);
    let third = Daemon::start(&redis, &[]);
    wait_until("the backfill again", Duration::from_secs(30), || {
        third.log().contains(BUILT)
    });
    assert_eq!(indexes(&redis), before, "indexing twice is indexing once");
    redis.assert_consistent();
    drop(daemon);
    drop(third);
}

#[tokio::test]
async fn repartition_rebuilds_the_indexes() {
    let redis = Redis::start();
    let (store, _clock) = redis.store_with(t0(), |o| o.partitions = Some(16)).await;
    crate::harness::users(&store, 1..=40).await;
    for m in 1..=40 {
        let meeting = Meeting {
            id: m,
            title: format!("m{m}"),
            description: String::new(),
            public: true,
        };
        store.meeting_set(&meeting).await.expect("meeting");
    }
    let meetings = store.meetings_page(None, 1000).await.expect("meetings");
    let users = store.users_page(None, 1000).await.expect("users");
    assert_eq!((meetings.items.len(), users.items.len()), (40, 40));
    drop(store);

    let (code, out) = crate::harness::meetingd_run(
        "repartition",
        &["--redis", &redis.url(), "--partitions", "6"],
    );
    assert_eq!(code, 0, "{out}");
    for p in 6..16 {
        for index in [Keys::meetings(p), Keys::users(p)] {
            assert_eq!(redis.cli(&["EXISTS", &index]).trim(), "0", "{index}");
        }
    }
    let (store, _clock) = redis.store(t0()).await;
    assert_eq!(store.keys().partitions(), 6);
    assert_eq!(
        store.meetings_page(None, 1000).await.expect("meetings"),
        meetings
    );
    assert_eq!(store.users_page(None, 1000).await.expect("users"), users);
    let page = store.users_page(Some(10), 5).await.expect("a page");
    let ids: Vec<u64> = page.items.iter().map(|u| u.id).collect();
    assert_eq!((ids, page.next), (vec![11, 12, 13, 14, 15], Some(15)));
    redis.assert_consistent();
    // a user written now lands in its partition of 6
    crate::harness::users(&store, [41]).await;
    assert_eq!(
        redis.cli(&["ZSCORE", &Keys::users(41 % 6), "41"]).trim(),
        "41"
    );
    redis.assert_consistent();
}

#[tokio::test]
async fn check_verifies_the_indexes() {
    let redis = Redis::start();
    let (store, _clock) = redis.store(t0()).await;
    crate::harness::users(&store, 1..=3).await;
    crate::harness::public_meeting(&store, 1).await;
    crate::harness::public_meeting(&store, 2).await;
    assert_eq!(store.check().await.expect("check"), Vec::<String>::new());
    redis.cli(&["SET", "meetingd:{layout}:indexed", "1"]);
    let mut conn = redis.conn().await;
    let damage = [
        // a user out of its index, and an entry without a user
        vec!["ZREM", "meetingd:{p2}:users", "2"],
        vec!["ZADD", "meetingd:{p9}:users", "9", "9"],
        // a meeting out of its index; a member of another partition
        vec!["ZREM", "meetingd:{p1}:meetings", "1"],
        vec!["ZADD", "meetingd:{p3}:meetings", "2", "2"],
    ];
    for cmd in &damage {
        let _: Value = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query_async(&mut conn)
            .await
            .expect("damage");
    }
    let problems = store.check().await.expect("check");
    let expected = [
        "user 2: missing from meetingd:{p2}:users",
        "meetingd:{p9}:users: user 9 is listed but does not exist",
        "meeting 1: missing from meetingd:{p1}:meetings",
        "meetingd:{p3}:meetings: a member \"2\"",
    ];
    for needle in expected {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    // keys of the layout: not reported as unknown
    assert!(
        !problems.iter().any(|p| p.contains("not a key")),
        "{problems:#?}"
    );
}

#[test]
fn meetingctl_lists_meetings_and_users() {
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[]);
    let mut c = daemon.client();
    for u in [1, 2, 70] {
        c.ok(&format!(
            "USER SET {u} name N{u} age 40 gender x email n{u}@example.com"
        ));
    }
    for m in [3, 4] {
        c.ok(&format!(
            "MEETING SET {m} title Title{m} description \"\" public true"
        ));
    }
    let run = meetingctl(daemon.socket(), &["meetings", "--limit", "1"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("next: 3"), "{}", run.stdout);
    let header: Vec<&str> = run
        .stdout
        .lines()
        .find(|l| l.starts_with("ID"))
        .unwrap_or_else(|| panic!("a table: {}", run.stdout))
        .split_whitespace()
        .collect();
    assert_eq!(header, ["ID", "TITLE", "PUBLIC", "INSTANCES", "RUNNING"]);
    assert!(run.stdout.contains("Title3"), "{}", run.stdout);
    assert!(!run.stdout.contains("Title4"), "{}", run.stdout);
    let run = meetingctl(daemon.socket(), &["meetings", "--after", "3"]);
    assert!(
        run.stdout.contains("Title4") && run.stdout.contains("next: -"),
        "{}",
        run.stdout
    );

    let run = meetingctl(
        daemon.socket(),
        &["--json", "users", "--after", "1", "--limit", "5"],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let reply: Json = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
    let listed: Vec<u64> = reply["result"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_u64())
        .collect();
    assert_eq!(
        (listed, &reply["result"]["next"]),
        (vec![2, 70], &Json::Null)
    );
    let run = meetingctl(daemon.socket(), &["users", "--limit", "0"]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    assert!(run.stderr.contains("bad_request"), "{}", run.stderr);
}

#[tokio::test]
async fn a_bulk_load_indexes_its_users_and_one_full_partition_has_a_next() {
    let redis = Redis::start();
    let (store, _clock) = redis.store_with(t0(), |o| o.partitions = Some(16)).await;
    let user = |id: u64| meetingd::store::User {
        id,
        name: format!("U{id}"),
        age: 20,
        gender: "x".into(),
        email: format!("u{id}@example.com"),
    };
    let loads = [17, 1, 33]
        .into_iter()
        .flat_map(|id| {
            [
                Load::User(user(id)),
                Load::Meeting(Meeting {
                    id,
                    title: format!("m{id}"),
                    description: String::new(),
                    public: true,
                }),
            ]
        })
        .collect::<Vec<_>>();
    let report = store.load(loads).await.expect("load");
    assert_eq!((report.written, report.refused), (6, 0));
    // every id is of partition 1: the only partition with more says so
    let page = store.users_page(None, 1).await.expect("users");
    let ids: Vec<u64> = page.items.iter().map(|u| u.id).collect();
    assert_eq!((ids, page.next), (vec![1], Some(1)));
    let page = store.users_page(Some(1), 2).await.expect("users");
    let ids: Vec<u64> = page.items.iter().map(|u| u.id).collect();
    assert_eq!((ids, page.next), (vec![17, 33], None));
    let page = store.meetings_page(Some(1), 1).await.expect("meetings");
    let ids: Vec<u64> = page.items.iter().map(|m| m.id).collect();
    assert_eq!((ids, page.next), (vec![17], Some(17)));
    redis.assert_consistent();
}
