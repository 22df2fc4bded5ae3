//! WATCH's fan-out: one channel per watched instance, however many watch
//! it, and one reader per partition, however many of its instances are
//! watched.
//!
//! A partition's reader reads the merged feed (`meet_feed`) of each of its
//! watched instances that may have news, after the instance's cursor, and,
//! when none has, blocks on its own Redis connection until one has: one
//! XREAD BLOCK over every watched stream of the partition (they share its
//! hash tag), and over the partition's wake stream, which a new watched
//! instance writes to so the reader includes it at once. What that read
//! brings is sent as it is when it holds everything new of both of an
//! instance's streams (neither filled the read's count); otherwise the
//! instance's feed is read again, page by page. No polling, and a daemon
//! holds at most one such connection per partition.
//!
//! Every entry is rendered once into its reply line and sent on the
//! instance's bounded broadcast ring, shared by its watchers. Sending never
//! waits, so a watcher that does not keep up slows nobody: once it is a
//! whole ring behind, it learns how much it missed and where to resume
//! ([`Next::Dropped`]).
//!
//! A watcher that starts after an id first replays what came after it from
//! Redis, up to the channel's cursor at the moment it subscribed, then
//! takes the live entries after that: no gap and no duplicate at the seam.
//! The last watcher of an instance closes its channel; the last channel of
//! a partition stops its reader and closes its connection.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use crate::stats::Stats;
use crate::store::{FeedItem, InstanceId, Keys, Store, StoreError, StreamId};

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

/// The instance channels of the daemon, and its partition readers.
pub struct Hub {
    store: Store,
    stats: Arc<Stats>,
    render: Render,
    /// Entries a watcher may fall behind before it is dropped.
    buffer: usize,
    watched: Arc<Mutex<Watched>>,
}

/// What is watched, under one lock: the channels and the readers.
#[derive(Default)]
struct Watched {
    /// By partition, then instance: a reader lists only its own.
    channels: HashMap<u64, HashMap<InstanceId, Arc<Channel>>>,
    /// One reader per partition with a watched instance.
    readers: HashMap<u64, AbortHandle>,
}

/// One watched instance: its ring and where its reader is.
struct Channel {
    sender: broadcast::Sender<Arc<Item>>,
    /// The last id the reader sent. Taken together with a new receiver
    /// (under this lock, which the reader holds while it sends), it says
    /// where live delivery starts for that receiver.
    cursor: Mutex<StreamId>,
    /// There may be entries after the cursor: the reader reads the feed
    /// (set when the channel opens, and when a blocking read says so).
    dirty: AtomicBool,
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
            watched: Arc::new(Mutex::new(Watched::default())),
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
        let partition = self.store.keys().partition(instance.meeting);
        let (receiver, cursor, wake) = {
            let mut watched = lock(&self.watched);
            let mut opened = false;
            let channel = watched
                .channels
                .entry(partition)
                .or_default()
                .entry(instance)
                .or_insert_with(|| {
                    opened = true;
                    Arc::new(Channel {
                        sender: broadcast::channel(self.buffer).0,
                        cursor: Mutex::new(head.last),
                        dirty: AtomicBool::new(true),
                    })
                })
                .clone();
            if opened {
                self.stats.reader_started();
                tracing::debug!(%instance, "watching an instance");
            }
            let receiver = channel.sender.subscribe();
            let cursor = *lock(&channel.cursor);
            // a reader already blocking must look at the new instance now
            let wake = match watched.readers.entry(partition) {
                std::collections::hash_map::Entry::Occupied(_) => opened,
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    let reader = PartitionReader {
                        store: self.store.clone(),
                        watched: self.watched.clone(),
                        partition,
                        render: self.render,
                        page: (self.buffer / 4).clamp(1, 1000),
                        listener: None,
                        wake_cursor: None,
                    };
                    vacant.insert(tokio::spawn(reader.run()).abort_handle());
                    tracing::debug!(partition, "watch reader started");
                    false
                }
            };
            (receiver, cursor, wake)
        };
        if wake && let Err(err) = self.store.wake(partition).await {
            // the reader's block ends within seconds anyway
            tracing::debug!(partition, error = %err, "cannot wake the watch reader");
        }
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

    /// A watcher of `instance` went: close its channel if it was the last,
    /// and stop the partition's reader if that was its last channel.
    fn release(&self, instance: InstanceId) {
        let partition = self.store.keys().partition(instance.meeting);
        let mut watched = lock(&self.watched);
        let Some(instances) = watched.channels.get_mut(&partition) else {
            return;
        };
        let unused = instances
            .get(&instance)
            .is_some_and(|channel| channel.sender.receiver_count() == 0);
        if !unused {
            return;
        }
        instances.remove(&instance);
        self.stats.reader_stopped();
        tracing::debug!(%instance, "no longer watching an instance");
        if instances.is_empty() {
            watched.channels.remove(&partition);
        }
        if !watched.channels.contains_key(&partition)
            && let Some(reader) = watched.readers.remove(&partition)
        {
            reader.abort();
            tracing::debug!(partition, "watch reader stopped");
        }
    }
}

