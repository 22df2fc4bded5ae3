//! The pages, written with maud (which escapes every value it is given),
//! and the fragments the live streams send again as things change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::timeline::{self, Chart, Spans};
use super::{Web, html, store_error};
use crate::archive::read::{self, Reader};
use crate::archive::{Attendance, DbError};
use crate::error::Code;
use crate::protocol::Time;
use crate::store::{
    ActiveInstance, Event, Id, Instance, InstanceId, InstanceRef, InstanceState, Known, MAX_ID,
    Message, Millis, Page, Participant, Store, StoreError,
};

/// Rows per page of the event log and of the chat.
pub const PAGE_ROWS: usize = 50;

/// Meetings per page of the list of every meeting.
pub const MEETING_ROWS: usize = 50;

/// Participants shown (the head count says if there are more).
pub const PARTICIPANT_ROWS: usize = 1000;

/// An e-mail as shown without a token: its first character, then `***`
/// up to the `@` and the domain (`a***@example.com`); all `***` when it
/// has no `@`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// A time as the pages show it: `2026-11-22 10:00:05 UTC`.
pub fn when(ms: Millis) -> String {
    let text = Time(ms).to_string();
    if text.len() >= 19 {
        format!("{} {} UTC", &text[..10], &text[11..19])
    } else {
        text
    }
}

/// A time of day: `10:00:05` (UTC).
pub fn time_of_day(ms: Millis) -> String {
    let text = Time(ms).to_string();
    text.get(11..19).map_or(text.clone(), str::to_string)
}

/// A window: `2026-11-22 10:00 – 12:00 UTC` (the end's day when it differs).
pub fn window(from: Millis, to: Millis) -> String {
    let (a, b) = (Time(from).to_string(), Time(to).to_string());
    if a.len() < 16 || b.len() < 16 {
        return format!("{a} – {b}");
    }
    if a[..10] == b[..10] {
        format!("{} {} – {} UTC", &a[..10], &a[11..16], &b[11..16])
    } else {
        format!(
            "{} {} – {} {} UTC",
            &a[..10],
            &a[11..16],
            &b[..10],
            &b[11..16]
        )
    }
}

/// A meeting or order id from a path: 1..2^53-1.
fn id(value: u64) -> Option<Id> {
    (1..=MAX_ID).contains(&value).then_some(value)
}

/// The frame of every page.
pub fn page(web: &Web, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · meetingd" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "meetingd" }
                    nav {
                        a href="/" { "Live meetings" }
                        a href="/#meetings" { "All meetings" }
                        @if web.guarded() {
                            form.logout method="post" action="/logout" {
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
                footer { "Read-only view · times in UTC" }
            }
        }
    }
}

/// The login form (`failed`: the token offered was wrong).
pub fn login(next: &str, failed: bool) -> Response {
    html(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · meetingd" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header.top { a.brand href="/" { "meetingd" } }
                main {
                    h1 { "Log in" }
                    p.sub { "This view asks for the daemon's http.token." }
                    @if failed { p.problem { "That is not the token." } }
                    form.login method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "Token" }
                        input #token type="password" name="token" autocomplete="current-password" required;
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    })
}

/// An error page.
pub fn error(web: &Web, status: StatusCode, message: &str) -> Response {
    let mut response = html(page(
        web,
        status.canonical_reason().unwrap_or("Error"),
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.problem { (message) }
            p { a href="/" { "Back to the live meetings" } }
        },
    ));
    *response.status_mut() = status;
    response
}

/// Users by id, from the store's cache or one read.
pub async fn names(store: &Store, ids: &[Id]) -> Result<HashMap<Id, Arc<Known>>, StoreError> {
    let mut unique: Vec<Id> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let known = store.users_known(&unique).await?;
    Ok(unique
        .into_iter()
        .zip(known)
        .filter_map(|(id, k)| k.map(|k| (id, k)))
        .collect())
}

/// A user's name, or `user N` for one that no longer exists.
fn name_of(names: &HashMap<Id, Arc<Known>>, user: Id) -> String {
    names
        .get(&user)
        .map_or_else(|| format!("user {user}"), |k| k.name.clone())
}

