//! Who is where: JOIN, LEAVE, PARTICIPANTS, ACTIVE, ATTENDANCE.

use std::sync::Arc;

use futures_util::FutureExt;
use serde::Serialize;

use super::{
    CmdResult, Context, Finish, Plan, alone, call, call_naming, capped_array, ok, page_size, target,
};
use crate::protocol::{Mref, Time};
use crate::store::{Joined, Known, Participant};

/// JOIN's reply.
#[derive(Serialize)]
struct JoinedReply<'a> {
    meeting: u64,
    order: u64,
    user: u64,
    joined_at: Time,
    id: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// # Format
/// `JOIN <user> <mref> [ID <key>]` ->
/// `{"meeting","order","user","joined_at","id"}` (`id`: the join event's).
/// With `ID`, a repeat of the same user's key in the instance writes
/// nothing and answers the first join again, with `"duplicate":true`. One
/// call when the daemon knows the user already (see the store's user
/// cache); the user is read first otherwise.
pub fn join(ctx: &Context, user: u64, mref: Mref, key: Option<String>) -> Plan {
    let to = target(mref);
    match ctx.store.user_cached(user) {
        Some(known) => call(ctx.store.join_call(user, to, &known, key.as_deref()), |j| {
            joined(&j)
        }),
        None => alone(ctx, |ctx| async move {
            let known = ctx.store.user_known(user).await?;
            let call = ctx.store.join_call(user, to, &known, key.as_deref());
            joined(&ctx.store.run(call).await?)
        }),
    }
}

fn joined(joined: &Joined) -> CmdResult {
    ok(JoinedReply {
        meeting: joined.instance.meeting,
        order: joined.instance.order,
        user: joined.user,
        joined_at: Time(joined.joined_at),
        id: &joined.event_id,
        duplicate: joined.duplicate,
    })
}

/// LEAVE's reply.
#[derive(Serialize)]
struct LeftReply<'a> {
    meeting: u64,
    order: u64,
    user: u64,
    left_at: Time,
    id: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// # Format
/// `LEAVE <user> <mref> [ID <key>]` ->
/// `{"meeting","order","user","left_at","id"}`, with `ID` as JOIN's;
/// `not_found` for a user that does not exist wins over the other refusals.
pub fn leave(ctx: &Context, user: u64, mref: Mref, key: Option<String>) -> Plan {
    call_naming(
        ctx,
        user,
        ctx.store.leave_call(user, target(mref), key.as_deref()),
        |left| {
            ok(LeftReply {
                meeting: left.instance.meeting,
                order: left.instance.order,
                user: left.user,
                left_at: Time(left.left_at),
                id: &left.event_id,
                duplicate: left.duplicate,
            })
        },
    )
}

/// A row of PARTICIPANTS.
#[derive(Serialize)]
struct ParticipantRow<'a> {
    user: u64,
    name: Option<&'a str>,
    email: Option<&'a str>,
    joined_at: Time,
}

/// # Format
/// `PARTICIPANTS <mref> [AFTER <user>] [LIMIT <n>]` ->
/// `[{"user","name","email","joined_at"}...]` in join order, at most `n`
/// (default and most: the page limit), after that user; fewer when more
/// would pass the reply limit (page on after the last user until a page is
/// empty). Names and e-mails come from the user cache; those it does not
/// hold are read in one more round trip.
pub fn participants(ctx: &Context, mref: Mref, after: Option<u64>, limit: Option<u64>) -> Plan {
    let limit = match page_size(ctx, limit) {
        Ok(limit) => limit,
        Err(err) => return Plan::Done(Err(err)),
    };
    let store = ctx.store.clone();
    let budget = ctx.limits.reply_bytes;
    let page = ctx.store.participants_call(target(mref), after, limit);
    Plan::Call(page.map(move |(_, list)| {
        let ids: Vec<u64> = list.iter().map(|p| p.user).collect();
        let cached = store.users_cached(&ids);
        if cached.iter().all(Option::is_some) {
            return Finish::Done(rows(&list, &cached, budget));
        }
        Finish::More(
            async move {
                let users = store.users_known(&ids).await?;
                rows(&list, &users, budget)
            }
            .boxed(),
        )
    }))
}

fn rows(list: &[Participant], users: &[Option<Arc<Known>>], budget: usize) -> CmdResult {
    let rows = list.iter().zip(users).map(|(p, user)| ParticipantRow {
        user: p.user,
        name: user.as_ref().map(|u| u.name.as_str()),
        email: user.as_ref().map(|u| u.email.as_str()),
        joined_at: Time(p.joined_at),
    });
    Ok(capped_array(rows, budget))
}

/// A row of ACTIVE.
#[derive(Serialize)]
struct ActiveRow<'a> {
    meeting: u64,
    order: u64,
    title: &'a str,
    description: &'a str,
    public: bool,
    from: Time,
    to: Time,
    participants: u64,
}

/// # Format
/// `ACTIVE` -> `[{"meeting","order","title","description","public","from",
/// "to","participants"}...]`
pub async fn active(ctx: &Context) -> CmdResult {
    let active = ctx.store.active().await?;
    let rows: Vec<ActiveRow<'_>> = active
        .iter()
        .map(|a| ActiveRow {
            meeting: a.instance.id.meeting,
            order: a.instance.id.order,
            title: &a.title,
            description: &a.description,
            public: a.public,
            from: Time(a.instance.from),
            to: Time(a.instance.to),
            participants: a.participants,
        })
        .collect();
    ok(rows)
}

/// A row of ATTENDANCE.
#[derive(Serialize)]
struct AttendanceRow<'a> {
    meeting: u64,
    order: u64,
    title: &'a str,
    participants: Vec<Attendee>,
}

/// Who joined when, in a row of ATTENDANCE.
#[derive(Serialize)]
struct Attendee {
    user: u64,
    joined_at: Time,
}

/// # Format
/// `ATTENDANCE` -> `[{"meeting","order","title","participants":[{"user",
/// "joined_at"}...]}...]`, big instances read 1000 participants a call
pub async fn attendance(ctx: &Context) -> CmdResult {
    let attendance = ctx.store.attendance().await?;
    let rows: Vec<AttendanceRow<'_>> = attendance
        .iter()
        .map(|a| AttendanceRow {
            meeting: a.instance.meeting,
            order: a.instance.order,
            title: &a.title,
            participants: a
                .participants
                .iter()
                .map(|p| Attendee {
                    user: p.user,
                    joined_at: Time(p.joined_at),
                })
                .collect(),
        })
        .collect();
    ok(rows)
}
