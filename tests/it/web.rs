//! The HTTP listener and the web view (issue 26), against a real daemon on
//! a real Redis, and in a real browser: Debian's chromium, headless, driven
//! by chromedriver over WebDriver (fantoccini).
//!
//! Without chromium and chromedriver the browser tests fail, saying how to
//! install them, unless `MEETINGD_SKIP_BROWSER=1` says to skip them; then
//! each prints that it skipped. `MEETINGD_SCREENSHOTS=<dir>` keeps the
//! demo's screenshots there (README.md's pictures come from
//! `MEETINGD_SCREENSHOTS=docs/img cargo test --test it web::screenshots`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Driver, ClientBuilder, Locator};
use meetingd::clock::ManualClock;
use meetingd::protocol::{format_time, request_line};
use meetingd::store::{InstanceId, InstanceRef, Meeting, User};
use meetingd::web::timeline::{LABELS, PLOT};
use serde_json::json;

use crate::harness::{Client, Daemon, MIN, Redis, free_port, meetingctl, t0, wait_until};

/// A token long enough for `http.token`.
const TOKEN: &str = "web-test-token-0123456789";

/// A time `minutes` from `t0`, as requests write it.
fn at(minutes: i64) -> String {
    format_time(t0() + minutes * MIN)
}

/// A request line of `words`, quoted as needed (no newline).
fn line(words: &[&str]) -> String {
    request_line(words).trim_end().to_string()
}

/// A daemon on `redis` with the HTTP listener on a port of the kernel's
/// choosing (`127.0.0.1:0`), and the address it took (from its log).
pub(crate) fn daemon_with_http(redis: &Redis, extra: &[(&str, &str)]) -> (Daemon, String) {
    let mut env = vec![("MEETINGD_HTTP__LISTEN", "127.0.0.1:0")];
    env.extend_from_slice(extra);
    let daemon = Daemon::start(redis, &env);
    let mut address = String::new();
    wait_until(
        "the HTTP listener's address in the log",
        Duration::from_secs(10),
        || {
            let log = daemon.log();
            match log.split("url=http://").nth(1) {
                Some(rest) => {
                    address = rest.split('/').next().unwrap_or_default().to_string();
                    true
                }
                None => false,
            }
        },
    );
    (daemon, address)
}

/// One HTTP/1.1 response, read to its end.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Response {
    /// A header's value (the first), by lower-case name.
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
        })
    }
}