/// A user as a cell: their name and id.
fn who(names: &HashMap<Id, Arc<Known>>, user: Id) -> Markup {
    html! {
        span.name { (name_of(names, user)) }
        " " span.id { "#" (user) }
    }
}

/// The live meetings, as a table (or a sentence when there is none).
pub fn active_table(active: &[ActiveInstance]) -> Markup {
    html! {
        @if active.is_empty() {
            p.empty { "No meeting is running right now." }
        } @else {
            table.list #active-table {
                thead { tr {
                    th { "Meeting" } th { "Instance" } th { "Window" }
                    th.num { "Participants" } th { "Access" }
                } }
                tbody {
                    @for a in active {
                        tr data-instance=(a.instance.id) {
                            td {
                                a.title href={ "/m/" (a.instance.id.meeting) } { (a.title) }
                                @if !a.description.is_empty() { div.desc { (a.description) } }
                            }
                            td { a href={ "/i/" (a.instance.id.meeting) "/" (a.instance.id.order) } { (a.instance.id) } }
                            td { (window(a.instance.from, a.instance.to)) }
                            td.num.count { (a.participants) }
                            td { @if a.public { span.badge.public { "public" } } @else { span.badge.private { "private" } } }
                        }
                    }
                }
            }
        }
    }
}

/// Which page of the meetings' list.
#[derive(Deserialize)]
pub struct MeetingsQuery {
    after: Option<u64>,
}

/// `/`: the live meetings (kept up to date by `/live/active`), then the
/// meetings, a page at a time.
pub async fn live_page(State(web): State<Arc<Web>>, Query(q): Query<MeetingsQuery>) -> Response {
    let store = &web.ctx.store;
    let active = match store.active().await {
        Ok(active) => active,
        Err(err) => return store_error(&web, err),
    };
    let meetings = match store.meetings_page(q.after, MEETING_ROWS).await {
        Ok(page) => page,
        Err(err) => return store_error(&web, err),
    };
    html(page(
        &web,
        "Live meetings",
        html! {
            h1 { "Live meetings" }
            p.sub { "Updated as people come and go. " span.live-status #live-status {} }
            div #active data-live="/live/active" { (active_table(&active)) }
            h2 #meetings { "All meetings" }
            @if meetings.items.is_empty() {
                p.empty { "No meeting yet." }
            } @else {
                table.list {
                    thead { tr { th.num { "#" } th { "Title" } th.num { "Instances" } th { "Running" } th { "Access" } } }
                    tbody {
                        @for m in &meetings.items {
                            tr {
                                td.num { (m.id) }
                                td { a href={ "/m/" (m.id) } { (m.title) } }
                                td.num { (m.instances) }
                                td { @if let Some(order) = m.running {
                                    a href={ "/i/" (m.id) "/" (order) } { "instance " (order) }
                                } @else { span.muted { "—" } } }
                                td { @if m.public { span.badge.public { "public" } } @else { span.badge.private { "private" } } }
                            }
                        }
                    }
                }
            }
            nav.pager {
                @if q.after.is_some() { a href="/#meetings" { "← First page" } }
                @if let Some(next) = meetings.next { a href={ "/?after=" (next) "#meetings" } { "Next page →" } }
            }
        },
    ))
}

/// A state as a badge.
fn state_badge(state: InstanceState) -> Markup {
    html! { span class={ "badge " (state.as_str()) } { (state.as_str()) } }
}

/// `/m/<M>`: a meeting, its audience (e-mails masked without a token) and
/// its instances.
pub async fn meeting_page(State(web): State<Arc<Web>>, Path(meeting): Path<u64>) -> Response {
    let Some(meeting) = id(meeting) else {
        return super::pages::error(&web, StatusCode::NOT_FOUND, "There is no such meeting.");
    };
    let detail = match web.ctx.store.meeting_get(meeting).await {
        Ok(detail) => detail,
        Err(err) => return store_error(&web, err),
    };
    let archived = archived_orders(&web, meeting, &detail.instances).await;
    let m = &detail.meeting;
    html(page(
        &web,
        &m.title,
        html! {
            p.crumbs { a href="/" { "Live meetings" } " › meeting " (m.id) }
            h1 { (m.title) }
            @if !m.description.is_empty() { p.lead { (m.description) } }
            dl.facts {
                dt { "Access" } dd { @if m.public { "public: anyone may join" } @else { "private: its audience only" } }
                dt { "Audience" } dd {
                    (detail.audience_total) " e-mail" @if detail.audience_total != 1 { "s" }
                    @if !detail.audience.is_empty() {
                        ": "
                        @for (i, email) in detail.audience.iter().enumerate() {
                            @if i > 0 { ", " }
                            span.email { (shown_email(&web, email)) }
                        }
                    }
                }
            }
            h2 { "Instances" }
            @if detail.instances.is_empty() {
                p.empty { "No instance is scheduled." }
            } @else {
                table.list {
                    thead { tr { th.num { "Order" } th { "Window" } th { "State" } } }
                    tbody {
                        @for i in &detail.instances {
                            tr {
                                td.num { a href={ "/i/" (i.id.meeting) "/" (i.id.order) } { (i.id.order) } }
                                td { (window(i.from, i.to)) }
                                td { (state_badge(i.state))
                                    @if archived.contains(&i.id.order) { " " span.badge.archived title="The archive holds it whole: its page reads from there." { "archived" } } }
                            }
                        }
                    }
                }
                @if detail.instances_total > detail.instances.len() as u64 {
                    p.muted { "The first " (detail.instances.len()) " of " (detail.instances_total) " are shown." }
                }
            }
        },
    ))
}

/// Which of a meeting's ended instances the archive holds (none without
/// an archive, or when it cannot be read: logged).
async fn archived_orders(web: &Web, meeting: Id, instances: &[Instance]) -> HashSet<Id> {
    let Some(reader) = &web.archive else {
        return HashSet::new();
    };
    let ended: Vec<Id> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Ended)
        .map(|i| i.id.order)
        .collect();
    if ended.is_empty() {
        return HashSet::new();
    }
    reader
        .archived_orders(meeting, &ended)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!("web view: the archive cannot be read: {err}");
            HashSet::new()
        })
}

