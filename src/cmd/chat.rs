//! The chat: POST, MESSAGES.

use serde_json::{Value, json};

use super::{CmdError, CmdResult, Context, page_size, target};
use crate::error::Code;
use crate::protocol::{Mref, format_time};

/// # Format
/// `POST <user> <mref> <text>` -> `{"id","meeting","order","user","at"}`;
/// a text over the chat text limit is `too_large`.
pub async fn post(ctx: &Context, user: u64, mref: Mref, text: &str) -> CmdResult {
    if text.len() > ctx.limits.text {
        return Err(CmdError::new(
            Code::TooLarge,
            format!(
                "the text is {} bytes, over the limit of {}",
                text.len(),
                ctx.limits.text
            ),
        ));
    }
    let posted = ctx.store.post(user, target(mref), text).await?;
    Ok(json!({
        "id": posted.id,
        "meeting": posted.instance.meeting,
        "order": posted.instance.order,
        "user": posted.user,
        "at": format_time(posted.at),
    }))
}

/// # Format
/// `MESSAGES <mref> [USER <user>] [AFTER <id>] [LIMIT <n>]` ->
/// `{"messages":[{"id","user","text","at"}...],"next":<id or null>}`,
/// oldest first; pass `next` as `AFTER` for the following page.
pub async fn messages(
    ctx: &Context,
    mref: Mref,
    user: Option<u64>,
    after: Option<&str>,
    limit: Option<u64>,
) -> CmdResult {
    let limit = page_size(ctx, limit)?;
    let (_, page) = ctx.store.messages(target(mref), user, after, limit).await?;
    let messages: Vec<Value> = page
        .items
        .iter()
        .map(|m| json!({"id": m.id, "user": m.user, "text": m.text, "at": format_time(m.at)}))
        .collect();
    Ok(json!({"messages": messages, "next": page.next}))
}
