//! The HTTP listener (`http.listen`): Prometheus text on `/metrics` and a
//! read-only web view for people who run meetings, on axum (hyper, tokio).
//!
//! - `/`: the live meetings (title, window, head count), kept up to date
//!   by server-sent events ([`live`]), and the first page of every meeting.
//! - `/m/<M>`: a meeting, its audience and its instances.
//! - `/i/<M>/<O>`: an instance: who is in now, its attendance timeline
//!   (server-drawn SVG, [`timeline`]), its event log and chat (paged), all
//!   kept up to date while it runs. `/i/<M>/<O>/timeline.svg`: the picture
//!   alone.
//! - `/metrics`: STATS' counters as Prometheus text ([`crate::metrics`]).
//!
//! Read-only: every handler reads through the store's calls that the
//! socket's ACTIVE, MEETINGS, MEETING GET, PARTICIPANTS, EVENTS and MESSAGES
//! use, and, for an ended instance the archive holds, through the
//! archive's read-only pool ([`crate::archive::read`]); nothing here
//! writes. Live updates ride on WATCH's fan-out
//! ([`crate::watch::Hub`]); the browser never polls.
//!
//! Safety: pages are written with maud, which escapes every value it is
//! given; the one script is a static file (`/static/app.js`) and the
//! Content-Security-Policy allows no other, no inline script or style, no
//! frame (frame-ancestors 'none') and nothing from elsewhere. With
//! `http.token` set, every request but the login form and the static files
//! must bring the token, as `Authorization: Bearer <token>` or in the
//! HttpOnly, SameSite=Strict cookie the login form sets; it is compared in
//! constant time. E-mails are shown only to a token's bearer; without a
//! token (loopback only) they are masked.

pub mod live;
pub mod pages;
pub mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::archive::read::Reader;
use crate::cmd::Context;
use crate::config::HttpConfig;
use crate::store::StoreError;

/// The cookie the login form sets.
pub const COOKIE: &str = "meetingd_token";

/// Every response's Content-Security-Policy: our own script, style and
/// images only, no inline script or style, no frames, no forms but ours.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// What the handlers share.
pub struct Web {
    /// The store, the counters, WATCH's hub and the limits, as the socket
    /// commands have them.
    pub ctx: Context,
    /// The token every request must bring, if one is set.
    token: Option<String>,
    /// How long history is kept after an instance ends (zero: for ever),
    /// to say why an old instance's log is empty.
    pub retention: Duration,
    /// The live meetings' list, shared by every page that shows it.
    pub active: live::ActiveFeed,
    /// A read-only pool on the archive database, when one is configured:
    /// an ended instance the archive holds is read from there.
    pub archive: Option<Reader>,
    /// Cancelled when the daemon drains: live streams end.
    pub shutdown: CancellationToken,
}

impl Web {
    /// The web view of `ctx`, as `http` configures it, reading ended
    /// instances from the archive at `archive` (an `archive.url`) when
    /// there is one. Nothing is connected yet.
    pub fn new(
        ctx: Context,
        http: &HttpConfig,
        retention: Duration,
        archive: Option<&str>,
        shutdown: CancellationToken,
    ) -> Arc<Web> {
        let archive = archive.and_then(|url| match Reader::new(url) {
            Ok(reader) => Some(reader),
            Err(err) => {
                tracing::warn!("the web view reads no archive: {err}");
                None
            }
        });
        Arc::new(Web {
            ctx,
            token: http.token.clone(),
            retention,
            active: live::ActiveFeed::default(),
            archive,
            shutdown,
        })
    }

    /// Whether a token guards the view (and so whether e-mails are shown).
    pub fn guarded(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `offered` is the token (constant time over its bytes).
    fn is_token(&self, offered: &str) -> bool {
        match &self.token {
            Some(token) => bool::from(token.as_bytes().ct_eq(offered.as_bytes())),
            None => true,
        }
    }

    /// Whether a request brings the token (always, when none is set).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        if self.token.is_none() {
            return true;
        }
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.is_token(t.trim()));
        bearer || cookie(headers, COOKIE).is_some_and(|t| self.is_token(&t))
    }
}

/// A cookie's value.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Listen on `address` (before the daemon says it is ready, so a port in
/// use fails the start).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr().unwrap_or(address);
    tracing::info!(
        url = %format!("http://{bound}/"),
        "serving the web view and /metrics"
    );
    Ok(listener)
}

/// Serve until `web.shutdown` is cancelled.
pub async fn serve(listener: TcpListener, web: Arc<Web>) {
    let shutdown = web.shutdown.clone();
    let served = axum::serve(listener, router(web))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(err) = served {
        tracing::warn!("the HTTP listener stopped: {err}");
    }
}