/// An e-mail as this view shows it: whole to a token's bearer, masked
/// otherwise.
pub fn shown_email(web: &Web, email: &str) -> String {
    if web.guarded() {
        email.to_string()
    } else {
        mask_email(email)
    }
}

/// Who is in now, as a table.
pub fn participants_table(
    web: &Web,
    list: &[Participant],
    names: &HashMap<Id, Arc<Known>>,
    state: InstanceState,
) -> Markup {
    html! {
        @if list.is_empty() {
            p.empty { @match state {
                InstanceState::Scheduled => "It has not started.",
                InstanceState::Ended => "It has ended: nobody is in.",
                InstanceState::Active => "Nobody is in right now.",
            } }
        } @else {
            table.list #participants-table {
                thead { tr { th { "Who" } th { "E-mail" } th { "Joined" } } }
                tbody {
                    @for p in list {
                        tr data-user=(p.user) {
                            td { (who(names, p.user)) }
                            td.email { @if let Some(k) = names.get(&p.user) { (shown_email(web, &k.email)) } }
                            td { (when(p.joined_at)) }
                        }
                    }
                }
            }
            @if list.len() >= PARTICIPANT_ROWS { p.muted { "The first " (PARTICIPANT_ROWS) " are shown." } }
        }
    }
}

/// A row of the event log.
pub fn event_row(event: &Event, names: &HashMap<Id, Arc<Known>>) -> Markup {
    html! {
        tr data-id=(event.id) {
            td.time title=(when(event.at)) { (time_of_day(event.at)) }
            td { span class={ "badge " (event.kind.as_str()) } { (event.kind.as_str()) } }
            td {
                @if let Some(user) = event.user {
                    (who(names, user))
                }
            }
        }
    }
}

/// A row of the chat.
pub fn message_row(message: &Message, names: &HashMap<Id, Arc<Known>>) -> Markup {
    html! {
        tr data-id=(message.id) {
            td.time title=(when(message.at)) { (time_of_day(message.at)) }
            td { (who(names, message.user)) }
            td.text { (message.text) }
        }
    }
}

