//! Users: USER SET, USER GET, USERS.

use serde_json::json;

use super::{CmdResult, Context, listing, ok, page_size};
use crate::store::User;

fn user_json(user: &User) -> serde_json::Value {
    json!({
        "id": user.id,
        "name": user.name,
        "age": user.age,
        "gender": user.gender,
        "email": user.email,
    })
}

/// # Format
/// `USER SET <user> name <s> age <n> gender <s> email <s>` (admin; the
/// fields in any order) -> `{"id","name","age","gender","email"}`, the
/// e-mail lower-cased.
pub async fn set(
    ctx: &Context,
    id: u64,
    name: String,
    age: u8,
    gender: String,
    email: String,
) -> CmdResult {
    let user = User {
        id,
        name,
        age,
        gender,
        email: email.to_ascii_lowercase(),
    };
    ok(user_json(&ctx.store.user_set(&user).await?))
}

/// # Format
/// `USER GET <user>` -> `{"id","name","age","gender","email"}`
pub async fn get(ctx: &Context, id: u64) -> CmdResult {
    ok(user_json(&ctx.store.user_get(id).await?))
}

/// # Format
/// `USERS [AFTER <user>] [LIMIT <n>]` -> `{"users":[{"id","name","age",
/// "gender","email"}...],"next":<id or null>}`, by id, at most `n`
/// (default and most: the page limit) after that user; fewer when more
/// would pass the reply limit. Pass `next` as `AFTER` for the following
/// page; `null`: there is none. What was stored before meetingd 0.3 is
/// listed once a daemon has indexed it (its log says when).
pub async fn list(ctx: &Context, after: Option<u64>, limit: Option<u64>) -> CmdResult {
    let limit = page_size(ctx, limit)?;
    let page = ctx.store.users_page(after, limit).await?;
    Ok(listing(
        "users",
        page.items.iter().map(|u| (u.id, user_json(u))),
        page.next,
        ctx.limits.reply_bytes,
    ))
}
