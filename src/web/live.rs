//! Live updates as server-sent events, fed by WATCH's fan-out (the same
//! hub and channels as the socket's WATCH): the browser opens one
//! `EventSource` and never polls.
//!
//! - `/live/active`: the live meetings' table, sent again whenever it
//!   changes. One task serves every open page: it watches each running
//!   instance (at most [`WATCHED`]) through the hub, so a join, leave, post
//!   or timeout anywhere redraws the table at once; an instance that
//!   starts or ends without any entry (no one joined) is caught by the
//!   task's own look every [`REFRESH`] (server-side; the browser still
//!   only listens). The task stops when the last page closes.
//! - `/live/i/<M>/<O>?since=<id>`: one instance: its facts, participants
//!   and timeline redrawn, and the event-log and chat rows after `since`
//!   (the last entry the page was drawn with), on every entry of its feed,
//!   and every [`REFRESH`] while it runs (the timeline's "now" moves).
//!   The stream reads the instance's feed after its cursor, so nothing
//!   published while it looked elsewhere is missed.
//!
//! Updates are gathered for [`SETTLE`] before they are drawn: a burst of
//! joins redraws once.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::AbortHandle;

use super::Web;
use super::pages;
use super::timeline::{self, Spans};
use crate::store::{
    FeedItem, Id, InstanceId, InstanceRef, InstanceState, MAX_ID, StoreError, StreamId,
};
use crate::watch::Next;

/// How often the live streams look again by themselves (instances that
/// start or end with no entry; the timeline's "now").
pub const REFRESH: Duration = Duration::from_secs(5);

/// How long changes are gathered before they are drawn.
pub const SETTLE: Duration = Duration::from_millis(150);

/// The most running instances the live meetings' list watches; past that,
/// the others' head counts change every [`REFRESH`].
pub const WATCHED: usize = 500;

/// Feed entries per read.
const FEED_PAGE: usize = 500;

type Shared = Arc<watch::Sender<Option<Arc<str>>>>;

/// The live meetings' table, drawn once for every page that shows it.
#[derive(Default)]
pub struct ActiveFeed {
    /// The table's last drawing, while a task keeps it.
    slot: Mutex<Option<Shared>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ActiveFeed {
    /// A receiver of the table's drawings, starting the task that draws
    /// them if none runs.
    fn subscribe(&self, web: &Arc<Web>) -> watch::Receiver<Option<Arc<str>>> {
        let mut slot = lock(&self.slot);
        if let Some(tx) = slot.as_ref() {
            let mut rx = tx.subscribe();
            rx.mark_changed();
            return rx;
        }
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        *slot = Some(tx.clone());
        tokio::spawn(draw_active(web.clone(), tx));
        rx
    }
}

/// Keep the live meetings' table drawn while a page shows it.
async fn draw_active(web: Arc<Web>, tx: Shared) {
    let notify = Arc::new(Notify::new());
    let mut watched: HashMap<InstanceId, AbortHandle> = HashMap::new();
    loop {
        {
            let mut slot = lock(&web.active.slot);
            if tx.receiver_count() == 0 || web.shutdown.is_cancelled() {
                *slot = None;
                break;
            }
        }
        match web.ctx.store.active().await {
            Ok(active) => {
                let drawn: Arc<str> = pages::active_table(&active).into_string().into();
                tx.send_if_modified(|shown| {
                    let changed = shown.as_deref() != Some(&*drawn);
                    if changed {
                        *shown = Some(drawn.clone());
                    }
                    changed
                });
                let running: HashSet<InstanceId> =
                    active.iter().take(WATCHED).map(|a| a.instance.id).collect();
                watched.retain(|id, task| {
                    let keep = running.contains(id) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for id in running {
                    watched
                        .entry(id)
                        .or_insert_with(|| ping_on_entries(&web, id, notify.clone()));
                }
            }
            Err(err) => tracing::debug!("web view: the live meetings' list: {err}"),
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(REFRESH) => {}
            _ = web.shutdown.cancelled() => {}
        }
        tokio::time::sleep(SETTLE).await;
    }
    for task in watched.values() {
        task.abort();
    }
}

/// Watch `id` through the hub and ring `notify` at each of its entries;
/// ends when the watch fails or falls behind (the list watches it again
/// at its next look).
fn ping_on_entries(web: &Arc<Web>, id: InstanceId, notify: Arc<Notify>) -> AbortHandle {
    let hub = web.ctx.hub.clone();
    tokio::spawn(async move {
        let Ok(mut watcher) = hub.subscribe(id, None).await else {
            return;
        };
        loop {
            let next = watcher.next(4096).await;
            notify.notify_one();
            if matches!(next, Next::Dropped { .. }) {
                return;
            }
        }
    })
    .abort_handle()
}

/// An SSE response of `events`.
fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `/live/active`: the live meetings' table (`{"html":...}` in an
/// `update` event), now and at every change.
pub async fn active(State(web): State<Arc<Web>>) -> Response {
    let rx = web.active.subscribe(&web);
    sse(stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            let drawn = rx.borrow_and_update().clone();
            if let Some(drawn) = drawn {
                let data = serde_json::json!({ "html": &*drawn }).to_string();
                return Some((Ok(Event::default().event("update").data(data)), rx));
            }
        }
    }))
}

/// Where the page's rows end.
#[derive(Deserialize)]
pub struct Since {
    since: Option<String>,
}