/// An instance's header facts.
pub fn facts(instance: &Instance, ended_at: Option<Millis>, present: usize) -> Markup {
    html! {
        dl.facts #facts {
            dt { "Window" } dd { (window(instance.from, instance.to)) }
            dt { "State" } dd { (state_badge(instance.state))
                @if let Some(at) = ended_at { " at " (when(at)) } }
            dt { "In now" } dd.count { (present) }
        }
    }
}

/// How many are in now, by the event log (every one, where the table of
/// participants shows the first [`PARTICIPANT_ROWS`]).
pub fn in_now(instance: &Instance, spans: &Spans) -> usize {
    if instance.state == InstanceState::Active {
        spans.present().count()
    } else {
        0
    }
}

/// Every join, leave and timeout of an instance, folded into stretches
/// (the event log read a page of 1000 at a time, as REPORT reads it).
pub async fn spans(store: &Store, instance: InstanceId) -> Result<Spans, StoreError> {
    let mut spans = Spans::new();
    let mut after: Option<String> = None;
    loop {
        let (_, page) = store
            .events(InstanceRef::Exact(instance), after.as_deref(), 1000)
            .await?;
        for event in &page.items {
            fold(&mut spans, event);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(spans),
        }
    }
}

/// The same from the archive.
async fn archived_spans(reader: &Reader, instance: InstanceId) -> Result<Spans, DbError> {
    let mut spans = Spans::new();
    let mut after = None;
    loop {
        let page = reader.events(instance, after, read::MAX_ROWS).await?;
        for event in &page.items {
            fold(&mut spans, event);
        }
        match page.next.as_deref().and_then(read::cursor) {
            Some(next) => after = Some(next),
            None => return Ok(spans),
        }
    }
}

/// One event into the stretches.
pub fn fold(spans: &mut Spans, event: &Event) {
    // an instance's start and end entries name nobody: its end's timeouts
    // close the stretches
    let Some(user) = event.user else {
        return;
    };
    match event.kind {
        crate::store::EventKind::Join => spans.join(user, event.at),
        _ => spans.leave(user, event.at),
    }
}

/// The timeline of an instance, its rows labelled `Name #id`.
pub fn chart(
    instance: &Instance,
    ended_at: Option<Millis>,
    now: Millis,
    spans: &Spans,
    names: &HashMap<Id, Arc<Known>>,
) -> Chart {
    let until = ended_at.unwrap_or(now).min(instance.to);
    Chart {
        name: instance.id.to_string(),
        from: instance.from,
        to: instance.to,
        now: (instance.state == InstanceState::Active).then_some(now),
        rows: spans.rows(until, |u| format!("{} #{u}", name_of(names, u))),
    }
}

/// Which pages of the event log and the chat.
#[derive(Deserialize, Default)]
pub struct InstanceQuery {
    events_after: Option<String>,
    chat_after: Option<String>,
}

/// A link to the instance page with these pages.
fn instance_link(instance: InstanceId, events: Option<&str>, chat: Option<&str>) -> String {
    let mut link = format!("/i/{}/{}", instance.meeting, instance.order);
    let mut sep = '?';
    for (key, value) in [("events_after", events), ("chat_after", chat)] {
        if let Some(value) = value {
            link.push(sep);
            link.push_str(key);
            link.push('=');
            // ids are digits and a dash: nothing to encode
            link.extend(value.chars().filter(|c| c.is_ascii_digit() || *c == '-'));
            sep = '&';
        }
    }
    link
}

/// `/i/<M>/<O>`: an instance.
pub async fn instance_page(
    State(web): State<Arc<Web>>,
    Path((meeting, order)): Path<(u64, u64)>,
    Query(q): Query<InstanceQuery>,
) -> Response {
    let (Some(meeting), Some(order)) = (id(meeting), id(order)) else {
        return error(&web, StatusCode::NOT_FOUND, "There is no such instance.");
    };
    match instance_body(&web, InstanceId::new(meeting, order), &q).await {
        Ok(markup) => html(markup),
        Err(err) => store_error(&web, err),
    }
}

