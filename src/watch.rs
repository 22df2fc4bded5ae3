//! WATCH's fan-out: one reader per watched instance, however many watch it.
//!
//! The reader reads the instance's merged feed (`meet_feed`) after its
//! cursor and, when there is nothing new, blocks on its own Redis
//! connection until there is (XREAD BLOCK): no polling. Every entry is
//! rendered once into its reply line and sent on a bounded broadcast ring
//! shared by the instance's watchers. Sending never waits, so a watcher that
//! does not keep up slows nobody: once it is a whole ring behind, it learns
//! how much it missed and where to resume ([`Next::Dropped`]).
//!
//! A watcher that starts after an id first replays what came after it from
//! Redis, up to the reader's cursor at the moment it subscribed, then takes
//! the live entries after that: no gap and no duplicate at the seam. The
//! last watcher to go stops the reader and closes its connection.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use crate::stats::Stats;
use crate::store::{FeedItem, InstanceId, Store, StoreError, StreamId};

/// How long one blocking read waits before the reader looks again.
const BLOCK: Duration = Duration::from_secs(5);

/// The first pause after a failed Redis call (it doubles, up to 5 s).
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Entries per history read.
const HISTORY_PAGE: usize = 500;

/// Turns an entry of an instance into the line a watcher receives.
pub type Render = fn(InstanceId, &FeedItem) -> Vec<u8>;

/// An entry on its way to the watchers: its id and its rendered line.
#[derive(Debug)]
pub struct Item {
    /// Its place in the instance's order.
    pub id: StreamId,
    /// The line to write, newline included.
    pub line: Bytes,
}

/// What a watcher gets next.
#[derive(Debug)]
pub enum Next {
    /// Lines to write, in order.
    Items(Vec<Arc<Item>>),
    /// The watcher fell a whole ring behind: `count` entries were lost to
    /// it, and `WATCH ... AFTER resume` picks up where it was.
    Dropped {
        /// How many entries it missed.
        count: u64,
        /// The last id it was given (or its starting point).
        resume: StreamId,
    },
}

/// The instance channels of the daemon.
pub struct Hub {
    store: Store,
    stats: Arc<Stats>,
    render: Render,
    /// Entries a watcher may fall behind before it is dropped.
    buffer: usize,
    channels: Mutex<HashMap<InstanceId, Arc<Channel>>>,
}

/// One watched instance: its ring and its reader.
struct Channel {
    sender: broadcast::Sender<Arc<Item>>,
    /// The last id the reader sent. Taken together with a new receiver
    /// (under this lock, which the reader holds while it sends), it says
    /// where live delivery starts for that receiver.
    cursor: Mutex<StreamId>,
    reader: Mutex<Option<AbortHandle>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic elsewhere never leaves these maps half-changed: go on
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// A hub whose watchers may each fall `buffer` entries behind.
    pub fn new(store: Store, stats: Arc<Stats>, buffer: usize, render: Render) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            stats,
            render,
            buffer: buffer.max(16),
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// Watch `instance`, from after `after` (from now without it).
    /// `not_found` when the instance does not exist.
    pub async fn subscribe(
        self: &Arc<Self>,
        instance: InstanceId,
        after: Option<StreamId>,
    ) -> Result<Watcher, StoreError> {
        let head = self.store.feed(instance, None, 1).await?;
        let start = after.unwrap_or(head.last);
        let (receiver, cursor) = {
            let mut channels = lock(&self.channels);
            let channel = channels
                .entry(instance)
                .or_insert_with(|| self.open(instance, head.last));
            let cursor = lock(&channel.cursor);
            (channel.sender.subscribe(), *cursor)
        };
        self.stats.watcher_added();
        Ok(Watcher {
            hub: self.clone(),
            instance,
            receiver: Some(receiver),
            backlog: VecDeque::new(),
            position: start,
            replay_until: (cursor > start).then_some(cursor),
        })
    }

    /// A channel with its reader, starting after `cursor`.
    fn open(&self, instance: InstanceId, cursor: StreamId) -> Arc<Channel> {
        let (sender, _) = broadcast::channel(self.buffer);
        let channel = Arc::new(Channel {
            sender,
            cursor: Mutex::new(cursor),
            reader: Mutex::new(None),
        });
        let task = tokio::spawn(read(
            self.store.clone(),
            instance,
            channel.clone(),
            self.render,
            (self.buffer / 4).clamp(1, 1000),
        ));
        *lock(&channel.reader) = Some(task.abort_handle());
        self.stats.reader_started();
        tracing::debug!(%instance, "watch reader started");
        channel
    }

    /// A watcher of `instance` went: stop its reader if it was the last.
    fn release(&self, instance: InstanceId) {
        let mut channels = lock(&self.channels);
        let unused = channels
            .get(&instance)
            .is_some_and(|channel| channel.sender.receiver_count() == 0);
        if unused && let Some(channel) = channels.remove(&instance) {
            if let Some(reader) = lock(&channel.reader).take() {
                reader.abort();
            }
            self.stats.reader_stopped();
            tracing::debug!(%instance, "watch reader stopped");
        }
    }
}

