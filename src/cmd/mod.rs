//! Commands: a parsed [`Request`] applied to the store, its result as the
//! JSON of the reply.
//!
//! One file per command family, each the same shape: for every command a
//! function with a `# Format` doc block (the wire syntax and the reply) that
//! calls the store's typed method and shapes its result. Adding a command
//! touches its family's file and one arm of [`execute`]. Nothing here reads
//! sockets or speaks to Redis but through the store.

mod chat;
mod events;
mod meetings;
mod presence;
mod schedule;
mod session;
mod users;
mod watch;

use std::sync::Arc;

use serde_json::Value;

use crate::error::Code;
use crate::protocol::{Mref, Request};
use crate::scheduler::Scheduler;
use crate::stats::Stats;
use crate::store::{InstanceId, InstanceRef, Store, StoreError};
use crate::watch::{Hub, Watcher};

pub use watch::{render as watch_line, unwatch};

/// Limits a command enforces (spec section 7).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest `LIMIT` a page may ask for (and the default).
    pub page: u64,
    /// The longest chat text, in bytes.
    pub text: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            page: 1000,
            text: 4096,
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
            StoreError::Unavailable(_) => "Redis is unavailable; try again".to_string(),
            StoreError::Internal(_) => "internal error (logged)".to_string(),
        };
        if !matches!(err, StoreError::Rule { .. }) {
            tracing::warn!(error = %err, "store call failed");
        }
        CmdError {
            code: err.code(),
            message,
        }
    }
}

/// The result of a command.
pub type CmdResult = Result<Value, CmdError>;

/// What a request leads to.
pub enum Outcome {
    /// A reply.
    Reply(Value),
    /// A reply, then the connection streams this watcher's entries.
    Watch(Value, Watcher),
}

/// Apply a request on a connection that is not watching (the connection
/// itself handles what it may do while watching). `admin` says whether the
/// peer may use admin commands.
pub async fn execute(request: Request, admin: bool, ctx: &Context) -> Result<Outcome, CmdError> {
    if request.is_admin() && !admin {
        return Err(CmdError::new(
            Code::PermissionDenied,
            format!("{} is an admin command", request.name()),
        ));
    }
    let value = match request {
        Request::Ping => session::ping(),
        Request::Help(command) => session::help(command.as_deref()),
        Request::Stats => session::stats(ctx).await,
        Request::Quit => session::quit(),
        Request::UserSet {
            id,
            name,
            age,
            gender,
            email,
        } => users::set(ctx, id, name, age, gender, email).await,
        Request::UserGet(id) => users::get(ctx, id).await,
        Request::MeetingSet {
            id,
            title,
            description,
            public,
        } => meetings::set(ctx, id, title, description, public).await,
        Request::MeetingGet(id) => meetings::get(ctx, id).await,
        Request::AudienceAdd(meeting, emails) => {
            meetings::audience_add(ctx, meeting, &emails).await
        }
        Request::AudienceDel(meeting, emails) => {
            meetings::audience_del(ctx, meeting, &emails).await
        }
        Request::InstanceSet {
            meeting,
            order,
            from,
            to,
        } => meetings::instance_set(ctx, meeting, order, from, to).await,
        Request::End(mref) => schedule::end(ctx, mref).await,
        Request::Tick => schedule::tick(ctx).await,
        Request::Join(user, mref) => presence::join(ctx, user, mref).await,
        Request::Leave(user, mref) => presence::leave(ctx, user, mref).await,
        Request::Participants { mref, after, limit } => {
            presence::participants(ctx, mref, after, limit).await
        }
        Request::Active => presence::active(ctx).await,
        Request::Attendance => presence::attendance(ctx).await,
        Request::Post(user, mref, text) => chat::post(ctx, user, mref, &text).await,
        Request::Messages {
            mref,
            user,
            after,
            limit,
        } => chat::messages(ctx, mref, user, after.as_deref(), limit).await,
        Request::Events { mref, after, limit } => {
            events::events(ctx, mref, after.as_deref(), limit).await
        }
        Request::Watch { mref, after } => return watch::watch(ctx, mref, after).await,
        Request::Unwatch => Ok(watch::unwatch(None)),
    }?;
    Ok(Outcome::Reply(value))
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
