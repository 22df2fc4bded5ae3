//! Meetings, audiences and instances: MEETING SET/GET, MEETINGS, AUDIENCE
//! ADD/DEL, INSTANCE SET.

use serde_json::{Value, json};

use super::{CmdResult, Context, listing, ok, page_size};
use crate::protocol::format_time;
use crate::store::{Audience, Instance, InstanceId, Meeting};

fn meeting_json(meeting: &Meeting) -> Value {
    json!({
        "id": meeting.id,
        "title": meeting.title,
        "description": meeting.description,
        "public": meeting.public,
    })
}

/// An instance as replies show it.
pub(super) fn instance_json(instance: &Instance) -> Value {
    json!({
        "meeting": instance.id.meeting,
        "order": instance.id.order,
        "from": format_time(instance.from),
        "to": format_time(instance.to),
        "state": instance.state.as_str(),
    })
}

/// # Format
/// `MEETING SET <meeting> title <s> description <s> public <true/false>`
/// (admin; the fields in any order) -> `{"id","title","description","public"}`
pub async fn set(
    ctx: &Context,
    id: u64,
    title: String,
    description: String,
    public: bool,
) -> CmdResult {
    let meeting = Meeting {
        id,
        title,
        description,
        public,
    };
    ok(meeting_json(&ctx.store.meeting_set(&meeting).await?))
}

/// # Format
/// `MEETING GET <meeting>` -> `{"id","title","description","public",
/// "audience":[email...],"audience_total","instances":[{"meeting","order",
/// "from","to","state"}...],"instances_total"}` (the first 1000 of each)
pub async fn get(ctx: &Context, id: u64) -> CmdResult {
    let detail = ctx.store.meeting_get(id).await?;
    let mut reply = meeting_json(&detail.meeting);
    reply["audience"] = json!(detail.audience);
    reply["audience_total"] = json!(detail.audience_total);
    reply["instances"] = Value::Array(detail.instances.iter().map(instance_json).collect());
    reply["instances_total"] = json!(detail.instances_total);
    ok(reply)
}

/// # Format
/// `MEETINGS [AFTER <meeting>] [LIMIT <n>]` -> `{"meetings":[{"id","title",
/// "public","instances","running"}...],"next":<id or null>}`, by id, at
/// most `n` (default and most: the page limit) after that meeting; fewer
/// when more would pass the reply limit. `instances`: how many it has
/// (MEETING GET lists them); `running`: the order of its running
/// instance, or `null`. Pass `next` as `AFTER` for the following page;
/// `null`: there is none.
pub async fn list(ctx: &Context, after: Option<u64>, limit: Option<u64>) -> CmdResult {
    let limit = page_size(ctx, limit)?;
    let page = ctx.store.meetings_page(after, limit).await?;
    let rows = page.items.iter().map(|m| {
        let row = json!({
            "id": m.id,
            "title": m.title,
            "public": m.public,
            "instances": m.instances,
            "running": m.running,
        });
        (m.id, row)
    });
    Ok(listing("meetings", rows, page.next, ctx.limits.reply_bytes))
}

fn audience_json(meeting: u64, audience: &Audience) -> Value {
    json!({
        "meeting": meeting,
        "changed": audience.changed,
        "audience": audience.emails,
        "total": audience.total,
    })
}

fn lower(emails: &[String]) -> Vec<String> {
    emails.iter().map(|e| e.to_ascii_lowercase()).collect()
}

/// # Format
/// `AUDIENCE ADD <meeting> <email>...` (admin) -> `{"meeting","changed",
/// "audience":[email...],"total"}`
pub async fn audience_add(ctx: &Context, meeting: u64, emails: &[String]) -> CmdResult {
    let audience = ctx.store.audience_add(meeting, &lower(emails)).await?;
    ok(audience_json(meeting, &audience))
}

/// # Format
/// `AUDIENCE DEL <meeting> <email>...` (admin) -> as AUDIENCE ADD
pub async fn audience_del(ctx: &Context, meeting: u64, emails: &[String]) -> CmdResult {
    let audience = ctx.store.audience_del(meeting, &lower(emails)).await?;
    ok(audience_json(meeting, &audience))
}

/// # Format
/// `INSTANCE SET <meeting> <order> from <time> to <time> [FUTURE]` (admin;
/// RFC 3339 times) -> `{"meeting","order","from","to","state"}`; with
/// `FUTURE` only what is still to come may change.
pub async fn instance_set(
    ctx: &Context,
    meeting: u64,
    order: u64,
    from: i64,
    to: i64,
    future: bool,
) -> CmdResult {
    let instance = ctx
        .store
        .instance_set_with(InstanceId::new(meeting, order), from, to, future)
        .await?;
    ok(instance_json(&instance))
}
