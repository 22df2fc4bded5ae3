//! WATCH's fan-out on Redis pub/sub: one subscriber connection per Redis
//! (per master on a cluster), however many instances are watched.
//!
//! The library publishes every entry it writes on its instance's channel
//! (see [`crate::store::Published`]). The hub subscribes (SSUBSCRIBE) to
//! the channel of each watched instance on the connection to the master
//! that serves the channel's slot, and an entry that arrives is rendered
//! once into its reply line and put on the instance's ring, shared by its
//! watchers. No read of Redis for it.
//!
//! The streams stay the source of truth. Each watched instance has a
//! cursor, the last id put on its ring, and every published entry names the
//! id before it: one whose `prev` is the cursor is delivered as it is; one
//! at or before the cursor is a repeat, dropped; any other is a gap (an
//! entry went by unseen) and the instance's feed is read after the cursor
//! instead, by the filler task. A (re)subscription always ends with such a
//! read: what was written before the subscription took effect is in the
//! stream, what comes after is published to it. A lost subscriber
//! connection, or a channel the server let go of (its slot moved, its
//! master was demoted), has its channels subscribed again, on the master
//! that serves them now, and read again from their cursors. So every entry
//! reaches the ring once, in order, whatever was lost on the way.
//!
//! A ring holds only what was sent and not yet pushed out by newer entries
//! (at most `watch.buffer`), and takes no memory while its instance is
//! quiet. Sending never waits, so a watcher that does not keep up slows
//! nobody: once it is a whole ring behind, it learns how much it missed and
//! where to resume ([`Next::Dropped`]).
//!
//! A watcher that starts after an id first replays what came after it from
//! Redis, up to the instance's cursor at the moment it subscribed, then
//! takes the ring's entries after that: no gap and no duplicate at the
//! seam. The last watcher of an instance closes its channel (SUNSUBSCRIBE);
//! a subscriber connection left with no channel is closed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::AbortHandle;

use crate::stats::Stats;
use crate::store::{FeedItem, InstanceId, Published, Shards, Store, StoreError, StreamId};

/// The first pause after a failed Redis call (it doubles, up to 5 s).
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between retries.
const LAST_PAUSE: Duration = Duration::from_secs(5);

/// Entries per history read.
const HISTORY_PAGE: usize = 500;

/// How often an idle subscriber connection is asked for a PING (a
/// connection that died without a word is found so).
const HEALTH: Duration = Duration::from_secs(5);

/// Channels per SSUBSCRIBE.
const SUBSCRIBE_BATCH: usize = 500;

/// Feeds the filler reads per round (one pipeline): thousands of new
/// watches at once are read in rounds, so that the requests of clients
/// pass in between and the replies held at once stay few.
const FILL_BATCH: usize = 256;

/// Give back a map's room once it is mostly empty: ten thousand watched
/// instances that went would leave their tables behind.
fn shrink<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// [`shrink`] for a set.
fn shrink_set<K: Eq + std::hash::Hash>(set: &mut HashSet<K>) {
    if set.capacity() > 64 && set.len() * 4 < set.capacity() {
        set.shrink_to(set.len() * 2);
    }
}

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

/// The instance channels of the daemon, its subscriber and its filler.
pub struct Hub {
    store: Store,
    shared: Arc<Shared>,
    /// To the subscriber task: instances to look at.
    orders: mpsc::UnboundedSender<Order>,
    tasks: [AbortHandle; 2],
}

/// What the hub's tasks and the push callbacks share.
struct Shared {
    store: Store,
    stats: Arc<Stats>,
    render: Render,
    /// Entries a watcher may fall behind before it is dropped.
    buffer: usize,
    /// The watched instances.
    channels: Mutex<HashMap<InstanceId, Arc<Channel>>>,
    /// Instances whose feed must be read after their cursor.
    dirty: Mutex<HashSet<InstanceId>>,
    /// Wakes the filler.
    fill: Notify,
}

/// One watched instance: its ring, where it is, who watches.
struct Channel {
    ring: Mutex<Ring>,
    /// The sequence number the next entry put on the ring gets: watchers
    /// wait on its changes.
    head: watch::Sender<u64>,
    /// Its watchers.
    watchers: AtomicUsize,
}