/// `/live/i/<M>/<O>?since=<id>`: the instance's `update` events.
pub async fn instance(
    State(web): State<Arc<Web>>,
    Path((meeting, order)): Path<(u64, u64)>,
    Query(q): Query<Since>,
) -> Response {
    let valid = |v: u64| (1..=MAX_ID).contains(&v);
    if !valid(meeting) || !valid(order) {
        return (StatusCode::NOT_FOUND, "no such instance\n").into_response();
    }
    let since = match q.since.as_deref().map(str::parse::<StreamId>).transpose() {
        Ok(since) => since.unwrap_or_default(),
        Err(why) => return (StatusCode::BAD_REQUEST, format!("since: {why}\n")).into_response(),
    };
    let id = InstanceId::new(meeting, order);
    if let Err(err) = web.ctx.store.instance_get(InstanceRef::Exact(id)).await {
        return super::store_error(&web, err);
    }
    let (tx, rx) = mpsc::channel::<Event>(8);
    tokio::spawn(async move {
        if let Err(err) = follow(&web, id, since, &tx).await {
            tracing::debug!(instance = %id, "web view: live stream ended: {err}");
        }
    });
    sse(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    }))
}

/// What a stream knows of its instance.
struct Followed {
    spans: Spans,
    /// The last feed entry read.
    cursor: Option<StreamId>,
    /// Entries after the page's, not sent yet.
    events: Vec<crate::store::Event>,
    messages: Vec<crate::store::Message>,
}

/// Read the feed after the cursor: events into the stretches, entries
/// after `since` kept to be sent.
async fn read_feed(
    web: &Web,
    id: InstanceId,
    since: StreamId,
    state: &mut Followed,
) -> Result<(), StoreError> {
    loop {
        let feed = web.ctx.store.feed(id, state.cursor, FEED_PAGE).await?;
        for (entry, item) in feed.items {
            state.cursor = Some(entry);
            match item {
                FeedItem::Event(event) => {
                    pages::fold(&mut state.spans, &event);
                    if entry > since {
                        state.events.push(event);
                    }
                }
                FeedItem::Message(message) if entry > since => state.messages.push(message),
                FeedItem::Message(_) => {}
                // the page reads the instance's state from Redis on each
                // redraw; a start or an end draws no bar
                FeedItem::Transition(_) => {}
            }
        }
        if feed.next.is_none() {
            return Ok(());
        }
    }
}

/// Send `id`'s updates on `tx` until the page goes or the daemon stops.
async fn follow(
    web: &Arc<Web>,
    id: InstanceId,
    since: StreamId,
    tx: &mpsc::Sender<Event>,
) -> Result<(), StoreError> {
    let hub = &web.ctx.hub;
    let mut watcher = hub.subscribe(id, None).await?;
    let mut state = Followed {
        spans: Spans::new(),
        cursor: None,
        events: Vec::new(),
        messages: Vec::new(),
    };
    loop {
        read_feed(web, id, since, &mut state).await?;
        let (update, ended) = draw(web, id, &mut state).await?;
        if tx.send(update).await.is_err() || ended {
            // an ended instance changes no more: the page stops listening
            return Ok(());
        }
        let dropped = tokio::select! {
            next = watcher.next(4096) => matches!(next, Next::Dropped { .. }),
            _ = tokio::time::sleep(REFRESH) => false,
            _ = tx.closed() => return Ok(()),
            _ = web.shutdown.cancelled() => return Ok(()),
        };
        if dropped {
            // the feed read after the cursor fills what it missed
            watcher = hub.subscribe(id, None).await?;
        }
        tokio::time::sleep(SETTLE).await;
        // what came meanwhile is read from the feed below: let it go
        while let Ok(next) = tokio::time::timeout(Duration::ZERO, watcher.next(4096)).await {
            if matches!(next, Next::Dropped { .. }) {
                watcher = hub.subscribe(id, None).await?;
                break;
            }
        }
    }
}

/// One `update` event: the facts, participants and timeline drawn again,
/// and the rows to add.
async fn draw(
    web: &Web,
    id: InstanceId,
    state: &mut Followed,
) -> Result<(Event, bool), StoreError> {
    let store = &web.ctx.store;
    let exact = InstanceRef::Exact(id);
    let (instance, ended_at) = store.instance_get(exact).await?;
    let present = if instance.state == InstanceState::Active {
        store
            .participants(exact, None, pages::PARTICIPANT_ROWS)
            .await?
            .1
    } else {
        Vec::new()
    };
    let mut ids: Vec<Id> = state.spans.users().to_vec();
    ids.extend(present.iter().map(|p| p.user));
    ids.extend(state.messages.iter().map(|m| m.user));
    let names = pages::names(store, &ids).await?;
    let chart = pages::chart(&instance, ended_at, store.now(), &state.spans, &names);
    let events: Vec<String> = state
        .events
        .drain(..)
        .map(|e| pages::event_row(&e, &names).into_string())
        .collect();
    let chat: Vec<String> = state
        .messages
        .drain(..)
        .map(|m| pages::message_row(&m, &names).into_string())
        .collect();
    let data = serde_json::json!({
        "facts": pages::facts(&instance, ended_at, pages::in_now(&instance, &state.spans)).into_string(),
        "participants": pages::participants_table(web, &present, &names, instance.state).into_string(),
        "timeline": timeline::svg(&chart).into_string(),
        "events": events,
        "chat": chat,
        "ended": instance.state == InstanceState::Ended,
    });
    let ended = instance.state == InstanceState::Ended;
    Ok((
        Event::default().event("update").data(data.to_string()),
        ended,
    ))
}
