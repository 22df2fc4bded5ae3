//! The chat: POST, MESSAGES.

use serde::Serialize;

use super::{CmdError, Context, Plan, call, call_naming, ok, page_size, target};
use crate::error::Code;
use crate::protocol::{Mref, Time};

/// POST's reply.
#[derive(Serialize)]
struct PostedReply<'a> {
    id: &'a str,
    meeting: u64,
    order: u64,
    user: u64,
    at: Time,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// # Format
/// `POST <user> <mref> <text> [ID <key>]` -> `{"id","meeting","order","user","at"}`;
/// a text over the chat text limit is `too_large`. With `ID`, a repeat of
/// the same user's key in the instance stores nothing and answers the first
/// message, with `"duplicate":true`. `not_found` for a user that does not
/// exist wins over the other refusals.
pub fn post(ctx: &Context, user: u64, mref: Mref, text: String, key: Option<String>) -> Plan {
    if text.len() > ctx.limits.text {
        return Plan::Done(Err(CmdError::new(
            Code::TooLarge,
            format!(
                "the text is {} bytes, over the limit of {}",
                text.len(),
                ctx.limits.text
            ),
        )));
    }
    let posted = ctx
        .store
        .post_call(user, target(mref), &text, key.as_deref());
    call_naming(ctx, user, posted, |posted| {
        ok(PostedReply {
            id: &posted.id,
            meeting: posted.instance.meeting,
            order: posted.instance.order,
            user: posted.user,
            at: Time(posted.at),
            duplicate: posted.duplicate,
        })
    })
}

/// MESSAGES' reply.
#[derive(Serialize)]
struct MessagesReply<'a> {
    messages: Vec<MessageRow<'a>>,
    next: Option<&'a str>,
}

#[derive(Serialize)]
struct MessageRow<'a> {
    id: &'a str,
    user: u64,
    text: &'a str,
    at: Time,
}

/// # Format
/// `MESSAGES <mref> [USER <user>] [AFTER <id>] [LIMIT <n>]` ->
/// `{"messages":[{"id","user","text","at"}...],"next":<id or null>}`,
/// oldest first; pass `next` as `AFTER` for the following page. A page
/// stops before it would pass the reply limit (`next` set).
pub fn messages(
    ctx: &Context,
    mref: Mref,
    user: Option<u64>,
    after: Option<String>,
    limit: Option<u64>,
) -> Plan {
    let limit = match page_size(ctx, limit) {
        Ok(limit) => limit,
        Err(err) => return Plan::Done(Err(err)),
    };
    let page = ctx.store.messages_call(
        target(mref),
        user,
        after.as_deref(),
        limit,
        Some(ctx.limits.reply_bytes),
    );
    call(page, |(_, page)| {
        ok(MessagesReply {
            messages: page
                .items
                .iter()
                .map(|m| MessageRow {
                    id: &m.id,
                    user: m.user,
                    text: &m.text,
                    at: Time(m.at),
                })
                .collect(),
            next: page.next.as_deref(),
        })
    })
}