/// Where an instance page read what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Redis; `archive` says why not the archive.
    Redis {
        /// Why the archive was not read.
        archive: NotArchived,
    },
    /// The archive database, which copied it whole at `archived_at`.
    Archive {
        /// When the archive finished copying it.
        archived_at: Millis,
    },
}

/// Why an instance page read Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotArchived {
    /// No archive is configured.
    NoArchive,
    /// The instance has not ended (Redis is where it lives).
    Running,
    /// The archive does not hold it (yet).
    NotYet,
    /// The archive could not be read (logged).
    Unreadable,
}

/// What an instance page shows, wherever it was read.
struct Shown {
    instance: Instance,
    ended_at: Option<Millis>,
    source: Source,
    present: Vec<Participant>,
    events: Page<Event>,
    chat: Page<Message>,
    spans: Spans,
    /// The archive's attendance rows (archived instances only).
    attendance: Vec<Attendance>,
    names: HashMap<Id, Arc<Known>>,
}

/// A page cursor the archive takes, or the BAD_REQUEST EVENTS and
/// MESSAGES give for one that is not an id.
fn archive_cursor(after: Option<&str>) -> Result<Option<(i64, i64)>, StoreError> {
    match after {
        None | Some("") => Ok(None),
        Some(after) => read::cursor(after).map(Some).ok_or_else(|| StoreError::Rule {
            code: Code::BadRequest,
            message: format!(
                "after must be an id like 1700000000000-0 (each part at most 2^64-1), got {after:?}"
            ),
        }),
    }
}

/// Users by id from the archive's `users` rows, and from Redis for any
/// it does not hold.
async fn archived_names(
    web: &Web,
    reader: &Reader,
    ids: &[Id],
) -> Result<HashMap<Id, Arc<Known>>, DbError> {
    let found = reader.users(ids).await?;
    let mut names: HashMap<Id, Arc<Known>> = found
        .into_values()
        .map(|u| {
            (
                u.id,
                Arc::new(Known {
                    name: u.name,
                    email: u.email,
                }),
            )
        })
        .collect();
    let missing: Vec<Id> = ids
        .iter()
        .copied()
        .filter(|u| !names.contains_key(u))
        .collect();
    if !missing.is_empty()
        && let Ok(more) = self::names(&web.ctx.store, &missing).await
    {
        names.extend(more);
    }
    Ok(names)
}

/// An ended instance as the archive holds it, if it does: a page of its
/// events and of its chat, its timeline's stretches from every archived
/// event, its attendance rows, and the names in them.
async fn from_archive(
    web: &Web,
    reader: &Reader,
    id: InstanceId,
    events_after: Option<(i64, i64)>,
    chat_after: Option<(i64, i64)>,
) -> Result<Option<Shown>, DbError> {
    let Some(archived) = reader.instance(id).await? else {
        return Ok(None);
    };
    let events = reader.events(id, events_after, PAGE_ROWS).await?;
    let chat = reader.messages(id, chat_after, PAGE_ROWS).await?;
    let spans = archived_spans(reader, id).await?;
    let attendance = reader.attendance(id, PARTICIPANT_ROWS).await?;
    let mut ids: Vec<Id> = spans.users().to_vec();
    ids.extend(events.items.iter().filter_map(|e| e.user));
    ids.extend(chat.items.iter().map(|m| m.user));
    ids.extend(attendance.iter().map(|a| a.user));
    ids.sort_unstable();
    ids.dedup();
    let names = archived_names(web, reader, &ids).await?;
    Ok(Some(Shown {
        instance: archived.instance,
        ended_at: archived.ended_at,
        source: Source::Archive {
            archived_at: archived.archived_at,
        },
        present: Vec::new(),
        events,
        chat,
        spans,
        attendance,
        names,
    }))
}