/// The reader of one instance: read what is new, send it, block until
/// more comes. Redis failures are retried with a growing pause; the cursor
/// does not move, so nothing is lost when Redis is back.
async fn read(
    store: Store,
    instance: InstanceId,
    channel: Arc<Channel>,
    render: Render,
    page: usize,
) {
    let mut listener: Option<crate::store::Listener> = None;
    let mut pause = FIRST_PAUSE;
    loop {
        let cursor = *lock(&channel.cursor);
        let failed = match store.feed(instance, Some(cursor), page).await {
            Ok(feed) => {
                let items: Vec<Arc<Item>> = feed
                    .items
                    .iter()
                    .map(|(id, item)| {
                        Arc::new(Item {
                            id: *id,
                            line: Bytes::from(render(instance, item)),
                        })
                    })
                    .collect();
                let mut cursor = lock(&channel.cursor);
                for item in items {
                    *cursor = item.id;
                    // no receiver is not an error: the last one may be
                    // leaving
                    let _ = channel.sender.send(item);
                }
                drop(cursor);
                if feed.next.is_some() {
                    // more is there already
                    continue;
                }
                None
            }
            Err(err) => Some(err),
        };
        // caught up: block until something comes after the cursor
        let cursor = *lock(&channel.cursor);
        let failed = match (failed, listener.as_mut()) {
            (Some(err), _) => Some(err),
            (None, Some(open)) => open.wait(&store, instance, cursor, BLOCK).await.err(),
            (None, None) => match store.listener(BLOCK).await {
                Ok(open) => {
                    listener = Some(open);
                    None
                }
                Err(err) => Some(err),
            },
        };
        if let Some(err) = failed {
            // one warning per outage, not one per retry
            if pause == FIRST_PAUSE {
                tracing::warn!(%instance, error = %err, "watch reader: Redis call failed; retrying");
            } else {
                tracing::debug!(%instance, error = %err, "watch reader: still failing");
            }
            listener = None;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        } else {
            if pause != FIRST_PAUSE {
                tracing::info!(%instance, "watch reader: reading again");
            }
            pause = FIRST_PAUSE;
        }
    }
}

/// One client's watch of an instance.
pub struct Watcher {
    hub: Arc<Hub>,
    instance: InstanceId,
    receiver: Option<broadcast::Receiver<Arc<Item>>>,
    /// Entries taken off the ring while the client's socket was full
    /// (see [`Watcher::absorb`]); at most the hub's buffer.
    backlog: VecDeque<Arc<Item>>,
    /// The last id given to the client (or where it started).
    position: StreamId,
    /// While set, entries up to this id come from Redis, not the ring.
    replay_until: Option<StreamId>,
}

impl Watcher {
    /// The instance watched.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// The next lines for the client (at most about `max`), or the news
    /// that it was dropped. Waits until there is something.
    pub async fn next(&mut self, max: usize) -> Next {
        loop {
            if let Some(until) = self.replay_until {
                match self.replay(until).await {
                    Ok(items) if !items.is_empty() => return Next::Items(items),
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::warn!(instance = %self.instance, error = %err, "watch replay: Redis call failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                }
            }
            // entries up to the position came from the replay already
            let mut items = Vec::new();
            while items.len() < max {
                let Some(item) = self.backlog.pop_front() else {
                    break;
                };
                self.hand_out(item, &mut items);
            }
            if !items.is_empty() {
                return Next::Items(items);
            }
            let Some(receiver) = self.receiver.as_mut() else {
                return std::future::pending().await;
            };
            let first = match receiver.recv().await {
                Ok(item) => item,
                Err(broadcast::error::RecvError::Lagged(count)) => return self.drop_out(count),
                Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
            };
            let mut next = Some(first);
            while let Some(item) = next {
                self.hand_out(item, &mut items);
                // a lag shows up at the next call
                next = (items.len() < max)
                    .then(|| self.receiver.as_mut().and_then(|r| r.try_recv().ok()))
                    .flatten();
            }
            if !items.is_empty() {
                return Next::Items(items);
            }
        }
    }

    /// While the client's socket is full and a write waits: take what
    /// arrives off the ring into the backlog, so that falling behind is
    /// seen even though nothing is read. Returns only when the watcher is
    /// too far behind: then it is [`Next::Dropped`] and receives no more.
    pub async fn absorb(&mut self) -> Next {
        loop {
            let Some(receiver) = self.receiver.as_mut() else {
                return std::future::pending().await;
            };
            match receiver.recv().await {
                Ok(item) => {
                    self.backlog.push_back(item);
                    if self.backlog.len() > self.hub.buffer {
                        return self.drop_out(0);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(count)) => return self.drop_out(count),
                Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
            }
        }
    }

    /// Add `item` to what goes out, unless the client had it already.
    fn hand_out(&mut self, item: Arc<Item>, items: &mut Vec<Arc<Item>>) {
        if item.id > self.position {
            self.position = item.id;
            items.push(item);
        }
    }

    /// Stop receiving: the watcher missed `lagged` entries on the ring
    /// besides its backlog.
    fn drop_out(&mut self, lagged: u64) -> Next {
        let count = lagged + self.backlog.len() as u64;
        self.backlog.clear();
        self.receiver = None;
        self.hub.stats.watcher_dropped(count);
        Next::Dropped {
            count,
            resume: self.position,
        }
    }

    /// One page of the replay from Redis, up to `until`.
    async fn replay(&mut self, until: StreamId) -> Result<Vec<Arc<Item>>, StoreError> {
        let feed = self
            .hub
            .store
            .feed(self.instance, Some(self.position), HISTORY_PAGE)
            .await?;
        let mut items = Vec::with_capacity(feed.items.len());
        for (id, item) in &feed.items {
            if *id > until {
                break;
            }
            self.position = *id;
            items.push(Arc::new(Item {
                id: *id,
                line: Bytes::from((self.hub.render)(self.instance, item)),
            }));
        }
        if feed.next.is_none() || self.position >= until || items.len() < feed.items.len() {
            self.replay_until = None;
        }
        Ok(items)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.receiver.take());
        self.hub.stats.watcher_removed();
        self.hub.release(self.instance);
    }
}
