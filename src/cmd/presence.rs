//! Who is where: JOIN, LEAVE, PARTICIPANTS, ACTIVE, ATTENDANCE.

use std::sync::Arc;

use futures_util::FutureExt;
use serde::Serialize;

use super::{
    CmdResult, Context, Finish, Json, Plan, alone, call, call_naming, capped_array, listing, ok,
    page_size, target,
};
use crate::protocol::{AttendanceCursor, Mref, Position, Time};
use crate::store::{AttendanceAfter, AttendancePage, Joined, Known, Participant};

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
/// `PARTICIPANTS <mref> [AFTER <user>[@<time>]] [LIMIT <n>]` ->
/// `[{"user","name","email","joined_at"}...]` in join order, at most `n`
/// (default and most: the page limit), after that user's join position
/// (`<user>@<joined_at>`, which holds after they left; `<user>` alone:
/// after where they are, `not_joined` once they left); fewer when more
/// would pass the reply limit (page on after the last row until a page is
/// empty). Names and e-mails come from the user cache; those it does not
/// hold are read in one more round trip.
pub fn participants(
    ctx: &Context,
    mref: Mref,
    after: Option<Position>,
    limit: Option<u64>,
) -> Plan {
    let limit = match page_size(ctx, limit) {
        Ok(limit) => limit,
        Err(err) => return Plan::Done(Err(err)),
    };
    let store = ctx.store.clone();
    let budget = ctx.limits.reply_bytes;
    let after = after.map(|p| (p.user, p.at));
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
/// `ACTIVE [AFTER <meeting>] [LIMIT <n>]` -> `{"instances":[{"meeting",
/// "order","title","description","public","from","to","participants"}...],
/// "next":<meeting or null>}`: the instances running by the clock, by
/// partition (meeting id modulo the partition count) then meeting id, at
/// most `n` (default and most: the page limit) after that meeting's; fewer
/// when more would pass the reply limit. Pass `next` as `AFTER`; `null`:
/// there is none. Answered from each partition's kept answer while it
/// holds (the store's cache: exact, see docs/internals.md).
pub async fn active(ctx: &Context, after: Option<u64>, limit: Option<u64>) -> CmdResult {
    let limit = page_size(ctx, limit)?;
    let page = ctx.store.active_page(after, limit).await?;
    let rows = page.rows.iter().map(|a| {
        (
            a.instance.id.meeting,
            ActiveRow {
                meeting: a.instance.id.meeting,
                order: a.instance.id.order,
                title: &a.title,
                description: &a.description,
                public: a.public,
                from: Time(a.instance.from),
                to: Time(a.instance.to),
                participants: a.participants,
            },
        )
    });
    Ok(listing(
        "instances",
        rows,
        page.next,
        ctx.limits.reply_bytes,
    ))
}

/// The head of a row of ATTENDANCE (its participants follow).
#[derive(Serialize)]
struct AttendanceHead<'a> {
    meeting: u64,
    order: u64,
    title: &'a str,
}

/// Who joined when, in a row of ATTENDANCE.
#[derive(Serialize)]
struct Attendee {
    user: u64,
    joined_at: Time,
}

/// ATTENDANCE's cursor as the protocol writes it.
fn cursor_of(after: AttendanceAfter) -> AttendanceCursor {
    AttendanceCursor {
        meeting: after.meeting,
        within: after.within,
    }
}

/// # Format
/// `ATTENDANCE [AFTER <cursor>] [LIMIT <n>]` -> `{"instances":[{"meeting",
/// "order","title","participants":[{"user","joined_at"}...]}...],"next":
/// <cursor or null>}`: for each instance running by the clock, in ACTIVE's
/// order, its participants in join order; at most `n` participants a page
/// (an instance with nobody in it counts as one; default and most: the
/// page limit), fewer when more would pass the reply limit. An instance
/// cut by a page goes on in the next, after the join position `next`
/// names (`<meeting>/<order>:<user>@<ms>`), which holds whoever left
/// meanwhile; `next` is `<meeting>` when a page ends with a whole row.
pub async fn attendance(
    ctx: &Context,
    after: Option<AttendanceCursor>,
    limit: Option<u64>,
) -> CmdResult {
    let limit = page_size(ctx, limit)?;
    let after = after.map(|c| AttendanceAfter {
        meeting: c.meeting,
        within: c.within,
    });
    let page = ctx.store.attendance_page(after, limit).await?;
    Ok(attendance_reply(&page, ctx.limits.reply_bytes))
}

/// Bytes kept for what closes a reply after the last entry.
const CLOSING: usize = 80;

/// ATTENDANCE's reply: as much of `page` as fits in `budget` bytes (at
/// least one row, and one participant of it), `next` where it stopped.
fn attendance_reply(page: &AttendancePage, budget: usize) -> Json {
    let mut text = b"{\"instances\":[".to_vec();
    let mut next = page.next.map(cursor_of);
    // where a page that stops at the end of what is in goes on
    let mut last: Option<AttendanceCursor> = None;
    let mut any = false;
    'rows: for row in &page.rows {
        let row_start = text.len();
        if any {
            text.push(b',');
        }
        let head = AttendanceHead {
            meeting: row.instance.meeting,
            order: row.instance.order,
            title: &row.title,
        };
        // Writing into a Vec cannot fail, and our types always serialize.
        let _ = serde_json::to_writer(&mut text, &head);
        text.pop();
        text.extend_from_slice(b",\"participants\":[");
        let mut taken = 0;
        for p in &row.participants {
            let before = text.len();
            if taken > 0 {
                text.push(b',');
            }
            let _ = serde_json::to_writer(
                &mut text,
                &Attendee {
                    user: p.user,
                    joined_at: Time(p.joined_at),
                },
            );
            if text.len() + CLOSING > budget && (any || taken > 0) {
                text.truncate(before);
                if taken == 0 {
                    text.truncate(row_start);
                    next = last;
                } else {
                    text.extend_from_slice(b"]}");
                    let prev = row.participants[taken - 1];
                    next = Some(AttendanceCursor {
                        meeting: row.instance.meeting,
                        within: Some((row.instance.order, prev.user, prev.joined_at)),
                    });
                }
                break 'rows;
            }
            taken += 1;
        }
        text.extend_from_slice(b"]}");
        if text.len() + CLOSING > budget && any && taken == 0 {
            text.truncate(row_start);
            next = last;
            break;
        }
        any = true;
        last = Some(AttendanceCursor {
            meeting: row.instance.meeting,
            within: None,
        });
    }
    text.extend_from_slice(b"],\"next\":");
    let _ = serde_json::to_writer(&mut text, &next.map(|c| c.to_string()));
    text.push(b'}');
    Json(text)
}