/// An ended instance from the archive when it holds it. `Ok(Err(why))`:
/// read Redis, because of `why`.
async fn archived(
    web: &Web,
    instance: &Instance,
    events_after: Option<&str>,
    chat_after: Option<&str>,
) -> Result<Result<Shown, NotArchived>, StoreError> {
    if instance.state != InstanceState::Ended {
        return Ok(Err(NotArchived::Running));
    }
    let Some(reader) = &web.archive else {
        return Ok(Err(NotArchived::NoArchive));
    };
    let (events_after, chat_after) = (archive_cursor(events_after)?, archive_cursor(chat_after)?);
    match from_archive(web, reader, instance.id, events_after, chat_after).await {
        Ok(Some(shown)) => Ok(Ok(shown)),
        Ok(None) => Ok(Err(NotArchived::NotYet)),
        Err(err) => {
            tracing::warn!(
                "web view: the archive cannot be read, showing {} from Redis: {err}",
                instance.id
            );
            Ok(Err(NotArchived::Unreadable))
        }
    }
}

/// An instance from Redis.
async fn from_redis(
    web: &Web,
    instance: Instance,
    ended_at: Option<Millis>,
    why: NotArchived,
    q: &InstanceQuery,
) -> Result<Shown, StoreError> {
    let store = &web.ctx.store;
    let exact = InstanceRef::Exact(instance.id);
    let present = if instance.state == InstanceState::Active {
        store.participants(exact, None, PARTICIPANT_ROWS).await?.1
    } else {
        Vec::new()
    };
    let (_, events) = store
        .events(exact, q.events_after.as_deref(), PAGE_ROWS)
        .await?;
    let (_, chat) = store
        .messages(exact, None, q.chat_after.as_deref(), PAGE_ROWS)
        .await?;
    let spans = spans(store, instance.id).await?;
    let mut ids: Vec<Id> = spans.users().to_vec();
    ids.extend(present.iter().map(|p| p.user));
    ids.extend(events.items.iter().filter_map(|e| e.user));
    ids.extend(chat.items.iter().map(|m| m.user));
    let names = names(store, &ids).await?;
    Ok(Shown {
        instance,
        ended_at,
        source: Source::Redis { archive: why },
        present,
        events,
        chat,
        spans,
        attendance: Vec::new(),
        names,
    })
}

/// What an instance page shows: an ended instance from the archive when
/// one is configured and holds it, anything else from Redis.
async fn shown(web: &Web, id: InstanceId, q: &InstanceQuery) -> Result<Shown, StoreError> {
    let (instance, ended_at) = web.ctx.store.instance_get(InstanceRef::Exact(id)).await?;
    match archived(
        web,
        &instance,
        q.events_after.as_deref(),
        q.chat_after.as_deref(),
    )
    .await?
    {
        Ok(shown) => Ok(shown),
        Err(why) => from_redis(web, instance, ended_at, why, q).await,
    }
}

/// Where the page read from, in words.
fn source_line(source: Source) -> Markup {
    html! {
        p.source #source {
            @match source {
                Source::Archive { archived_at } => {
                    "Read from the archive, which holds this instance whole since " (when(archived_at)) "."
                }
                Source::Redis { archive: NotArchived::NoArchive } => { "Read from Redis (no archive is configured)." }
                Source::Redis { archive: NotArchived::Running } => { "Read from Redis." }
                Source::Redis { archive: NotArchived::NotYet } => { "Read from Redis: the archive does not hold it yet." }
                Source::Redis { archive: NotArchived::Unreadable } => {
                    "Read from Redis: the archive cannot be read right now (the daemon's log says why)."
                }
            }
        }
    }
}

/// A duration as `h:mm:ss`.
fn present_for(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The archive's attendance rows, as a table.
fn attendance_table(rows: &[Attendance], names: &HashMap<Id, Arc<Known>>) -> Markup {
    html! {
        @if rows.is_empty() {
            p.empty { "Nobody attended." }
        } @else {
            table.list #attendance {
                thead { tr { th { "Who" } th { "First join" } th { "Last leave" } th.num { "Present" } th.num { "Joins" } th.num { "Messages" } } }
                tbody {
                    @for a in rows {
                        tr data-user=(a.user) {
                            td { (who(names, a.user)) }
                            td.time { (when(a.first_join)) }
                            td.time { @if let Some(at) = a.last_leave { (when(at)) } }
                            td.num { (present_for(a.present_ms)) }
                            td.num { (a.joins) }
                            td.num { (a.messages) }
                        }
                    }
                }
            }
            @if rows.len() >= PARTICIPANT_ROWS { p.muted { "The first " (PARTICIPANT_ROWS) " are shown." } }
        }
    }
}