/// Every route, behind the token check and the security headers.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(pages::live_page))
        .route("/m/{meeting}", get(pages::meeting_page))
        .route("/i/{meeting}/{order}", get(pages::instance_page))
        .route(
            "/i/{meeting}/{order}/timeline.svg",
            get(pages::timeline_file),
        )
        .route("/live/active", get(live::active))
        .route("/live/i/{meeting}/{order}", get(live::instance))
        .route("/metrics", get(metrics))
        .route("/static/app.js", get(app_js))
        .route("/static/style.css", get(style_css))
        .route("/login", get(login_form).post(login))
        .route("/logout", axum::routing::post(logout))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(web.clone(), guard))
        .layer(middleware::from_fn(headers))
        .with_state(web)
}

/// Ask for the token, except of the login form and the static files: a
/// page gets the login form (401), anything else a bare 401.
async fn guard(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = path == "/login" || path.starts_with("/static/");
    if open || web.authorized(request.headers()) {
        return next.run(request).await;
    }
    let wants_page = request.method() == Method::GET
        && !path.starts_with("/live/")
        && path != "/metrics"
        && !path.ends_with(".svg");
    if wants_page {
        let next_path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let mut response = pages::login(&next_path, false).into_response();
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"meetingd\""),
        );
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"meetingd\"")],
        "a token is needed: Authorization: Bearer <http.token>\n",
    )
        .into_response()
}

/// The security headers of every response.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `/metrics`: STATS' counters as Prometheus text, with one PING's round
/// trip to Redis.
async fn metrics(State(web): State<Arc<Web>>) -> Response {
    let stats = &web.ctx.stats;
    let mut snapshot = stats.snapshot();
    snapshot["redis_rtt_ms"] = serde_json::json!(
        web.ctx
            .store
            .ping()
            .await
            .ok()
            .map(|d| d.as_secs_f64() * 1000.0)
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&snapshot, stats.last_good_tick()),
    )
        .into_response()
}

/// The one script of the pages.
pub const APP_JS: &str = include_str!("static/app.js");
/// The one stylesheet of the pages.
pub const STYLE_CSS: &str = include_str!("static/style.css");

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// Where to go after logging in.
#[derive(Deserialize)]
struct NextPath {
    next: Option<String>,
}

/// A path of this site to go back to: absolute, not `//host`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_string(),
        _ => "/".to_string(),
    }
}

async fn login_form(State(web): State<Arc<Web>>, Query(next): Query<NextPath>) -> Response {
    if !web.guarded() {
        return Redirect::to("/").into_response();
    }
    pages::login(&local_path(next.next.as_deref()), false).into_response()
}

/// The login form's fields.
#[derive(Deserialize)]
struct Login {
    token: String,
    next: Option<String>,
}

/// Check the token; set it as an HttpOnly, SameSite=Strict cookie and go
/// back where the reader was, or show the form again (401).
async fn login(State(web): State<Arc<Web>>, Form(form): Form<Login>) -> Response {
    let next = local_path(form.next.as_deref());
    if !web.guarded() {
        return Redirect::to(&next).into_response();
    }
    if !web.is_token(form.token.trim()) {
        let mut response = pages::login(&next, true).into_response();
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        form.token.trim()
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Forget the cookie.
async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("meetingd_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

async fn not_found(State(web): State<Arc<Web>>) -> Response {
    pages::error(&web, StatusCode::NOT_FOUND, "There is no such page.")
}

/// A store error as a page: 404 for what does not exist, 503 while Redis
/// cannot be reached, 500 otherwise (logged).
pub fn store_error(web: &Web, err: StoreError) -> Response {
    match &err {
        StoreError::Rule {
            code: crate::error::Code::NotFound,
            message,
        } => pages::error(web, StatusCode::NOT_FOUND, message),
        StoreError::Rule { message, .. } => pages::error(web, StatusCode::BAD_REQUEST, message),
        StoreError::Unavailable(_) | StoreError::InDoubt(_) => {
            tracing::warn!("web view: {err}");
            pages::error(
                web,
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis cannot be reached right now; try again in a moment.",
            )
        }
        StoreError::Incompatible(_) | StoreError::Internal(_) => {
            tracing::warn!("web view: {err}");
            pages::error(
                web,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong (the daemon's log says what).",
            )
        }
    }
}

/// An HTML response.
pub fn html(markup: maud::Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_gone_back_to() {
        assert_eq!(local_path(Some("/i/1/2?x=1")), "/i/1/2?x=1");
        for away in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "javascript:alert(1)",
        ] {
            assert_eq!(local_path(Some(away)), "/", "{away}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; meetingd_token=abc; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