/// Send a request (`Connection: close`) and read the response; for a
/// stream (server-sent events) only its head.
fn http(address: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut stream = TcpStream::connect(address).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading the response: {e}"),
        }
        let text = String::from_utf8_lossy(&raw);
        if text.contains("text/event-stream") && text.contains("\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

pub(crate) fn get(address: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    http(address, "GET", path, headers, "")
}

/// Users 1..3, public meeting 1 running from 10 min ago for an hour.
fn seed(c: &mut Client) {
    c.ok("USER SET 1 name Ada age 36 gender female email ada@example.com");
    c.ok("USER SET 2 name Bob age 41 gender male email bob@example.com");
    c.ok(r#"USER SET 3 name "Cy Young" age 29 gender other email cy@example.com"#);
    c.ok(r#"MEETING SET 1 title "Town hall" description "all hands" public true"#);
    c.ok(&format!("INSTANCE SET 1 1 from {} to {}", at(-10), at(50)));
    c.ok("TICK");
}

#[test]
fn the_listener_serves_metrics_pages_and_security_headers_on_loopback() {
    let redis = Redis::start();
    let (daemon, address) = daemon_with_http(&redis, &[]);
    let mut c = daemon.client();
    seed(&mut c);
    c.ok("JOIN 1 1");
    c.ok("POST 1 1 hello");
    let metrics = get(&address, "/metrics", &[]);
    assert_eq!(metrics.status, 200, "{}", metrics.head);
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == r#"meetingd_requests_total{command="JOIN"} 1"#),
        "{}",
        metrics.body
    );
    for path in [
        "/",
        "/m/1",
        "/i/1/1",
        "/i/1/1?events_after=0-0&chat_after=0-0",
    ] {
        let page = get(&address, path, &[]);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_eq!(
            page.header("content-security-policy").as_deref(),
            Some(meetingd::web::CSP),
            "{path}"
        );
        assert_eq!(
            page.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert!(meetingd::web::CSP.contains("frame-ancestors 'none'"));
        for elsewhere in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "url("] {
            assert!(
                !page.body.contains(elsewhere),
                "{path}: nothing from elsewhere: {}",
                page.body
            );
        }
        assert!(!page.body.contains("<script>"), "{path}: no inline script");
        assert!(!page.body.contains(" style="), "{path}: no inline style");
    }
    // without a token e-mails are masked
    let instance = get(&address, "/i/1/1", &[]).body;
    assert!(
        instance.contains("<p class=\"source\" id=\"source\">Read from Redis.</p>"),
        "a running instance is read from Redis: {instance}"
    );
    assert!(instance.contains("a***@example.com"), "{instance}");
    assert!(!instance.contains("ada@example.com"), "{instance}");
    let svg = get(&address, "/i/1/1/timeline.svg", &[]);
    assert_eq!(
        svg.header("content-type").as_deref(),
        Some("image/svg+xml; charset=utf-8")
    );
    assert!(svg.body.contains("data-user=\"1\""), "{}", svg.body);
    let script = get(&address, "/static/app.js", &[]);
    assert_eq!(script.status, 200);
    assert!(script.body.contains("EventSource"));
    let stream = get(&address, "/live/active", &[]);
    assert_eq!(
        stream.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(get(&address, "/i/1/9", &[]).status, 404);
    assert_eq!(get(&address, "/i/0/1", &[]).status, 404);
    assert_eq!(get(&address, "/m/77", &[]).status, 404);
    assert_eq!(
        get(&address, "/i/1/1?events_after=nonsense", &[]).status,
        400
    );
    assert_eq!(get(&address, "/live/i/1/1?since=nonsense", &[]).status, 400);
    assert_eq!(get(&address, "/nowhere", &[]).status, 404);
    // read-only: nothing but the login form takes a POST
    assert_eq!(http(&address, "POST", "/", &[], "").status, 405);
    assert_eq!(http(&address, "DELETE", "/i/1/1", &[], "").status, 405);
}

#[test]
fn a_token_guards_every_page_and_the_login_form_sets_a_strict_cookie() {
    let redis = Redis::start();
    let (daemon, address) = daemon_with_http(&redis, &[("MEETINGD_HTTP__TOKEN", TOKEN)]);
    seed(&mut daemon.client());
    let bearer = format!("Bearer {TOKEN}");
    let cookie = format!("meetingd_token={TOKEN}");
    for path in [
        "/",
        "/m/1",
        "/i/1/1",
        "/i/1/1/timeline.svg",
        "/metrics",
        "/live/active",
    ] {
        let refused = get(&address, path, &[]);
        assert_eq!(refused.status, 401, "{path} without the token");
        assert!(
            !refused.body.contains("Town hall"),
            "{path}: {}",
            refused.body
        );
        let wrong = get(
            &address,
            path,
            &[("Authorization", "Bearer not-the-token-at-all")],
        );
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        assert_eq!(
            get(&address, path, &[("Authorization", &bearer)]).status,
            200,
            "{path}"
        );
        assert_eq!(
            get(&address, path, &[("Cookie", &cookie)]).status,
            200,
            "{path}"
        );
    }
    // a page asked without the token shows the login form
    let form = get(&address, "/i/1/1", &[]);
    assert!(form.body.contains("name=\"token\""), "{}", form.body);
    assert_eq!(get(&address, "/static/style.css", &[]).status, 200);
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    let wrong = http(
        &address,
        "POST",
        "/login",
        &[form_type],
        "token=nope&next=%2Fi%2F1%2F1",
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("set-cookie"), None);
    let body = format!("token={TOKEN}&next=%2Fi%2F1%2F1");
    let right = http(&address, "POST", "/login", &[form_type], &body);
    assert_eq!(right.status, 303, "{}", right.head);
    assert_eq!(right.header("location").as_deref(), Some("/i/1/1"));
    let set = right.header("set-cookie").expect("a cookie");
    assert!(set.starts_with(&cookie), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    // never sent elsewhere than here
    let away = http(
        &address,
        "POST",
        "/login",
        &[form_type],
        &format!("token={TOKEN}&next=%2F%2Fevil.example"),
    );
    assert_eq!(away.header("location").as_deref(), Some("/"));
    // with the token, e-mails show in full
    let page = get(&address, "/i/1/1", &[("Cookie", &cookie)]);
    assert!(page.body.contains("Town hall"));
    let mut c = daemon.client();
    c.ok("JOIN 1 1");
    let page = get(&address, "/i/1/1", &[("Cookie", &cookie)]);
    assert!(page.body.contains("ada@example.com"), "{}", page.body);
}

#[test]
fn an_address_beyond_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("m.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .args(["serve", "--redis", "redis://127.0.0.1:1", "--socket"])
        .arg(&socket)
        .env("MEETINGD_HTTP__LISTEN", "0.0.0.0:0")
        .env_remove("MEETINGD_HTTP__TOKEN")
        .output()
        .expect("meetingd runs");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("http.listen"), "{said}");
    assert!(said.contains("http.token"), "{said}");
    assert!(!socket.exists(), "it did not start");
    // the deprecated stats.prometheus is held to the same rule
    let out = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .args(["check-config"])
        .env("MEETINGD_STATS__PROMETHEUS", "0.0.0.0:9464")
        .output()
        .expect("meetingd runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_deprecated_stats_prometheus_still_starts_the_listener() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let redis = Redis::start();
    let daemon = Daemon::start(&redis, &[("MEETINGD_STATS__PROMETHEUS", &address)]);
    assert!(
        daemon.log().contains("stats.prometheus is deprecated"),
        "{}",
        daemon.log()
    );
    assert_eq!(get(&address, "/metrics", &[]).status, 200);
    assert_eq!(get(&address, "/", &[]).status, 200);
}

/// A headless chromium driven through chromedriver, both stopped (their
/// process group) when dropped.
struct Browser {
    driver: Driver,
    chromedriver: Child,
    _profile: tempfile::TempDir,
}

/// Where a program is: `$VAR` (if it exists), else the first of `paths`
/// that exists.
fn program(var: &str, paths: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

impl Browser {
    /// Start one; `None` (after saying so) when chromium is missing and
    /// `MEETINGD_SKIP_BROWSER=1` allows skipping; a failed test otherwise.
    async fn start(test: &str) -> Option<Browser> {
        let chromium = program(
            "MEETINGD_CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let chromedriver = program("MEETINGD_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
            if std::env::var("MEETINGD_SKIP_BROWSER").as_deref() == Ok("1") {
                // straight to file descriptor 2, past the test harness'
                // capture: a skip is never silent
                let said = format!(
                    "SKIPPED {test}: no chromium or chromedriver, and MEETINGD_SKIP_BROWSER=1\n"
                );
                // SAFETY: fd 2 is this process's standard error, open for its
                // whole life; ManuallyDrop keeps it from being closed here.
                let mut stderr = std::mem::ManuallyDrop::new(unsafe {
                    <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(2)
                });
                let _ = stderr.write_all(said.as_bytes());
                return None;
            }
            panic!(
                "{test} needs Debian's chromium and chromedriver (apt-get install chromium \
                 chromium-driver; .ci/run installs them); MEETINGD_SKIP_BROWSER=1 skips the \
                 browser tests where they cannot be installed"
            );
        };
        let port = free_port();
        let profile = tempfile::tempdir().expect("a profile directory");
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        let mut browser_guard = Reaper(Some(child));
        let url = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let driver = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a chromium session");
        Some(Browser {
            driver,
            chromedriver: browser_guard.0.take().expect("the child"),
            _profile: profile,
        })
    }

    /// End the session (chromium quits), then chromedriver.
    async fn stop(self) {
        let _ = self.driver.clone().close().await;
        // dropping it stops chromedriver's group
    }

    /// Load the page `path` of the web view at `address`.
    async fn goto(&self, address: &str, path: &str) {
        self.driver
            .goto(&format!("http://{address}{path}"))
            .await
            .unwrap_or_else(|e| panic!("the page {path}: {e}"));
    }

    /// Wait until the page's stream of live changes is open.
    async fn wait_live(&self) {
        self.wait_text("#live-status", "the stream to open", |t| t.contains("live"))
            .await;
    }

    /// The elements `css` selects.
    async fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.driver
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// The text of the first element `css` selects ("" when none).
    async fn text(&self, css: &str) -> String {
        match self.driver.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Wait (a bounded poll of the DOM, 10 s at most) until `check` holds
    /// of the text of `css`.
    async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if check(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {css} shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Run `script` in the page.
    async fn run(&self, script: &str) -> serde_json::Value {
        self.driver
            .execute(script, Vec::new())
            .await
            .expect("the script runs")
    }
}

/// Kills a process group we started, when dropped.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: signalling the process group of a child we started
            // in a group of its own (chromedriver and its chromium).
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: as in Reaper: the group of the chromedriver we started.
        unsafe {
            libc::kill(-(self.chromedriver.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.chromedriver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_pages_show_a_join_without_a_reload() {
    let Some(browser) = Browser::start("the_live_pages_show_a_join_without_a_reload").await else {
        return;
    };
    let redis = Redis::start();
    let (daemon, address) = daemon_with_http(&redis, &[]);
    let mut c = daemon.client();
    seed(&mut c);
    let b = &browser;
    b.goto(&address, "/").await;
    b.wait_text(
        "#active-table tr[data-instance='1/1'] td.count",
        "the list",
        |t| t == "0",
    )
    .await;
    b.wait_live().await;
    // a mark in the page: it survives only if the page is not loaded again
    b.run("window.__same_page = 'yes'; return null;").await;
    c.ok("JOIN 1 1");
    b.wait_text(
        "#active-table tr[data-instance='1/1'] td.count",
        "the join on the list",
        |t| t == "1",
    )
    .await;
    assert_eq!(
        b.run("return window.__same_page || null;").await,
        json!("yes")
    );

    // the instance page: participants, timeline, event log and chat
    b.goto(&address, "/i/1/1").await;
    b.wait_live().await;
    b.run("window.__same_page = 'still'; return null;").await;
    c.ok("JOIN 2 1");
    c.ok(&line(&["POST", "2", "1", "hello from Bob"]));
    b.wait_text("#participants", "Bob among the participants", |t| {
        t.contains("Bob")
    })
    .await;
    b.wait_text("#chat tbody", "Bob's message", |t| {
        t.contains("hello from Bob")
    })
    .await;
    b.wait_text("#events tbody", "Bob's join in the log", |t| {
        t.contains("Bob")
    })
    .await;
    let bars = b.find_all("#timeline rect.bar[data-user='2']").await;
    assert_eq!(bars.len(), 1, "a bar for Bob, drawn live");
    assert_eq!(
        bars[0].attr("class").await.expect("class").as_deref(),
        Some("bar open")
    );
    c.ok("LEAVE 2 1");
    b.wait_text("#participants", "Bob gone", |t| !t.contains("Bob"))
        .await;
    assert_eq!(
        b.run("return window.__same_page || null;").await,
        json!("still")
    );
    browser.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_has_bars_where_the_events_say() {
    let Some(browser) = Browser::start("the_timeline_has_bars_where_the_events_say").await else {
        return;
    };
    let redis = Redis::start();
    // an instance made by hand, two hours ago, on a clock of the test's own
    let from = t0() - 180 * MIN;
    let to = from + 120 * MIN;
    let (store, clock) = redis.store(from - MIN).await;
    retro_cast(&store).await;
    let instance = InstanceId::new(5, 1);
    store
        .instance_set(instance, from, to)
        .await
        .expect("instance");
    let target = InstanceRef::Exact(instance);
    retro_script(&store, &clock, target, from, async |_| {}).await;
    clock.set(to + MIN);
    store.tick(to + MIN).await.expect("the tick ends it");
    let expected: Vec<(u64, i64, i64)> =
        vec![(1, 10, 40), (1, 60, 110), (2, 20, 90), (3, 100, 120)];
    let (daemon, address) = daemon_with_http(&redis, &[]);
    let b = &browser;
    b.goto(&address, "/i/5/1").await;
    let bars = b.find_all("#timeline rect.bar").await;
    let mut drawn = Vec::new();
    for bar in &bars {
        let number =
            |v: Option<String>| -> f64 { v.and_then(|v| v.parse().ok()).expect("a number") };
        let user: u64 = bar
            .attr("data-user")
            .await
            .expect("attr")
            .and_then(|u| u.parse().ok())
            .expect("user");
        let x = number(bar.attr("x").await.expect("x"));
        let width = number(bar.attr("width").await.expect("width"));
        drawn.push((user, x, width));
    }
    drawn.sort_by(|a, b| (a.0, a.1).partial_cmp(&(b.0, b.1)).expect("numbers"));
    let place = |minute: i64| LABELS + minute as f64 / 120.0 * PLOT;
    assert_eq!(drawn.len(), expected.len(), "{drawn:?}");
    for ((user, x, width), (want_user, start, end)) in drawn.iter().zip(&expected) {
        assert_eq!(user, want_user, "{drawn:?}");
        assert!(
            (x - place(*start)).abs() < 0.06,
            "user {user}: x {x} for minute {start}"
        );
        assert!(
            (x + width - place(*end)).abs() < 0.11,
            "user {user}: end {} for minute {end}",
            x + width
        );
    }
    // the window's start and end are marked where the bars' scale says
    let start = b
        .driver
        .find(Locator::Css("#timeline line.start"))
        .await
        .expect("start");
    let end = b
        .driver
        .find(Locator::Css("#timeline line.end"))
        .await
        .expect("end");
    assert_eq!(
        start.attr("x1").await.expect("x1").as_deref(),
        Some(format!("{}", place(0)).as_str())
    );
    let end_x: f64 = end
        .attr("x1")
        .await
        .expect("x1")
        .and_then(|v| v.parse().ok())
        .expect("x");
    assert!((end_x - place(120)).abs() < 0.06);
    // rows by first join, each named
    let names = b.text("#timeline svg").await;
    assert!(
        names.contains("Ada #1") && names.contains("Cy #3"),
        "{names}"
    );
    // meetingctl draws the same picture
    let run = meetingctl(daemon.socket(), &["report", "5/1", "--svg"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("<?xml"), "{}", run.stdout);
    let page_svg = get(&address, "/i/5/1/timeline.svg", &[]).body;
    let bars_of = |svg: &str| -> Vec<String> {
        svg.split("<rect class=\"bar")
            .skip(1)
            .map(|r| r.split('>').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(bars_of(&run.stdout), bars_of(&page_svg));
    assert_eq!(bars_of(&page_svg).len(), 4);
    browser.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_users_write_shows_literally_and_never_runs() {
    let Some(browser) = Browser::start("what_users_write_shows_literally_and_never_runs").await
    else {
        return;
    };
    let redis = Redis::start();
    // with a token, so that e-mails show in full (and go through escaping)
    let (daemon, address) = daemon_with_http(&redis, &[("MEETINGD_HTTP__TOKEN", TOKEN)]);
    let mut c = daemon.client();
    let name = "<script>window.__pwned='name'</script><b>Mallory</b>";
    let email = "<img/src=x/onerror=window.__pwned='email'>@example.com";
    let title = "<img src=x onerror=\"window.__pwned='title'\">Town & <i>hall</i>";
    let description = "</div><script>window.__pwned='description'</script>";
    let text =
        "<script>window.__pwned='chat'</script><svg onload=window.__pwned='svg'> & \"quotes\"";
    c.ok(&line(&[
        "USER", "SET", "1", "name", name, "age", "30", "gender", "<u>x</u>", "email", email,
    ]));
    c.ok(&line(&[
        "MEETING",
        "SET",
        "1",
        "title",
        title,
        "description",
        description,
        "public",
        "true",
    ]));
    c.ok(&format!("INSTANCE SET 1 1 from {} to {}", at(-10), at(50)));
    c.ok("TICK");
    c.ok("JOIN 1 1");
    c.ok(&line(&["POST", "1", "1", text]));
    let b = &browser;
    // log in through the form
    b.goto(&address, "/i/1/1").await;
    let form = b
        .driver
        .form(Locator::Css("form.login"))
        .await
        .expect("the login form");
    form.set_by_name("token", TOKEN)
        .await
        .expect("type the token");
    form.submit().await.expect("log in");
    b.wait_text("h1", "the instance page after logging in", |t| {
        t.contains("Town")
    })
    .await;
    for path in ["/", "/m/1", "/i/1/1", "/i/1/1?events_after=0-0"] {
        b.goto(&address, path).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            b.run("return window.__pwned || null;").await,
            json!(null),
            "{path}: a script ran"
        );
        let injected = b
            .run("return document.querySelectorAll('main script, main img, main b, main i, main u, main svg[onload]').length;")
            .await;
        assert_eq!(
            injected,
            json!(0),
            "{path}: markup from users became elements"
        );
    }
    // on the instance page each text shows as it was written
    b.goto(&address, "/i/1/1").await;
    b.wait_live().await;
    assert_eq!(b.text("h1").await, format!("{title} 1/1"));
    assert_eq!(b.text("p.lead").await, description);
    assert_eq!(b.text("#chat td.text").await, text);
    assert_eq!(b.text("#participants span.name").await, name);
    assert_eq!(
        b.text("#participants td.email").await,
        email.to_ascii_lowercase()
    );
    let svg_names = b
        .run("return document.querySelector('#timeline text.who title').textContent;")
        .await;
    assert_eq!(svg_names, json!(format!("{name} #1")));
    // and what arrives live is escaped as well
    c.ok(&line(&[
        "POST",
        "1",
        "1",
        "<script>window.__pwned='live'</script>later",
    ]));
    b.wait_text("#chat tbody", "the live message", |t| t.contains("later"))
        .await;
    assert_eq!(b.run("return window.__pwned || null;").await, json!(null));
    assert_eq!(
        b.run("return document.querySelectorAll('main script').length;")
            .await,
        json!(0)
    );
    browser.stop().await;
}

/// The demo's data (config/sample.json loaded as scripts/demo.sh loads
/// it), an hour of history written on a clock of the test's own, then a
/// screenshot of each page. Kept in `MEETINGD_SCREENSHOTS` when set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_the_demo() {
    let Some(browser) = Browser::start("screenshots_of_the_demo").await else {
        return;
    };
    let redis = Redis::start();
    let (daemon, address) = daemon_with_http(&redis, &[]);
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sample.json");
    let sample = sample.display().to_string();
    let loaded = meetingctl(
        daemon.socket(),
        &["import", "--shift-from", "2026-01-01T12:00:00Z", &sample],
    );
    assert_eq!(loaded.status, 0, "{}", loaded.stderr);
    let mut c = daemon.client();
    c.ok("TICK");
    // the town hall (1/2) opened half an hour ago: its first half hour of
    // comings and goings, written at their times
    let now = chrono::Utc::now().timestamp_millis();
    let (store, clock) = redis.store(now).await;
    let (town, _) = store
        .instance_get(InstanceRef::Exact(InstanceId::new(1, 2)))
        .await
        .expect("the town hall");
    let target = InstanceRef::Exact(town.id);
    let start = town.from;
    let history: [(i64, u64, &str); 9] = [
        (1, 1, "join"),
        (2, 2, "join"),
        (
            3,
            1,
            "post:Good morning, everyone. The agenda is in the description.",
        ),
        (4, 4, "join"),
        (6, 2, "post:Could we start with the release dates?"),
        (9, 4, "leave"),
        (12, 5, "join"),
        (15, 2, "leave"),
        (18, 5, "post:Thanks, that answers it for me."),
    ];
    for (minute, user, what) in history {
        let at = start + minute * 90_000;
        if at >= now {
            break;
        }
        clock.set(at);
        match what.split_once(':') {
            Some((_, text)) => {
                store.post(user, target, text, None).await.expect("post");
            }
            None if what == "join" => {
                store.join(user, target).await.expect("join");
            }
            None => {
                store.leave(user, target).await.expect("leave");
            }
        }
    }
    c.ok("JOIN 3 1");
    c.ok("JOIN 3 2");
    c.ok("JOIN 1 2");
    c.ok(&line(&[
        "POST",
        "3",
        "1",
        "Joining from the compiler group for a minute.",
    ]));
    let keep = std::env::var_os("MEETINGD_SCREENSHOTS").map(PathBuf::from);
    let scratch = tempfile::tempdir().expect("a directory");
    let dir = keep.clone().unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("the screenshots' directory");
    let b = &browser;
    for (file, path, ready) in [
        ("web-live.png", "/", "#live-status"),
        ("web-instance.png", "/i/1/2", "#live-status"),
        ("web-meeting.png", "/m/2", "h1"),
    ] {
        b.driver.set_window_size(1280, 600).await.expect("resize");
        b.goto(&address, path).await;
        if ready == "#live-status" {
            b.wait_live().await;
        }
        // grow the window until the whole page fits its viewport
        for _ in 0..4 {
            let sizes = b
                .run("return [document.documentElement.scrollHeight, window.innerHeight, window.outerHeight];")
                .await;
            let size = |i: usize| sizes[i].as_u64().expect("a size") as u32;
            let (page, inner, outer) = (size(0), size(1), size(2));
            if inner >= page {
                break;
            }
            b.driver
                .set_window_size(1280, (page + outer.saturating_sub(inner) + 8).min(3000))
                .await
                .expect("resize");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = b.driver.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{file} is a PNG");
        assert!(png.len() > 10_000, "{file} shows something");
        std::fs::write(dir.join(file), png).expect("write the screenshot");
    }
    let svg = meetingctl(daemon.socket(), &["report", "1/2", "--svg"]);
    assert_eq!(svg.status, 0, "{}", svg.stderr);
    std::fs::write(dir.join("timeline-1-2.svg"), &svg.stdout).expect("write the SVG");
    if let Some(keep) = keep {
        eprintln!("screenshots written to {}", keep.display());
    }
    browser.stop().await;
}

/// Play the hand-made instance `target` starting at `from`: Ada, Bob and
/// Cy join and leave at the minutes (after `from`) below, the clock set to
/// each; Cy is still in at the end (a timeout). `after_step` runs after
/// each step, given its minute.
pub(crate) async fn retro_script(
    store: &meetingd::store::Store,
    clock: &ManualClock,
    target: InstanceRef,
    from: i64,
    mut after_step: impl AsyncFnMut(i64),
) {
    // (minute, user, join?) in order
    let script = [
        (10, 1, true),
        (20, 2, true),
        (40, 1, false),
        (60, 1, true),
        (90, 2, false),
        (100, 3, true),
        (110, 1, false),
    ];
    for (minute, user, join) in script {
        clock.set(from + minute * MIN);
        if join {
            store.join(user, target).await.expect("join");
        } else {
            store.leave(user, target).await.expect("leave");
        }
        after_step(minute).await;
    }
}

/// The cast of the hand-made instances: users Ada, Bob and Cy (1-3) and
/// the public meeting 5, "Retro".
pub(crate) async fn retro_cast(store: &meetingd::store::Store) {
    for (id, name) in [(1, "Ada"), (2, "Bob"), (3, "Cy")] {
        store
            .user_set(&User {
                id,
                name: name.into(),
                age: 30,
                gender: "-".into(),
                email: format!("{}@example.com", name.to_lowercase()),
            })
            .await
            .expect("user");
    }
    store
        .meeting_set(&Meeting {
            id: 5,
            title: "Retro".into(),
            description: String::new(),
            public: true,
        })
        .await
        .expect("meeting");
}