/// The last entries of an instance, numbered.
struct Ring {
    items: VecDeque<Arc<Item>>,
    /// The number of `items[0]`.
    first: u64,
    /// The last id put on the ring (or the instance's last when the
    /// channel opened).
    cursor: StreamId,
}

impl Ring {
    fn end(&self) -> u64 {
        self.first + self.items.len() as u64
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic elsewhere never leaves these maps half-changed: go on
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Put entries on an instance's ring, in order, those at or before its
    /// cursor left out; tell its watchers.
    fn send(&self, instance: InstanceId, channel: &Channel, items: &[(StreamId, FeedItem)]) {
        let mut ring = lock(&channel.ring);
        let mut sent = false;
        for (id, item) in items {
            if *id <= ring.cursor {
                continue;
            }
            self.push(instance, &mut ring, *id, item);
            sent = true;
        }
        if sent {
            channel.head.send_replace(ring.end());
        }
    }

    fn push(&self, instance: InstanceId, ring: &mut Ring, id: StreamId, item: &FeedItem) {
        ring.cursor = id;
        ring.items.push_back(Arc::new(Item {
            id,
            line: Bytes::from((self.render)(instance, item)),
        }));
        if ring.items.len() > self.buffer {
            ring.items.pop_front();
            ring.first += 1;
        }
    }

    /// An entry published on `instance`'s channel: delivered when it
    /// follows the cursor, dropped when it was delivered, else the feed is
    /// read.
    fn published(&self, instance: InstanceId, entry: Published) {
        let Some(channel) = lock(&self.channels).get(&instance).cloned() else {
            return;
        };
        let mut ring = lock(&channel.ring);
        if entry.id <= ring.cursor {
            return;
        }
        if entry.prev == Some(ring.cursor) {
            self.push(instance, &mut ring, entry.id, &entry.item);
            channel.head.send_replace(ring.end());
            self.stats.watch_published();
        } else {
            drop(ring);
            self.stats.watch_gap();
            self.mark(instance);
        }
    }

    /// Have the filler read `instance`'s feed after its cursor.
    fn mark(&self, instance: InstanceId) {
        lock(&self.dirty).insert(instance);
        self.fill.notify_one();
    }

    /// What a subscriber connection's push says.
    fn on_push(&self, link: u64, info: PushInfo, orders: &mpsc::UnboundedSender<Order>) {
        match info.kind {
            PushKind::SMessage | PushKind::Message => {
                let mut data = info.data.into_iter();
                let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    return;
                };
                let Some(instance) = Store::channel_instance(&name) else {
                    return;
                };
                match Published::parse(&payload) {
                    Some(entry) => self.published(instance, entry),
                    // not ours to read: the stream says what it was
                    None => self.mark(instance),
                }
            }
            PushKind::SUnsubscribe => {
                // the server let go of a channel (its slot moved, its master
                // was demoted), or answers our own SUNSUBSCRIBE
                if let Some(Value::BulkString(name)) = info.data.first()
                    && let Some(instance) = Store::channel_instance(name)
                {
                    let _ = orders.send(Order::Dropped(link, instance));
                }
            }
            PushKind::Disconnection => {
                let _ = orders.send(Order::Lost(link));
            }
            _ => {}
        }
    }
}

