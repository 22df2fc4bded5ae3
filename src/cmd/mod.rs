//! Commands: a parsed [`Request`] applied to the store, its result as the
//! JSON of the reply.
//!
//! One file per command family, each the same shape: for every command a
//! function with a `# Format` doc block (the wire syntax and the reply) that
//! calls the store's typed method and shapes its result. Adding a command
//! touches its family's file and one arm of [`plan`]. Nothing here reads
//! sockets or speaks to Redis but through the store.
//!
//! [`plan`] says how a request is carried out, so that the connection can
//! send the requests it has read together: most requests are one library
//! call ([`Plan::Call`]), sent in one pipeline with their neighbours; the
//! rest ([`Plan::Alone`]) run on their own, in their turn.

mod chat;
mod events;
mod meetings;
mod presence;
mod report;
mod schedule;
mod session;
mod users;
mod watch;

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::error::Code;
use crate::protocol::{Mref, Request};
use crate::scheduler::Scheduler;
use crate::stats::Stats;
use crate::store::{Call, InstanceId, InstanceRef, Store, StoreError};
use crate::watch::{Hub, Watcher};

pub use watch::{render as watch_line, unwatch};

/// Limits a command enforces (spec section 7).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest `LIMIT` a page may ask for (and the default).
    pub page: u64,
    /// The longest chat text, in bytes.
    pub text: usize,
    /// The most a page reply may take, in bytes.
    pub reply_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            page: 1000,
            text: 4096,
            reply_bytes: 1024 * 1024,
        }
    }
}

/// What every command may use.
#[derive(Clone)]
pub struct Context {
    /// The data.
    pub store: Store,
    /// Page and text limits.
    pub limits: Limits,
    /// The daemon's counters (STATS).
    pub stats: Arc<Stats>,
    /// Runs TICK the way the cron job does.
    pub scheduler: Arc<Scheduler>,
    /// WATCH's readers and their watchers.
    pub hub: Arc<Hub>,
}

/// A command's failure: the reply's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    /// The spec's code.
    pub code: Code,
    /// For the client.
    pub message: String,
}

impl CmdError {
    /// An error with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        CmdError {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for CmdError {
    fn from(err: StoreError) -> Self {
        let message = match &err {
            StoreError::Rule { message, .. } => message.clone(),
            StoreError::Unavailable(_) => {
                "Redis could not be reached; nothing was done: try again".to_string()
            }
            StoreError::InDoubt(_) => "no reply from Redis in time: the request may or may not \
                                        have been applied (send a POST again with the same ID)"
                .to_string(),
            StoreError::Incompatible(_) | StoreError::Internal(_) => {
                "internal error (logged)".to_string()
            }
        };
        if !matches!(err, StoreError::Rule { .. }) {
            tracing::warn!("store call failed: {err}");
        }
        CmdError {
            code: err.code(),
            message,
        }
    }
}

/// A command's result, written as the JSON text of the reply's `result`
/// (once, straight from the typed values: no tree of JSON values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json(Vec<u8>);

