//! Who is where: JOIN, LEAVE, PARTICIPANTS, ACTIVE, ATTENDANCE.

use serde_json::{Value, json};

use super::{CmdResult, Context, page_size, target};
use crate::protocol::{Mref, format_time};

/// # Format
/// `JOIN <user> <mref>` -> `{"meeting","order","user","joined_at","id"}`
/// (`id`: the join event's)
pub async fn join(ctx: &Context, user: u64, mref: Mref) -> CmdResult {
    let joined = ctx.store.join(user, target(mref)).await?;
    Ok(json!({
        "meeting": joined.instance.meeting,
        "order": joined.instance.order,
        "user": joined.user,
        "joined_at": format_time(joined.joined_at),
        "id": joined.event_id,
    }))
}

/// # Format
/// `LEAVE <user> <mref>` -> `{"meeting","order","user","left_at","joined_at","id"}`
pub async fn leave(ctx: &Context, user: u64, mref: Mref) -> CmdResult {
    let left = ctx.store.leave(user, target(mref)).await?;
    Ok(json!({
        "meeting": left.instance.meeting,
        "order": left.instance.order,
        "user": left.user,
        "left_at": format_time(left.left_at),
        "joined_at": format_time(left.joined_at),
        "id": left.event_id,
    }))
}

/// # Format
/// `PARTICIPANTS <mref> [AFTER <user>] [LIMIT <n>]` ->
/// `[{"user","name","email","joined_at"}...]` in join order, at most `n`
/// (default and most: the page limit), after that user. Names and e-mails
/// are read in one pipelined round trip.
pub async fn participants(
    ctx: &Context,
    mref: Mref,
    after: Option<u64>,
    limit: Option<u64>,
) -> CmdResult {
    let limit = page_size(ctx, limit)?;
    let (_, list) = ctx.store.participants(target(mref), after, limit).await?;
    let ids: Vec<u64> = list.iter().map(|p| p.user).collect();
    let users = ctx.store.users_get(&ids).await?;
    let rows = list
        .iter()
        .zip(users)
        .map(|(p, user)| {
            json!({
                "user": p.user,
                "name": user.as_ref().map(|u| u.name.as_str()),
                "email": user.as_ref().map(|u| u.email.as_str()),
                "joined_at": format_time(p.joined_at),
            })
        })
        .collect();
    Ok(Value::Array(rows))
}

/// # Format
/// `ACTIVE` -> `[{"meeting","order","title","description","public","from",
/// "to","participants"}...]`
pub async fn active(ctx: &Context) -> CmdResult {
    let rows = ctx
        .store
        .active()
        .await?
        .into_iter()
        .map(|a| {
            json!({
                "meeting": a.instance.id.meeting,
                "order": a.instance.id.order,
                "title": a.title,
                "description": a.description,
                "public": a.public,
                "from": format_time(a.instance.from),
                "to": format_time(a.instance.to),
                "participants": a.participants,
            })
        })
        .collect();
    Ok(Value::Array(rows))
}

/// # Format
/// `ATTENDANCE` -> `[{"meeting","order","title","participants":[{"user",
/// "joined_at"}...]}...]`, big instances read 1000 participants a call
pub async fn attendance(ctx: &Context) -> CmdResult {
    let rows = ctx
        .store
        .attendance()
        .await?
        .into_iter()
        .map(|a| {
            let participants: Vec<Value> = a
                .participants
                .iter()
                .map(|p| json!({"user": p.user, "joined_at": format_time(p.joined_at)}))
                .collect();
            json!({
                "meeting": a.instance.meeting,
                "order": a.instance.order,
                "title": a.title,
                "participants": participants,
            })
        })
        .collect();
    Ok(Value::Array(rows))
}