impl Hub {
    /// A hub whose watchers may each fall `buffer` entries behind.
    pub fn new(store: Store, stats: Arc<Stats>, buffer: usize, render: Render) -> Arc<Hub> {
        let shared = Arc::new(Shared {
            store: store.clone(),
            stats,
            render,
            buffer: buffer.max(16),
            channels: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            fill: Notify::new(),
        });
        let (orders, inbox) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            shared: shared.clone(),
            orders: orders.downgrade(),
            inbox,
            links: HashMap::new(),
            subscribed: HashMap::new(),
            pending: HashSet::new(),
            shards: None,
            next_link: 1,
        };
        let filler = tokio::spawn(fill(shared.clone())).abort_handle();
        let subscriber = tokio::spawn(subscriber.run()).abort_handle();
        Arc::new(Hub {
            store,
            shared,
            orders,
            tasks: [filler, subscriber],
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
        let (channel, head_rx, next, cursor) = {
            let mut channels = lock(&self.shared.channels);
            let channel = channels
                .entry(instance)
                .or_insert_with(|| {
                    self.shared.stats.reader_started();
                    tracing::debug!(%instance, "watching an instance");
                    // sent under the lock: the subscriber sees the orders of
                    // an instance in the order its channel opened and closed
                    let _ = self.orders.send(Order::Look(instance));
                    Arc::new(Channel {
                        ring: Mutex::new(Ring {
                            items: VecDeque::new(),
                            first: 0,
                            cursor: head.last,
                        }),
                        head: watch::channel(0).0,
                        watchers: AtomicUsize::new(0),
                    })
                })
                .clone();
            channel.watchers.fetch_add(1, Ordering::SeqCst);
            let (next, cursor) = {
                let ring = lock(&channel.ring);
                (ring.end(), ring.cursor)
            };
            let head = channel.head.subscribe();
            (channel, head, next, cursor)
        };
        self.shared.stats.watcher_added();
        Ok(Watcher {
            hub: self.clone(),
            instance,
            channel,
            head: Some(head_rx),
            next,
            backlog: VecDeque::new(),
            position: start,
            replay_until: (cursor > start).then_some(cursor),
        })
    }

    /// A watcher of `instance` went: close its channel if it was the last.
    fn release(&self, instance: InstanceId) {
        let mut channels = lock(&self.shared.channels);
        let last = channels
            .get(&instance)
            .is_some_and(|channel| channel.watchers.fetch_sub(1, Ordering::SeqCst) == 1);
        if last {
            channels.remove(&instance);
            shrink(&mut channels);
            let _ = self.orders.send(Order::Look(instance));
            self.shared.stats.reader_stopped();
            tracing::debug!(%instance, "no longer watching an instance");
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The filler: read the feed of each instance that may have entries its
/// ring lacks (a gap, a new or renewed subscription), after its cursor,
/// page by page, until none has. Redis failures are retried with a growing
/// pause; cursors do not move, so nothing is lost.
async fn fill(shared: Arc<Shared>) {
    let page = (shared.buffer / 4).clamp(1, 1000);
    let mut pause = FIRST_PAUSE;
    loop {
        let dirty: Vec<InstanceId> = {
            let mut dirty = lock(&shared.dirty);
            let round: Vec<InstanceId> = dirty.iter().take(FILL_BATCH).copied().collect();
            for instance in &round {
                dirty.remove(instance);
            }
            shrink_set(&mut dirty);
            round
        };
        if dirty.is_empty() {
            shared.fill.notified().await;
            continue;
        }
        let open: Vec<(InstanceId, Arc<Channel>)> = {
            let channels = lock(&shared.channels);
            dirty
                .iter()
                .filter_map(|i| channels.get(i).map(|c| (*i, c.clone())))
                .collect()
        };
        let calls = open
            .iter()
            .map(|(instance, channel)| {
                let cursor = lock(&channel.ring).cursor;
                shared.store.feed_call(*instance, Some(cursor), page)
            })
            .collect();
        let mut failed = None;
        for ((instance, channel), feed) in open.iter().zip(shared.store.run_all(calls).await) {
            match feed {
                Ok(feed) => {
                    shared.send(*instance, channel, &feed.items);
                    if feed.next.is_some() {
                        lock(&shared.dirty).insert(*instance);
                    }
                }
                Err(err) => {
                    lock(&shared.dirty).insert(*instance);
                    failed = Some(err);
                }
            }
        }
        shared.stats.watch_filled(open.len());
        match failed {
            Some(err) => {
                if pause == FIRST_PAUSE {
                    tracing::warn!("watch: reading a feed failed ({err}); retrying");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LAST_PAUSE);
            }
            None => pause = FIRST_PAUSE,
        }
    }
}

/// What the subscriber task is told.
enum Order {
    /// An instance's channel opened or closed: subscribe or unsubscribe.
    Look(InstanceId),
    /// A subscriber connection was lost.
    Lost(u64),
    /// The server unsubscribed the connection from an instance's channel.
    Dropped(u64, InstanceId),
}

/// A subscriber connection, to the one Redis or to one master.
struct Link {
    id: u64,
    conn: MultiplexedConnection,
    /// Its subscribed channels.
    count: usize,
}

/// The subscriber task: one connection per shard (the one Redis, or each
/// master that serves a watched instance), subscribed to the channels of
/// the watched instances.
struct Subscriber {
    shared: Arc<Shared>,
    /// For the push callbacks (weak: the hub's going ends the task).
    orders: mpsc::WeakUnboundedSender<Order>,
    inbox: mpsc::UnboundedReceiver<Order>,
    /// By shard (`host:port`, or empty for the one Redis).
    links: HashMap<String, Link>,
    /// The instances subscribed, and their shard.
    subscribed: HashMap<InstanceId, String>,
    /// Watched instances not subscribed yet.
    pending: HashSet<InstanceId>,
    /// A cluster's slot map, as last read (`None`: read it again).
    shards: Option<Shards>,
    next_link: u64,
}

impl Subscriber {
    async fn run(mut self) {
        let mut pause = FIRST_PAUSE;
        let mut checked = tokio::time::Instant::now();
        loop {
            if checked.elapsed() >= HEALTH {
                self.check_links().await;
                checked = tokio::time::Instant::now();
            }
            let wait = if self.pending.is_empty() {
                HEALTH
            } else {
                pause
            };
            let first = match tokio::time::timeout(wait, self.inbox.recv()).await {
                Ok(Some(order)) => Some(order),
                Ok(None) => return,
                Err(_) => None,
            };
            let mut orders: Vec<Order> = first.into_iter().collect();
            while let Ok(order) = self.inbox.try_recv() {
                orders.push(order);
            }
            for order in orders {
                self.apply(order).await;
            }
            if self.pending.is_empty() {
                pause = FIRST_PAUSE;
                continue;
            }
            match self.subscribe_pending().await {
                Ok(()) => pause = FIRST_PAUSE,
                Err(err) => {
                    if pause == FIRST_PAUSE {
                        tracing::warn!("watch: subscribing failed ({err}); retrying");
                    } else {
                        tracing::debug!(error = %err, "watch: subscribing still fails");
                    }
                    pause = (pause * 2).min(LAST_PAUSE);
                }
            }
        }
    }

    fn watched(&self, instance: InstanceId) -> bool {
        lock(&self.shared.channels).contains_key(&instance)
    }

    async fn apply(&mut self, order: Order) {
        match order {
            Order::Look(instance) => {
                let watched = self.watched(instance);
                match (watched, self.subscribed.contains_key(&instance)) {
                    (true, false) => {
                        self.pending.insert(instance);
                    }
                    (false, true) => self.unsubscribe(instance).await,
                    (false, false) => {
                        self.pending.remove(&instance);
                        shrink_set(&mut self.pending);
                    }
                    (true, true) => {}
                }
            }
            Order::Lost(id) => {
                let Some(shard) = self
                    .links
                    .iter()
                    .find(|(_, link)| link.id == id)
                    .map(|(shard, _)| shard.clone())
                else {
                    return;
                };
                tracing::warn!(
                    shard = %shard,
                    "watch: the subscriber connection was lost; subscribing again"
                );
                self.drop_link(&shard);
            }
            Order::Dropped(id, instance) => {
                let on = self.subscribed.get(&instance).cloned();
                let Some(shard) = on else { return };
                if self.links.get(&shard).is_some_and(|link| link.id == id) {
                    tracing::debug!(%instance, shard = %shard, "watch: the server dropped a subscription");
                    self.subscribed.remove(&instance);
                    if let Some(link) = self.links.get_mut(&shard) {
                        link.count = link.count.saturating_sub(1);
                    }
                    if self.watched(instance) {
                        self.pending.insert(instance);
                    }
                    // its slot may have moved
                    self.shards = None;
                }
            }
        }
    }

    /// PING every connection; one that does not answer is dropped, and its
    /// channels subscribed again.
    async fn check_links(&mut self) {
        let links: Vec<(String, MultiplexedConnection)> = self
            .links
            .iter()
            .map(|(shard, link)| (shard.clone(), link.conn.clone()))
            .collect();
        for (shard, mut conn) in links {
            if let Err(err) = redis::cmd("PING").exec_async(&mut conn).await {
                tracing::warn!(shard = %shard, "watch: the subscriber connection does not answer ({err}); subscribing again");
                self.drop_link(&shard);
            }
        }
    }

    /// Forget a connection: its channels are subscribed again.
    fn drop_link(&mut self, shard: &str) {
        if self.links.remove(shard).is_some() {
            self.shared.stats.lane_closed();
        }
        let lost: Vec<InstanceId> = self
            .subscribed
            .iter()
            .filter(|(_, s)| s.as_str() == shard)
            .map(|(i, _)| *i)
            .collect();
        for instance in lost {
            self.subscribed.remove(&instance);
            if self.watched(instance) {
                self.pending.insert(instance);
            }
        }
        self.shards = None;
    }

    async fn unsubscribe(&mut self, instance: InstanceId) {
        let Some(shard) = self.subscribed.remove(&instance) else {
            return;
        };
        shrink(&mut self.subscribed);
        let Some(link) = self.links.get_mut(&shard) else {
            return;
        };
        link.count = link.count.saturating_sub(1);
        if link.count == 0 {
            // nothing left on it: closing it unsubscribes
            self.links.remove(&shard);
            self.shared.stats.lane_closed();
            tracing::debug!(shard = %shard, "watch: subscriber connection closed");
            return;
        }
        let channel = self.shared.store.watch_channel(instance);
        let mut conn = link.conn.clone();
        let sent = redis::cmd("SUNSUBSCRIBE")
            .arg(&channel)
            .exec_async(&mut conn)
            .await;
        if let Err(err) = sent {
            // a message that still comes is not for a watched instance
            tracing::debug!(%instance, error = %err, "watch: SUNSUBSCRIBE failed");
        }
    }

    /// The shard that serves `instance`'s channel: empty for the one
    /// Redis.
    async fn shard(&mut self, channel: &str) -> Result<String, StoreError> {
        if !self.shared.store.is_cluster() {
            return Ok(String::new());
        }
        let slot = crate::store::channel_slot(channel);
        if let Some(shards) = &self.shards
            && let Some(shard) = crate::store::shard_of(shards, slot)
        {
            return Ok(shard.to_string());
        }
        let shards = self.shared.store.shards().await?;
        let shard = crate::store::shard_of(&shards, slot)
            .map(str::to_string)
            .ok_or_else(|| StoreError::Unavailable(format!("no master serves slot {slot} now")));
        self.shards = Some(shards);
        shard
    }

    /// The connection to `shard`, made if there is none.
    async fn link(&mut self, shard: &str) -> Result<MultiplexedConnection, StoreError> {
        if let Some(link) = self.links.get(shard) {
            return Ok(link.conn.clone());
        }
        let id = self.next_link;
        self.next_link += 1;
        let shared = self.shared.clone();
        let orders = self.orders.clone();
        let conn = self
            .shared
            .store
            .subscriber(shard, move |info| {
                if let Some(orders) = orders.upgrade() {
                    shared.on_push(id, info, &orders);
                }
            })
            .await?;
        self.shared.stats.lane_opened();
        tracing::debug!(shard = %shard, "watch: subscriber connection opened");
        self.links.insert(
            shard.to_string(),
            Link {
                id,
                conn: conn.clone(),
                count: 0,
            },
        );
        Ok(conn)
    }

    /// Subscribe the pending instances, by shard and partition (the
    /// channels of one SSUBSCRIBE share a slot), each then read from its
    /// cursor. What fails stays pending.
    async fn subscribe_pending(&mut self) -> Result<(), StoreError> {
        let pending: Vec<InstanceId> = self.pending.iter().copied().collect();
        let mut groups: HashMap<(String, u16), Vec<(InstanceId, String)>> = HashMap::new();
        for instance in pending {
            if !self.watched(instance) {
                self.pending.remove(&instance);
                continue;
            }
            let channel = self.shared.store.watch_channel(instance);
            let shard = self.shard(&channel).await?;
            let slot = crate::store::channel_slot(&channel);
            groups
                .entry((shard, slot))
                .or_default()
                .push((instance, channel));
        }
        let mut failed = None;
        for ((shard, _), group) in groups {
            let mut conn = match self.link(&shard).await {
                Ok(conn) => conn,
                Err(err) => {
                    self.shards = None;
                    failed = Some(err);
                    continue;
                }
            };
            for batch in group.chunks(SUBSCRIBE_BATCH) {
                let mut cmd = redis::cmd("SSUBSCRIBE");
                for (_, channel) in batch {
                    cmd.arg(channel);
                }
                match cmd.exec_async(&mut conn).await {
                    Ok(()) => {
                        for (instance, _) in batch {
                            self.pending.remove(instance);
                            if self.subscribed.insert(*instance, shard.clone()).is_none()
                                && let Some(link) = self.links.get_mut(&shard)
                            {
                                link.count += 1;
                            }
                            // written before the subscription: in the stream
                            self.shared.mark(*instance);
                        }
                    }
                    Err(err) => {
                        if err.redirect_node().is_some() {
                            // MOVED: the slot map is behind
                            self.shards = None;
                        } else if err.is_io_error()
                            || err.is_connection_dropped()
                            || err.is_timeout()
                            || err.is_unrecoverable_error()
                        {
                            self.drop_link(&shard);
                        }
                        failed = Some(err.into());
                        break;
                    }
                }
            }
        }
        shrink_set(&mut self.pending);
        match failed {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// One client's watch of an instance.
pub struct Watcher {
    hub: Arc<Hub>,
    instance: InstanceId,
    channel: Arc<Channel>,
    /// Changes when entries go on the ring; `None` once dropped.
    head: Option<watch::Receiver<u64>>,
    /// The number of the next ring entry to take.
    next: u64,
    /// Entries taken off the ring while the client's socket was full
    /// (see [`Watcher::absorb`]); at most the hub's buffer.
    backlog: VecDeque<Arc<Item>>,
    /// The last id given to the client (or where it started).
    position: StreamId,
    /// While set, entries up to this id come from Redis, not the ring.
    replay_until: Option<StreamId>,
}

/// What a look at the ring found.
enum Taken {
    /// Entries (maybe none).
    Items(Vec<Arc<Item>>),
    /// The ring moved past the watcher: this many were lost.
    Lagged(u64),
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

    /// Up to `max` entries of the ring after the last taken.
    fn take(&mut self, max: usize) -> Taken {
        let Some(head) = self.head.as_mut() else {
            return Taken::Items(Vec::new());
        };
        head.borrow_and_update();
        let ring = lock(&self.channel.ring);
        if self.next < ring.first {
            return Taken::Lagged(ring.first - self.next);
        }
        let from = (self.next - ring.first) as usize;
        let items: Vec<Arc<Item>> = ring.items.iter().skip(from).take(max).cloned().collect();
        self.next += items.len() as u64;
        Taken::Items(items)
    }

    /// Wait for the ring to change; never returns once dropped.
    async fn changed(&mut self) {
        match self.head.as_mut() {
            Some(head) => {
                if head.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// The next lines for the client (at most about `max`), or the news
    /// that it was dropped. Waits until there is something.
    pub async fn next(&mut self, max: usize) -> Next {
        let max = max.max(1);
        loop {
            if let Some(until) = self.replay_until {
                // boxed: a Redis read's future is large, and every
                // watching connection's task would carry its room while
                // it waits
                match Box::pin(self.replay(until)).await {
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
            if self.head.is_none() {
                return std::future::pending().await;
            }
            match self.take(max) {
                Taken::Lagged(count) => return self.drop_out(count),
                Taken::Items(taken) => {
                    for item in taken {
                        self.hand_out(item, &mut items);
                    }
                }
            }
            if !items.is_empty() {
                return Next::Items(items);
            }
            self.changed().await;
        }
    }

    /// While the client's socket is full and a write waits: take what
    /// arrives off the ring into the backlog, so that falling behind is
    /// seen even though nothing is read. Returns only when the watcher is
    /// too far behind: then it is [`Next::Dropped`] and receives no more.
    pub async fn absorb(&mut self) -> Next {
        loop {
            if self.head.is_none() {
                return std::future::pending().await;
            }
            match self.take(usize::MAX) {
                Taken::Lagged(count) => return self.drop_out(count),
                Taken::Items(taken) => {
                    self.backlog.extend(taken);
                    if self.backlog.len() > self.hub.shared.buffer {
                        return self.drop_out(0);
                    }
                }
            }
            self.changed().await;
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
        self.head = None;
        self.hub.shared.stats.watcher_dropped(count);
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
                line: Bytes::from((self.hub.shared.render)(self.instance, item)),
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
        drop(self.head.take());
        self.hub.shared.stats.watcher_removed();
        self.hub.release(self.instance);
    }
}
