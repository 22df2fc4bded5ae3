//! WATCH's fan-out: one channel per watched instance, however many watch
//! it, and one reader per lane: up to `watch.lane_size` watched instances
//! of one partition ([`DEFAULT_LANE_SIZE`]).
//!
//! A lane's reader reads the merged feed (`meet_feed`) of each of its
//! watched instances that may have news, after the instance's cursor, and,
//! when none has, blocks on its own Redis connection until one has: one
//! XREAD BLOCK over every watched stream of the lane (they share their
//! partition's hash tag), and over the partition's wake stream, which a new
//! watched instance writes to so the reader includes it at once. What that
//! read brings is sent as it is when it holds everything new of both of an
//! instance's streams (neither filled the read's count); otherwise the
//! instance's feed is read again, page by page. No polling.
//!
//! Why lanes and not one reader per partition: Redis does work for every
//! stream of a blocking read each time it blocks, wakes and reads again
//! (7.0 finds each stream's last entry on every XREAD), so a read over
//! the streams of every watched instance of a partition costs Redis more
//! per delivery the more instances are watched. A lane bounds that work;
//! the price is a connection per lane rather than per partition.
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
//! a lane stops its reader and closes its connection.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use crate::stats::Stats;
use crate::store::{FeedItem, InstanceId, Keys, Store, StoreError, StreamId};

/// Most instances one reader watches (two streams each in its blocking
/// read), unless `watch.lane_size` says otherwise. Smaller costs Redis
/// less per delivery and takes more connections; see BENCHMARKS.md,
/// "WATCH: delivery to many watchers".
pub const DEFAULT_LANE_SIZE: usize = 4;

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

/// The instance channels of the daemon, and its readers.
pub struct Hub {
    store: Store,
    stats: Arc<Stats>,
    render: Render,
    /// Entries a watcher may fall behind before it is dropped.
    buffer: usize,
    /// Most instances a reader watches.
    lane_size: usize,
    watched: Arc<Mutex<Watched>>,
}

/// A reader's share of the watched instances: a partition, and a number
/// within it.
type Lane = (u64, usize);

/// What is watched, under one lock: the channels and the readers.
#[derive(Default)]
struct Watched {
    /// The lane of each watched instance.
    lane_of: HashMap<InstanceId, Lane>,
    /// By lane: its instances' channels (a reader lists only its own), and
    /// its reader.
    lanes: HashMap<Lane, LaneState>,
}

/// The instances of one lane, and its reader.
struct LaneState {
    channels: HashMap<InstanceId, Arc<Channel>>,
    reader: AbortHandle,
}