async fn instance_body(web: &Web, id: InstanceId, q: &InstanceQuery) -> Result<Markup, StoreError> {
    let store = &web.ctx.store;
    let detail = store.meeting_get(id.meeting).await?;
    // where the live stream starts: after everything read below
    let since = store.feed(id, None, 1).await?.last;
    let Shown {
        instance,
        ended_at,
        source,
        present,
        events,
        chat,
        spans,
        attendance,
        names,
    } = shown(web, id, q).await?;
    let now = store.now();
    let chart = chart(&instance, ended_at, now, &spans, &names);
    let live = instance.state != InstanceState::Ended;
    let archived = matches!(source, Source::Archive { .. });
    let forgotten = instance.state == InstanceState::Ended
        && !archived
        && events.items.is_empty()
        && q.events_after.is_none()
        && !web.retention.is_zero()
        && now > instance.to + web.retention.as_millis() as i64;
    let m = &detail.meeting;
    Ok(page(
        web,
        &format!("{} · {}", m.title, id),
        html! {
            div #instance data-live=[live.then(|| format!("/live/i/{}/{}?since={since}", id.meeting, id.order))] {
                p.crumbs { a href="/" { "Live meetings" } " › " a href={ "/m/" (id.meeting) } { (m.title) } " › instance " (id.order) }
                h1 { (m.title) " " span.muted { (id) } }
                @if !m.description.is_empty() { p.lead { (m.description) } }
                @if live { p.sub { span.live-status #live-status {} } }
                (source_line(source))
                div #facts-box { (facts(&instance, ended_at, in_now(&instance, &spans))) }
                section {
                    h2 { "Attendance timeline" }
                    div.timeline-box #timeline { (timeline::svg(&chart)) }
                    p.muted { a href={ "/i/" (id.meeting) "/" (id.order) "/timeline.svg" } download { "Download the SVG" }
                        " · the same picture as " code { "meetingctl report " (id) " --svg" } }
                }
                @if archived {
                    section {
                        h2 { "Attendance" }
                        (attendance_table(&attendance, &names))
                    }
                } @else {
                    section {
                        h2 { "Participants now" }
                        div #participants { (participants_table(web, &present, &names, instance.state)) }
                    }
                }
                div.columns {
                    section {
                        h2 { "Event log" }
                        @if forgotten {
                            p.problem { "This instance's history was deleted from Redis "
                                (web.retention.as_secs() / 86_400) " days after its end (retention.days); "
                                @if web.archive.is_some() { "the archive database keeps it." }
                                @else { "no archive is configured (archive.url) to keep it." } }
                        }
                        table.list.log #events data-tail=(events.next.is_none()) {
                            thead { tr { th { "When (UTC)" } th { "What" } th { "Who" } } }
                            tbody { @for e in &events.items { (event_row(e, &names)) } }
                        }
                        @if events.items.is_empty() && !forgotten { p.empty.none { "No event yet." } }
                        nav.pager {
                            @if q.events_after.is_some() { a href=(instance_link(id, None, q.chat_after.as_deref())) { "← First page" } }
                            @if let Some(next) = &events.next { a href=(instance_link(id, Some(next), q.chat_after.as_deref())) { "Next page →" } }
                        }
                    }
                    section {
                        h2 { "Chat" }
                        table.list.log #chat data-tail=(chat.next.is_none()) {
                            thead { tr { th { "When (UTC)" } th { "Who" } th { "Message" } } }
                            tbody { @for msg in &chat.items { (message_row(msg, &names)) } }
                        }
                        @if chat.items.is_empty() { p.empty.none { "No message yet." } }
                        nav.pager {
                            @if q.chat_after.is_some() { a href=(instance_link(id, q.events_after.as_deref(), None)) { "← First page" } }
                            @if let Some(next) = &chat.next { a href=(instance_link(id, q.events_after.as_deref(), Some(next))) { "Next page →" } }
                        }
                    }
                }
            }
        },
    ))
}