/// The reader of one partition: read what is new in the watched instances
/// that may have news, send it, block until more comes. Redis failures are
/// retried with a growing pause; cursors do not move, so nothing is lost
/// when Redis is back.
struct PartitionReader {
    store: Store,
    watched: Arc<Mutex<Watched>>,
    partition: u64,
    render: Render,
    /// Entries per feed read.
    page: usize,
    /// Its blocking connection, opened on first use and after a failure.
    listener: Option<crate::store::Listener>,
    /// Where the partition's wake stream was read up to.
    wake_cursor: Option<StreamId>,
}

impl PartitionReader {
    async fn run(mut self) {
        let mut pause = FIRST_PAUSE;
        loop {
            if let Err(err) = self.round().await {
                // one warning per outage, not one per retry
                if pause == FIRST_PAUSE {
                    tracing::warn!(
                        partition = self.partition,
                        "watch reader: Redis call failed ({err}); retrying"
                    );
                } else {
                    tracing::debug!(partition = self.partition, error = %err, "watch reader: still failing");
                }
                self.listener = None;
                self.wake_cursor = None;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            } else {
                if pause != FIRST_PAUSE {
                    tracing::info!(partition = self.partition, "watch reader: reading again");
                }
                pause = FIRST_PAUSE;
            }
        }
    }

    /// One round: the feeds of the instances that may have news, then
    /// (when none has more) a blocking read until one has.
    async fn round(&mut self) -> Result<(), StoreError> {
        let store = &self.store;
        let keys = *store.keys();
        // where the wake stream is, before the instances are listed: a
        // wake after this point ends the coming block at once
        let wake_after = match self.wake_cursor {
            Some(cursor) => cursor,
            None => {
                let cursor = store.wake_cursor(self.partition).await?;
                self.wake_cursor = Some(cursor);
                cursor
            }
        };
        let instances: Vec<(InstanceId, Arc<Channel>)> = lock(&self.watched)
            .channels
            .get(&self.partition)
            .map(|instances| instances.iter().map(|(i, c)| (*i, c.clone())).collect())
            .unwrap_or_default();
        let dirty: Vec<&(InstanceId, Arc<Channel>)> = instances
            .iter()
            .filter(|(_, channel)| channel.dirty.swap(false, Ordering::SeqCst))
            .collect();
        if !dirty.is_empty() {
            let calls = dirty
                .iter()
                .map(|(instance, channel)| {
                    store.feed_call(*instance, Some(*lock(&channel.cursor)), self.page)
                })
                .collect();
            let mut failed = None;
            for ((instance, channel), feed) in dirty.iter().zip(store.run_all(calls).await) {
                match feed {
                    Ok(feed) => {
                        send(*instance, channel, &feed.items, self.render);
                        if feed.next.is_some() {
                            channel.dirty.store(true, Ordering::SeqCst);
                        }
                    }
                    Err(err) => {
                        channel.dirty.store(true, Ordering::SeqCst);
                        failed = Some(err);
                    }
                }
            }
            if let Some(err) = failed {
                return Err(err);
            }
            if instances
                .iter()
                .any(|(_, channel)| channel.dirty.load(Ordering::SeqCst))
            {
                // more is there already
                return Ok(());
            }
        }
        // caught up: block until a watched stream or the wake stream has
        // more
        let wake_key = Keys::wake(self.partition);
        let mut streams = vec![(wake_key.clone(), wake_after)];
        let mut owner: HashMap<String, (InstanceId, &Arc<Channel>)> = HashMap::new();
        for (instance, channel) in &instances {
            let cursor = *lock(&channel.cursor);
            for key in [keys.events(*instance), keys.chat(*instance)] {
                streams.push((key.clone(), cursor));
                owner.insert(key, (*instance, channel));
            }
        }
        let listener = match &mut self.listener {
            Some(listener) => listener,
            None => self
                .listener
                .insert(store.listener(self.partition, BLOCK).await?),
        };
        // what the read brought, by instance: sent as it is (no second
        // call) when neither of the instance's streams filled the count,
        // for then it holds everything after the cursor of both, and their
        // ids, of one sequence, merge into the order things happened in;
        // else the feed call of the next round merges page by page
        let mut news: HashMap<InstanceId, (&Arc<Channel>, Vec<_>, bool)> = HashMap::new();
        for (key, entries) in listener.wait(&streams, BLOCK, self.page).await? {
            if key == wake_key {
                self.wake_cursor = None;
            } else if let Some((instance, channel)) = owner.get(&key) {
                let (_, items, full) = news
                    .entry(*instance)
                    .or_insert_with(|| (*channel, Vec::new(), false));
                *full |= entries.len() >= self.page;
                items.extend(entries);
            }
        }
        for (instance, (channel, mut items, full)) in news {
            if full {
                channel.dirty.store(true, Ordering::SeqCst);
            } else {
                items.sort_by_key(|(id, _)| *id);
                send(instance, channel, &items, self.render);
            }
        }
        Ok(())
    }
}

/// Render and send a feed's entries on an instance's ring, moving its
/// cursor.
fn send(instance: InstanceId, channel: &Channel, items: &[(StreamId, FeedItem)], render: Render) {
    let items: Vec<Arc<Item>> = items
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
        if item.id <= *cursor {
            continue;
        }
        *cursor = item.id;
        // no receiver is not an error: the last one may be leaving
        let _ = channel.sender.send(item);
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
                        tracing::warn!(instance = %self.instance, "watch replay: Redis call failed ({err}); retrying");
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