impl Watched {
    /// The lane a newly watched instance of `partition` joins: the first
    /// with room for it (of `size` instances), or a new one.
    fn lane_with_room(&self, partition: u64, size: usize) -> Lane {
        (0..)
            .map(|number| (partition, number))
            .find(|lane| {
                self.lanes
                    .get(lane)
                    .is_none_or(|state| state.channels.len() < size)
            })
            .unwrap_or((partition, 0))
    }
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
    /// A hub whose watchers may each fall `buffer` entries behind, and
    /// whose readers each watch up to `lane_size` instances.
    pub fn new(
        store: Store,
        stats: Arc<Stats>,
        buffer: usize,
        lane_size: usize,
        render: Render,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            stats,
            render,
            buffer: buffer.max(16),
            lane_size: lane_size.max(1),
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
            let watched = &mut *watched;
            let lane = watched.lane_of.get(&instance).copied();
            let channel = lane.and_then(|lane| {
                watched
                    .lanes
                    .get(&lane)
                    .and_then(|state| state.channels.get(&instance))
            });
            let (channel, wake) = match channel {
                Some(channel) => (channel.clone(), false),
                None => {
                    let channel = Arc::new(Channel {
                        sender: broadcast::channel(self.buffer).0,
                        cursor: Mutex::new(head.last),
                        dirty: AtomicBool::new(true),
                    });
                    let lane = watched.lane_with_room(partition, self.lane_size);
                    watched.lane_of.insert(instance, lane);
                    self.stats.reader_started();
                    tracing::debug!(%instance, lane = lane.1, "watching an instance");
                    // a reader already blocking must look at the new
                    // instance now; a new one sees it in its first round
                    let wake = match watched.lanes.entry(lane) {
                        Entry::Occupied(mut state) => {
                            state.get_mut().channels.insert(instance, channel.clone());
                            true
                        }
                        Entry::Vacant(vacant) => {
                            let reader = LaneReader {
                                store: self.store.clone(),
                                watched: self.watched.clone(),
                                lane,
                                render: self.render,
                                page: (self.buffer / 4).clamp(1, 1000),
                                listener: None,
                                wake_cursor: None,
                            };
                            vacant.insert(LaneState {
                                channels: HashMap::from([(instance, channel.clone())]),
                                reader: tokio::spawn(reader.run()).abort_handle(),
                            });
                            self.stats.lane_opened();
                            tracing::debug!(partition, lane = lane.1, "watch reader started");
                            false
                        }
                    };
                    (channel, wake)
                }
            };
            let receiver = channel.sender.subscribe();
            let cursor = *lock(&channel.cursor);
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
    /// and stop the lane's reader if that was its last channel.
    fn release(&self, instance: InstanceId) {
        let mut watched = lock(&self.watched);
        let Some(lane) = watched.lane_of.get(&instance).copied() else {
            return;
        };
        let Entry::Occupied(mut state) = watched.lanes.entry(lane) else {
            return;
        };
        let unused = state
            .get()
            .channels
            .get(&instance)
            .is_some_and(|channel| channel.sender.receiver_count() == 0);
        if !unused {
            return;
        }
        state.get_mut().channels.remove(&instance);
        self.stats.reader_stopped();
        tracing::debug!(%instance, "no longer watching an instance");
        if state.get().channels.is_empty() {
            state.remove().reader.abort();
            self.stats.lane_closed();
            tracing::debug!(partition = lane.0, lane = lane.1, "watch reader stopped");
        }
        watched.lane_of.remove(&instance);
    }
}

/// The reader of one lane: read what is new in its watched instances that
/// may have news, send it, block until more comes. Redis failures are
/// retried with a growing pause; cursors do not move, so nothing is lost
/// when Redis is back.
struct LaneReader {
    store: Store,
    watched: Arc<Mutex<Watched>>,
    lane: Lane,
    render: Render,
    /// Entries per feed read.
    page: usize,
    /// Its blocking connection, opened on first use and after a failure.
    listener: Option<crate::store::Listener>,
    /// Where its partition's wake stream was read up to.
    wake_cursor: Option<StreamId>,
}

impl LaneReader {
    async fn run(mut self) {
        let (partition, lane) = self.lane;
        let mut pause = FIRST_PAUSE;
        loop {
            if let Err(err) = self.round().await {
                // one warning per outage, not one per retry
                if pause == FIRST_PAUSE {
                    tracing::warn!(
                        partition,
                        lane,
                        "watch reader: Redis call failed ({err}); retrying"
                    );
                } else {
                    tracing::debug!(partition, lane, error = %err, "watch reader: still failing");
                }
                self.listener = None;
                self.wake_cursor = None;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            } else {
                if pause != FIRST_PAUSE {
                    tracing::info!(partition, lane, "watch reader: reading again");
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
        let partition = self.lane.0;
        // where the wake stream is, before the instances are listed: a
        // wake after this point ends the coming block at once
        let wake_after = match self.wake_cursor {
            Some(cursor) => cursor,
            None => {
                let cursor = store.wake_cursor(partition).await?;
                self.wake_cursor = Some(cursor);
                cursor
            }
        };
        let instances: Vec<(InstanceId, Arc<Channel>)> = lock(&self.watched)
            .lanes
            .get(&self.lane)
            .map(|state| {
                state
                    .channels
                    .iter()
                    .map(|(i, c)| (*i, c.clone()))
                    .collect()
            })
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
        let wake_key = Keys::wake(partition);
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
                .insert(store.listener(partition, BLOCK).await?),
        };
        // what the read brought, by instance: sent as it is (no second
        // call) when neither of the instance's streams filled the count,
        // for then it holds everything after the cursor of both, and their
        // ids, of one sequence, merge into the order things happened in;
        // else the feed call of the next round merges page by page
        let mut news: HashMap<InstanceId, (&Arc<Channel>, Vec<_>, bool)> = HashMap::new();
        let waited = listener.wait(&streams, BLOCK, self.page).await?;
        if waited.woken.is_some() {
            // a new instance in the partition, perhaps in this lane
            self.wake_cursor = waited.woken;
        }
        for (key, entries) in waited.news {
            if let Some((instance, channel)) = owner.get(&key) {
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

    /// The last id given to the client (where it started, before the
    /// first): `WATCH ... AFTER` it resumes with nothing lost or repeated.
    pub fn position(&self) -> StreamId {
        self.position
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