impl Json {
    /// `value` as JSON.
    pub fn of<T: serde::Serialize + ?Sized>(value: &T) -> Json {
        let mut text = Vec::with_capacity(128);
        // Writing into a Vec cannot fail, and our types always serialize.
        let _ = serde_json::to_writer(&mut text, value);
        Json(text)
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A successful result of `value`.
fn ok<T: serde::Serialize>(value: T) -> CmdResult {
    Ok(Json::of(&value))
}

/// A JSON array of `items`, as many as fit in `budget` bytes (at least
/// one): a page that must not pass the reply limit.
fn capped_array<T: serde::Serialize>(items: impl IntoIterator<Item = T>, budget: usize) -> Json {
    let mut text = Vec::with_capacity(256);
    text.push(b'[');
    for item in items {
        let before = text.len();
        if before > 1 {
            text.push(b',');
        }
        // Writing into a Vec cannot fail, and our types always serialize.
        let _ = serde_json::to_writer(&mut text, &item);
        if text.len() + 1 > budget && before > 1 {
            text.truncate(before);
            break;
        }
    }
    text.push(b']');
    Json(text)
}

/// A listing's page, `{"<name>":[row...],"next":<id or null>}`: the rows
/// (each with its id) as many as fit in `budget` bytes (at least one);
/// when some are left out, `next` is the id of the last one in.
fn listing<T: serde::Serialize>(
    name: &str,
    rows: impl IntoIterator<Item = (u64, T)>,
    next: Option<u64>,
    budget: usize,
) -> Json {
    let mut text = Vec::with_capacity(256);
    text.extend_from_slice(b"{\"");
    text.extend_from_slice(name.as_bytes());
    text.extend_from_slice(b"\":[");
    let start = text.len();
    let mut next = next;
    let mut last = None;
    for (id, row) in rows {
        let before = text.len();
        if before > start {
            text.push(b',');
        }
        // Writing into a Vec cannot fail, and our types always serialize.
        let _ = serde_json::to_writer(&mut text, &row);
        // the closing text takes at most 40 bytes
        if text.len() + 40 > budget && before > start {
            text.truncate(before);
            next = last;
            break;
        }
        last = Some(id);
    }
    text.extend_from_slice(b"],\"next\":");
    let _ = serde_json::to_writer(&mut text, &next);
    text.push(b'}');
    Json(text)
}

/// The result of a command.
pub type CmdResult = Result<Json, CmdError>;

/// What a request leads to.
pub enum Outcome {
    /// A reply.
    Reply(Json),
    /// A reply, then the connection streams this watcher's entries.
    Watch(Json, Watcher),
}

/// How a request is carried out.
pub enum Plan {
    /// Answered already: without Redis, or refused before it.
    Done(Result<Outcome, CmdError>),
    /// One library call, which may be sent in one pipeline with the
    /// requests around it (in order); its reply makes the result.
    Call(Call<Finish>),
    /// Work of its own (several calls, a WATCH, a tick...): run alone,
    /// after the requests before it and before those after it.
    Alone(BoxFuture<'static, Result<Outcome, CmdError>>),
}

/// What a call's reply still needs to become the request's result.
pub enum Finish {
    /// Nothing: this is the result.
    Done(CmdResult),
    /// More reading (users the cache did not hold).
    More(BoxFuture<'static, CmdResult>),
}

impl Finish {
    /// The result, after the more reading if any.
    pub async fn result(self) -> CmdResult {
        match self {
            Finish::Done(result) => result,
            Finish::More(more) => more.await,
        }
    }
}

/// A plan that is one call whose reply makes the result at once.
fn call<T: 'static>(call: Call<T>, result: impl FnOnce(T) -> CmdResult + Send + 'static) -> Plan {
    Plan::Call(call.map(|value| Finish::Done(result(value))))
}

/// [`call`], for a call that names `user` (LEAVE, POST): its refusal
/// (`inactive`, `not_joined`, `not_found`) becomes `not_found` for the user
/// when the user does not exist, as for JOIN, which reads the user first.
/// The user is looked up on that error path only (the cache, else one
/// read), so a request that succeeds stays one round trip.
fn call_naming<T: 'static>(
    ctx: &Context,
    user: u64,
    call: Call<T>,
    result: impl FnOnce(T) -> CmdResult + Send + 'static,
) -> Plan {
    let store = ctx.store.clone();
    Plan::Call(
        call.map(|value| Finish::Done(result(value)))
            .or_else(move |refused| {
                let refusal = matches!(
                    refused.code(),
                    Code::Inactive | Code::NotJoined | Code::NotFound
                );
                if !refusal || store.user_cached(user).is_some() {
                    return Err(refused);
                }
                Ok(Finish::More(
                    async move {
                        match store.user_known(user).await {
                            Err(unknown) if unknown.code() == Code::NotFound => Err(unknown.into()),
                            _ => Err(refused.into()),
                        }
                    }
                    .boxed(),
                ))
            }),
    )
}

/// A plan of work of its own.
fn alone<F>(ctx: &Context, work: impl FnOnce(Context) -> F) -> Plan
where
    F: std::future::Future<Output = CmdResult> + Send + 'static,
{
    Plan::Alone(work(ctx.clone()).map(|r| r.map(Outcome::Reply)).boxed())
}

/// Who sends the requests of a connection, from its credentials
/// (SO_PEERCRED, read once per connection).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Its uid; `u32::MAX` when the credentials could not be read.
    pub uid: u32,
    /// It may use admin commands: root, the daemon's own uid, and the
    /// configuration's `admin.uids` and `admin.gids`.
    pub admin: bool,
}

/// How to carry out a request on a connection that is not watching (the
/// connection itself handles what it may do while watching) from `peer`.
pub fn plan(request: Request, peer: &Peer, ctx: &Context) -> Plan {
    if request.is_admin() && !peer.admin {
        let caller = match peer.uid {
            u32::MAX => "a peer whose credentials could not be read".to_string(),
            uid => format!("uid {uid}"),
        };
        return Plan::Done(Err(CmdError::new(
            Code::PermissionDenied,
            format!(
                "{} is an admin command and {caller} is no admin: admins are root, the \
                 daemon's own user, and the uids of admin.uids and the primary gids of \
                 admin.gids in the daemon's configuration",
                request.name()
            ),
        )));
    }
    let done = |result: CmdResult| Plan::Done(result.map(Outcome::Reply));
    match request {
        Request::Ping => done(session::ping()),
        Request::Help(command) => done(session::help(command.as_deref())),
        Request::Quit => done(session::quit()),
        Request::Unwatch => done(ok(watch::unwatch(None))),
        Request::Stats => alone(ctx, |ctx| async move { session::stats(&ctx).await }),
        Request::UserSet {
            id,
            name,
            age,
            gender,
            email,
        } => alone(ctx, |ctx| async move {
            users::set(&ctx, id, name, age, gender, email).await
        }),
        Request::UserGet(id) => alone(ctx, |ctx| async move { users::get(&ctx, id).await }),
        Request::Users { after, limit } => alone(ctx, move |ctx| async move {
            users::list(&ctx, after, limit).await
        }),
        Request::MeetingSet {
            id,
            title,
            description,
            public,
        } => alone(ctx, |ctx| async move {
            meetings::set(&ctx, id, title, description, public).await
        }),
        Request::MeetingGet(id) => alone(ctx, |ctx| async move { meetings::get(&ctx, id).await }),
        Request::Meetings { after, limit } => alone(ctx, move |ctx| async move {
            meetings::list(&ctx, after, limit).await
        }),
        Request::AudienceAdd(meeting, emails) => alone(ctx, |ctx| async move {
            meetings::audience_add(&ctx, meeting, &emails).await
        }),
        Request::AudienceDel(meeting, emails) => alone(ctx, |ctx| async move {
            meetings::audience_del(&ctx, meeting, &emails).await
        }),
        Request::InstanceSet {
            meeting,
            order,
            from,
            to,
            future,
        } => alone(ctx, |ctx| async move {
            meetings::instance_set(&ctx, meeting, order, from, to, future).await
        }),
        Request::End(mref) => alone(ctx, |ctx| async move { schedule::end(&ctx, mref).await }),
        Request::Tick => alone(ctx, |ctx| async move { schedule::tick(&ctx).await }),
        Request::Join(user, mref, key) => presence::join(ctx, user, mref, key),
        Request::Leave(user, mref, key) => presence::leave(ctx, user, mref, key),
        Request::Participants { mref, after, limit } => {
            presence::participants(ctx, mref, after, limit)
        }
        Request::Active { after, limit } => alone(ctx, move |ctx| async move {
            presence::active(&ctx, after, limit).await
        }),
        Request::Attendance { after, limit } => alone(ctx, move |ctx| async move {
            presence::attendance(&ctx, after, limit).await
        }),
        Request::Post {
            user,
            mref,
            text,
            key,
        } => chat::post(ctx, user, mref, text, key),
        Request::Messages {
            mref,
            user,
            after,
            limit,
        } => chat::messages(ctx, mref, user, after, limit),
        Request::Events { mref, after, limit } => events::events(ctx, mref, after, limit),
        Request::Report(page) => report::report(ctx, page),
        Request::Watch { mref, after } => {
            let ctx = ctx.clone();
            Plan::Alone(async move { watch::watch(&ctx, mref, after).await }.boxed())
        }
        Request::WatchActive => {
            let ctx = ctx.clone();
            Plan::Alone(async move { watch::watch_active(&ctx).await }.boxed())
        }
    }
}

/// Carry out one request on its own (see [`plan`]).
pub async fn execute(request: Request, peer: &Peer, ctx: &Context) -> Result<Outcome, CmdError> {
    match plan(request, peer, ctx) {
        Plan::Done(result) => result,
        Plan::Call(call) => ctx
            .store
            .run(call)
            .await?
            .result()
            .await
            .map(Outcome::Reply),
        Plan::Alone(work) => work.await,
    }
}

/// The store's name for an `<mref>`.
fn target(mref: Mref) -> InstanceRef {
    match mref.order {
        Some(order) => InstanceRef::Exact(InstanceId::new(mref.meeting, order)),
        None => InstanceRef::Current(mref.meeting),
    }
}

/// A page size: the limit's default when absent, `bad_request` past it.
fn page_size(ctx: &Context, limit: Option<u64>) -> Result<usize, CmdError> {
    match limit {
        None => Ok(ctx.limits.page as usize),
        Some(n) if n <= ctx.limits.page => Ok(n as usize),
        Some(n) => Err(CmdError::new(
            Code::BadRequest,
            format!("LIMIT {n} is over the limit of {}", ctx.limits.page),
        )),
    }
}