/// `/i/<M>/<O>/timeline.svg`: the timeline alone, as a file (from the
/// archive for an ended instance it holds, as the page).
pub async fn timeline_file(
    State(web): State<Arc<Web>>,
    Path((meeting, order)): Path<(u64, u64)>,
) -> Response {
    let (Some(meeting), Some(order)) = (id(meeting), id(order)) else {
        return error(&web, StatusCode::NOT_FOUND, "There is no such instance.");
    };
    let id = InstanceId::new(meeting, order);
    let store = &web.ctx.store;
    let drawn = async {
        let (instance, ended_at) = store.instance_get(InstanceRef::Exact(id)).await?;
        let archived = match &web.archive {
            Some(reader) if instance.state == InstanceState::Ended => {
                match timeline_from_archive(&web, reader, id).await {
                    Ok(found) => found,
                    Err(err) => {
                        tracing::warn!(
                            "web view: the archive cannot be read, drawing {id} from Redis: {err}"
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some((instance, ended_at, spans, names)) = archived {
            return Ok(chart(&instance, ended_at, store.now(), &spans, &names));
        }
        let spans = spans(store, id).await?;
        let names = names(store, spans.users()).await?;
        Ok::<_, StoreError>(chart(&instance, ended_at, store.now(), &spans, &names))
    };
    match drawn.await {
        Ok(chart) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    &format!("inline; filename=\"timeline-{meeting}-{order}.svg\""),
                ),
            ],
            timeline::svg_file(&chart),
        )
            .into_response(),
        Err(err) => store_error(&web, err),
    }
}

/// What a timeline is drawn from, read from the archive.
type Drawn = (Instance, Option<Millis>, Spans, HashMap<Id, Arc<Known>>);

/// An archived instance's timeline, if the archive holds it.
async fn timeline_from_archive(
    web: &Web,
    reader: &Reader,
    id: InstanceId,
) -> Result<Option<Drawn>, DbError> {
    let Some(archived) = reader.instance(id).await? else {
        return Ok(None);
    };
    let spans = archived_spans(reader, id).await?;
    let names = archived_names(web, reader, spans.users()).await?;
    Ok(Some((archived.instance, archived.ended_at, spans, names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_mails_are_masked_to_their_first_letter_and_domain() {
        assert_eq!(mask_email("ada@example.com"), "a***@example.com");
        assert_eq!(mask_email("@x"), "***@x");
        assert_eq!(mask_email("nobody"), "***");
        assert_eq!(mask_email("élodie@exemple.fr"), "é***@exemple.fr");
    }

    #[test]
    fn times_and_windows_read_in_utc() {
        let t = 1_800_000_000_000; // 2027-01-15 08:00 UTC
        assert_eq!(when(t + 5_000), "2027-01-15 08:00:05 UTC");
        assert_eq!(window(t, t + 3_600_000), "2027-01-15 08:00 – 09:00 UTC");
        assert_eq!(
            window(t, t + 86_400_000),
            "2027-01-15 08:00 – 2027-01-16 08:00 UTC"
        );
    }

    #[test]
    fn fragments_escape_what_users_wrote() {
        let mut names = HashMap::new();
        names.insert(
            7,
            Arc::new(Known {
                name: "<img src=x onerror=alert(1)>".into(),
                email: "<b>@x".into(),
            }),
        );
        let message = Message {
            id: "1-0".into(),
            user: 7,
            text: "<script>alert('chat')</script>".into(),
            at: 0,
        };
        let row = message_row(&message, &names).into_string();
        assert!(!row.contains("<script>"), "{row}");
        assert!(!row.contains("<img"), "{row}");
        assert!(
            row.contains("&lt;script&gt;alert('chat')&lt;/script&gt;"),
            "{row}"
        );
        assert!(row.contains("&lt;img src=x onerror=alert(1)&gt;"), "{row}");
        let links = instance_link(InstanceId::new(1, 2), Some("5-0\"><x"), None);
        assert_eq!(links, "/i/1/2?events_after=5-0");
    }
}
