//! Users: USER SET, USER GET.

use serde_json::json;

use super::{CmdResult, Context, ok};
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
