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
//! that serves them now, and read again from their cursors. Which master
//! that is, after a channel was let go of, is asked of the node that let
//! go: it has taken in the change, and another node may still name it (a
//! channel subscribed on a demoted master hears nothing). So every entry
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
//!
//! The same connections also hold channels for others as long as the hub
//! runs ([`Hub::hold`]: the archiver's wake-ups, one channel per
//! partition), subscribed again like the instances' after a loss: each
//! message on one, and each (re)subscription, is handed to their callback
//! by the channel's name. So a daemon's subscriber connections stay one
//! per master.

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
use crate::store::{FeedItem, InstanceId, Published, Shards, Store, StoreError, StreamId, Topic};

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

/// Turns an entry of a topic (an instance, or a partition's transitions)
/// into the line a watcher receives.
pub type Render = fn(Topic, &FeedItem) -> Vec<u8>;

/// Told the name of a held channel when a message comes on it, and when it
/// is subscribed (again).
pub type OnHeld = Arc<dyn Fn(&[u8]) + Send + Sync>;

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
    /// it, and `WATCH ... AFTER resume` picks up where it was (`None` for
    /// WATCH ACTIVE, which starts again from what runs).
    Dropped {
        /// How many entries it missed.
        count: u64,
        /// The last id it was given (or its starting point).
        resume: Option<StreamId>,
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
    channels: Mutex<HashMap<Topic, Arc<Channel>>>,
    /// Instances whose feed must be read after their cursor.
    dirty: Mutex<HashSet<Topic>>,
    /// Wakes the filler.
    fill: Notify,
    /// Channels held for as long as the hub runs, and who is told.
    held: Mutex<HashMap<String, OnHeld>>,
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
    fn send(&self, topic: Topic, channel: &Channel, items: &[(StreamId, FeedItem)]) {
        let mut ring = lock(&channel.ring);
        let mut sent = false;
        for (id, item) in items {
            if *id <= ring.cursor {
                continue;
            }
            self.push(topic, &mut ring, *id, item);
            sent = true;
        }
        if sent {
            channel.head.send_replace(ring.end());
        }
    }

    fn push(&self, topic: Topic, ring: &mut Ring, id: StreamId, item: &FeedItem) {
        ring.cursor = id;
        ring.items.push_back(Arc::new(Item {
            id,
            line: Bytes::from((self.render)(topic, item)),
        }));
        if ring.items.len() > self.buffer {
            ring.items.pop_front();
            ring.first += 1;
        }
    }

    /// An entry published on `instance`'s channel: delivered when it
    /// follows the cursor, dropped when it was delivered, else the feed is
    /// read.
    fn published(&self, topic: Topic, entry: Published) {
        let Some(channel) = lock(&self.channels).get(&topic).cloned() else {
            return;
        };
        let mut ring = lock(&channel.ring);
        if entry.id <= ring.cursor {
            return;
        }
        if entry.prev == Some(ring.cursor) {
            self.push(topic, &mut ring, entry.id, &entry.item);
            channel.head.send_replace(ring.end());
            self.stats.watch_published();
        } else {
            drop(ring);
            self.stats.watch_gap();
            self.mark(topic);
        }
    }

    /// Have the filler read `instance`'s feed after its cursor.
    fn mark(&self, topic: Topic) {
        lock(&self.dirty).insert(topic);
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
                let Some(topic) = Store::channel_topic(&name) else {
                    self.held_event(&name);
                    return;
                };
                match Published::parse_for(topic, &payload) {
                    Some(entry) => self.published(topic, entry),
                    // not ours to read: the stream says what it was
                    None => self.mark(topic),
                }
            }
            PushKind::SUnsubscribe => {
                // the server let go of a channel (its slot moved, its master
                // was demoted), or answers our own SUNSUBSCRIBE
                if let Some(Value::BulkString(name)) = info.data.first() {
                    if let Some(topic) = Store::channel_topic(name) {
                        let _ = orders.send(Order::Dropped(link, topic));
                    } else if let Ok(name) = std::str::from_utf8(name) {
                        let _ = orders.send(Order::DroppedHeld(link, name.to_string()));
                    }
                }
            }
            PushKind::Disconnection => {
                let _ = orders.send(Order::Lost(link));
            }
            _ => {}
        }
    }

    /// A message on, or a (re)subscription of, channel `name`: tell who
    /// holds it.
    fn held_event(&self, name: &[u8]) {
        let on = std::str::from_utf8(name)
            .ok()
            .and_then(|name| lock(&self.held).get(name).cloned());
        if let Some(on) = on {
            on(name);
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
            held: Mutex::new(HashMap::new()),
        });
        let (orders, inbox) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            shared: shared.clone(),
            orders: orders.downgrade(),
            inbox,
            links: HashMap::new(),
            subscribed: HashMap::new(),
            pending: HashSet::new(),
            held: HashMap::new(),
            held_pending: HashSet::new(),
            shards: None,
            ask: None,
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
        let watcher = self
            .subscribe_topic(Topic::Instance(instance), after)
            .await?;
        Ok(Watcher::new(
            self.clone(),
            Watched::Instance(instance),
            Kind::One(watcher),
        ))
    }

    /// Watch every start and end of the store (WATCH ACTIVE): first the
    /// lines of `lead` (what runs as it begins), then the log of
    /// transitions of each partition after the id each of `after` gives
    /// it (where that reading of what runs stood), merged as they come.
    pub async fn watch_active(
        self: &Arc<Self>,
        lead: Vec<Vec<u8>>,
        after: Vec<(u64, StreamId)>,
    ) -> Result<Watcher, StoreError> {
        let parts = futures_util::future::join_all(
            after
                .iter()
                .map(|(p, id)| self.subscribe_topic(Topic::Partition(*p), Some(*id))),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let lead = lead
            .into_iter()
            .map(|line| {
                Arc::new(Item {
                    id: StreamId::default(),
                    line: Bytes::from(line),
                })
            })
            .collect();
        Ok(Watcher::new(
            self.clone(),
            Watched::Active,
            Kind::Active {
                lead,
                parts,
                dropped: false,
            },
        ))
    }

    /// Watch `topic` from after `after` (from now without it).
    async fn subscribe_topic(
        self: &Arc<Self>,
        topic: Topic,
        after: Option<StreamId>,
    ) -> Result<TopicWatcher, StoreError> {
        let head = self.store.feed(topic, None, 1).await?;
        let start = after.unwrap_or(head.last);
        let (channel, head_rx, next, cursor) = {
            let mut channels = lock(&self.shared.channels);
            let channel = channels
                .entry(topic)
                .or_insert_with(|| {
                    self.shared.stats.reader_started();
                    tracing::debug!(%topic, "watching a topic");
                    // sent under the lock: the subscriber sees the orders of
                    // an instance in the order its channel opened and closed
                    let _ = self.orders.send(Order::Look(topic));
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
        Ok(TopicWatcher {
            hub: self.clone(),
            topic,
            channel,
            head: Some(head_rx),
            next,
            backlog: VecDeque::new(),
            position: start,
            replay_until: (cursor > start).then_some(cursor),
        })
    }

    /// Hold `channels` (sharded, not instances') on the subscriber
    /// connections for as long as the hub runs: `on` is told a channel's
    /// name for each message on it and each time it is subscribed (again:
    /// what was published meanwhile went by unseen).
    pub fn hold(&self, channels: Vec<String>, on: OnHeld) {
        {
            let mut held = lock(&self.shared.held);
            for channel in &channels {
                held.insert(channel.clone(), on.clone());
            }
        }
        let _ = self.orders.send(Order::Hold(channels));
    }

    /// A watcher of `topic` went: close its channel if it was the last.
    fn release(&self, topic: Topic) {
        let mut channels = lock(&self.shared.channels);
        let last = channels
            .get(&topic)
            .is_some_and(|channel| channel.watchers.fetch_sub(1, Ordering::SeqCst) == 1);
        if last {
            channels.remove(&topic);
            shrink(&mut channels);
            let _ = self.orders.send(Order::Look(topic));
            self.shared.stats.reader_stopped();
            tracing::debug!(%topic, "no longer watching a topic");
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
        let dirty: Vec<Topic> = {
            let mut dirty = lock(&shared.dirty);
            let round: Vec<Topic> = dirty.iter().take(FILL_BATCH).copied().collect();
            for topic in &round {
                dirty.remove(topic);
            }
            shrink_set(&mut dirty);
            round
        };
        if dirty.is_empty() {
            shared.fill.notified().await;
            continue;
        }
        let open: Vec<(Topic, Arc<Channel>)> = {
            let channels = lock(&shared.channels);
            dirty
                .iter()
                .filter_map(|i| channels.get(i).map(|c| (*i, c.clone())))
                .collect()
        };
        let calls = open
            .iter()
            .map(|(topic, channel)| {
                let cursor = lock(&channel.ring).cursor;
                shared.store.feed_call(*topic, Some(cursor), page)
            })
            .collect();
        let mut failed = None;
        for ((topic, channel), feed) in open.iter().zip(shared.store.run_all(calls).await) {
            match feed {
                Ok(feed) => {
                    shared.send(*topic, channel, &feed.items);
                    if feed.next.is_some() {
                        lock(&shared.dirty).insert(*topic);
                    }
                }
                Err(err) => {
                    lock(&shared.dirty).insert(*topic);
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
    Look(Topic),
    /// A subscriber connection was lost.
    Lost(u64),
    /// The server unsubscribed the connection from an instance's channel.
    Dropped(u64, Topic),
    /// Channels to hold (see [`Hub::hold`]).
    Hold(Vec<String>),
    /// The server unsubscribed the connection from a held channel.
    DroppedHeld(u64, String),
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
    subscribed: HashMap<Topic, String>,
    /// Watched instances not subscribed yet.
    pending: HashSet<Topic>,
    /// The held channels subscribed, and their shard.
    held: HashMap<String, String>,
    /// Held channels not subscribed yet.
    held_pending: HashSet<String>,
    /// A cluster's slot map, as last read (`None`: read it again).
    shards: Option<Shards>,
    /// The shard that last let go of a channel: the next slot map is read
    /// from it (another node may not know yet that the slot moved, and a
    /// channel subscribed again where the map wrongly says would hear
    /// nothing).
    ask: Option<String>,
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
            let wait = if self.pending.is_empty() && self.held_pending.is_empty() {
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
            if self.pending.is_empty() && self.held_pending.is_empty() {
                pause = FIRST_PAUSE;
                continue;
            }
            match self.subscribe_pending().await {
                Ok(()) => {
                    pause = FIRST_PAUSE;
                    self.close_unused();
                }
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

    fn watched(&self, topic: Topic) -> bool {
        lock(&self.shared.channels).contains_key(&topic)
    }

    async fn apply(&mut self, order: Order) {
        match order {
            Order::Look(topic) => {
                let watched = self.watched(topic);
                match (watched, self.subscribed.contains_key(&topic)) {
                    (true, false) => {
                        self.pending.insert(topic);
                    }
                    (false, true) => self.unsubscribe(topic).await,
                    (false, false) => {
                        self.pending.remove(&topic);
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
            Order::Dropped(id, topic) => {
                let on = self.subscribed.get(&topic).cloned();
                let Some(shard) = on else { return };
                if self.links.get(&shard).is_some_and(|link| link.id == id) {
                    tracing::debug!(%topic, shard = %shard, "watch: the server dropped a subscription");
                    self.subscribed.remove(&topic);
                    if self.watched(topic) {
                        self.pending.insert(topic);
                    }
                    self.let_go(shard);
                }
            }
            Order::Hold(channels) => {
                for channel in channels {
                    if !self.held.contains_key(&channel) {
                        self.held_pending.insert(channel);
                    }
                }
            }
            Order::DroppedHeld(id, channel) => {
                let on = self.held.get(&channel).cloned();
                let Some(shard) = on else { return };
                if self.links.get(&shard).is_some_and(|link| link.id == id) {
                    tracing::debug!(channel = %channel, shard = %shard, "watch: the server dropped a subscription");
                    self.held.remove(&channel);
                    self.held_pending.insert(channel);
                    self.let_go(shard);
                }
            }
        }
    }

    /// The server on `shard` let go of one of the link's channels: its
    /// slot may have moved, and the node that let go knows where to, so
    /// the next slot map is read from it.
    fn let_go(&mut self, shard: String) {
        if let Some(link) = self.links.get_mut(&shard) {
            link.count = link.count.saturating_sub(1);
        }
        self.shards = None;
        self.ask = Some(shard);
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

    /// Close the connections left with no channel (the server let go of
    /// their last one, and they were kept to ask for the slot map).
    fn close_unused(&mut self) {
        let before = self.links.len();
        self.links.retain(|shard, link| {
            let keep = link.count > 0;
            if !keep {
                tracing::debug!(shard = %shard, "watch: subscriber connection closed");
            }
            keep
        });
        for _ in self.links.len()..before {
            self.shared.stats.lane_closed();
        }
    }

    /// After an SSUBSCRIBE on `shard` failed with `err`: a redirection
    /// (MOVED: the slot map is behind) forgets the slot map; a connection
    /// that failed is dropped.
    fn subscribe_failed(&mut self, shard: &str, err: &redis::RedisError) {
        if err.redirect_node().is_some() {
            self.shards = None;
        } else if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_timeout()
            || err.is_unrecoverable_error()
        {
            self.drop_link(shard);
        }
    }

    /// Forget a connection: its channels are subscribed again.
    fn drop_link(&mut self, shard: &str) {
        if self.links.remove(shard).is_some() {
            self.shared.stats.lane_closed();
        }
        let lost: Vec<Topic> = self
            .subscribed
            .iter()
            .filter(|(_, s)| s.as_str() == shard)
            .map(|(i, _)| *i)
            .collect();
        for topic in lost {
            self.subscribed.remove(&topic);
            if self.watched(topic) {
                self.pending.insert(topic);
            }
        }
        let lost: Vec<String> = self
            .held
            .iter()
            .filter(|(_, s)| s.as_str() == shard)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in lost {
            self.held.remove(&channel);
            self.held_pending.insert(channel);
        }
        self.shards = None;
    }

    async fn unsubscribe(&mut self, topic: Topic) {
        let Some(shard) = self.subscribed.remove(&topic) else {
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
        let channel = self.shared.store.watch_channel(topic);
        let mut conn = link.conn.clone();
        let sent = redis::cmd("SUNSUBSCRIBE")
            .arg(&channel)
            .exec_async(&mut conn)
            .await;
        if let Err(err) = sent {
            // a message that still comes is not for a watched instance
            tracing::debug!(%topic, error = %err, "watch: SUNSUBSCRIBE failed");
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
        let shards = self.read_shards().await?;
        let shard = crate::store::shard_of(&shards, slot)
            .map(str::to_string)
            .ok_or_else(|| StoreError::Unavailable(format!("no master serves slot {slot} now")));
        self.shards = Some(shards);
        shard
    }

    /// The cluster's slot map: from the node that last let go of a
    /// channel if there is one, else from any master.
    async fn read_shards(&mut self) -> Result<Shards, StoreError> {
        if let Some(shard) = self.ask.take()
            && let Some(link) = self.links.get(&shard)
        {
            let mut conn = link.conn.clone();
            match self.shared.store.shards_seen_by(&mut conn).await {
                Ok(shards) => {
                    tracing::debug!(?shards, seen_by = %shard, "watch: read the slot map");
                    return Ok(shards);
                }
                Err(err) => {
                    tracing::debug!(shard = %shard, error = %err, "watch: the node that let go did not tell its slot map");
                }
            }
        }
        let shards = self.shared.store.shards().await?;
        tracing::debug!(?shards, "watch: read the slot map");
        Ok(shards)
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

    /// Subscribe the held channels not subscribed yet, one SSUBSCRIBE
    /// each (each has a slot of its own), and tell who holds each.
    async fn subscribe_held(&mut self) -> Result<(), StoreError> {
        let pending: Vec<String> = self.held_pending.iter().cloned().collect();
        for channel in pending {
            let shard = self.shard(&channel).await?;
            let mut conn = match self.link(&shard).await {
                Ok(conn) => conn,
                Err(err) => {
                    self.shards = None;
                    return Err(err);
                }
            };
            match redis::cmd("SSUBSCRIBE")
                .arg(&channel)
                .exec_async(&mut conn)
                .await
            {
                Ok(()) => {
                    self.held_pending.remove(&channel);
                    if self.held.insert(channel.clone(), shard.clone()).is_none()
                        && let Some(link) = self.links.get_mut(&shard)
                    {
                        link.count += 1;
                    }
                    // what was published before is in the outbox
                    self.shared.held_event(channel.as_bytes());
                }
                Err(err) => {
                    self.subscribe_failed(&shard, &err);
                    return Err(err.into());
                }
            }
        }
        Ok(())
    }

    /// Subscribe the pending instances, by shard and partition (the
    /// channels of one SSUBSCRIBE share a slot), each then read from its
    /// cursor. What fails stays pending.
    async fn subscribe_pending(&mut self) -> Result<(), StoreError> {
        let pending: Vec<Topic> = self.pending.iter().copied().collect();
        let mut groups: HashMap<(String, u16), Vec<(Topic, String)>> = HashMap::new();
        for topic in pending {
            if !self.watched(topic) {
                self.pending.remove(&topic);
                continue;
            }
            let channel = self.shared.store.watch_channel(topic);
            let shard = self.shard(&channel).await?;
            let slot = crate::store::channel_slot(&channel);
            groups
                .entry((shard, slot))
                .or_default()
                .push((topic, channel));
        }
        let mut failed = None;
        if let Err(err) = self.subscribe_held().await {
            failed = Some(err);
        }
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
                        tracing::debug!(shard = %shard, channels = batch.len(), "watch: subscribed");
                        for (topic, _) in batch {
                            self.pending.remove(topic);
                            if self.subscribed.insert(*topic, shard.clone()).is_none()
                                && let Some(link) = self.links.get_mut(&shard)
                            {
                                link.count += 1;
                            }
                            // written before the subscription: in the stream
                            self.shared.mark(*topic);
                        }
                    }
                    Err(err) => {
                        self.subscribe_failed(&shard, &err);
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

/// What a client watches: an instance, or every start and end (`active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// WATCH <mref>.
    Instance(InstanceId),
    /// WATCH ACTIVE.
    Active,
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Watched::Instance(instance) => write!(f, "{instance}"),
            Watched::Active => f.write_str("active"),
        }
    }
}

/// One client's watch.
pub struct Watcher {
    hub: Arc<Hub>,
    watched: Watched,
    kind: Kind,
}

enum Kind {
    /// An instance's entries.
    One(TopicWatcher),
    /// WATCH ACTIVE: the lines of what ran as it began, then the starts
    /// and ends of every partition, in each partition's order.
    Active {
        lead: VecDeque<Arc<Item>>,
        parts: Vec<TopicWatcher>,
        /// A part fell behind: nothing more comes.
        dropped: bool,
    },
}

impl Watcher {
    fn new(hub: Arc<Hub>, watched: Watched, kind: Kind) -> Watcher {
        hub.shared.stats.watcher_added();
        Watcher { hub, watched, kind }
    }

    /// What is watched.
    pub fn instance(&self) -> Watched {
        self.watched
    }

    /// The last id given to the client (where it started, before the
    /// first): `WATCH ... AFTER` it resumes with nothing lost or repeated.
    /// `None` for WATCH ACTIVE, which does not resume.
    pub fn position(&self) -> Option<StreamId> {
        match &self.kind {
            Kind::One(watcher) => Some(watcher.position()),
            Kind::Active { .. } => None,
        }
    }

    /// The next lines for the client (at most about `max`), or the news
    /// that it was dropped. Waits until there is something.
    pub async fn next(&mut self, max: usize) -> Next {
        match &mut self.kind {
            Kind::One(watcher) => watcher.next(max).await,
            Kind::Active {
                lead,
                parts,
                dropped,
            } => {
                if *dropped {
                    return std::future::pending().await;
                }
                if !lead.is_empty() {
                    let n = max.clamp(1, lead.len());
                    return Next::Items(lead.drain(..n).collect());
                }
                let next = futures_util::future::select_all(
                    parts.iter_mut().map(|part| Box::pin(part.next(max))),
                )
                .await
                .0;
                merged(next, dropped)
            }
        }
    }

    /// While the client's socket is full and a write waits: take what
    /// arrives into the backlog, so that falling behind is seen even though
    /// nothing is read. Returns only when the watcher is too far behind:
    /// then it is [`Next::Dropped`] and receives no more.
    pub async fn absorb(&mut self) -> Next {
        match &mut self.kind {
            Kind::One(watcher) => watcher.absorb().await,
            Kind::Active { parts, dropped, .. } => {
                if *dropped {
                    return std::future::pending().await;
                }
                let next = futures_util::future::select_all(
                    parts.iter_mut().map(|part| Box::pin(part.absorb())),
                )
                .await
                .0;
                merged(next, dropped)
            }
        }
    }
}

/// A part's news as WATCH ACTIVE's: a part that fell behind drops the
/// whole watch (it cannot resume; the client watches again).
fn merged(next: Next, dropped: &mut bool) -> Next {
    match next {
        Next::Dropped { count, .. } => {
            *dropped = true;
            Next::Dropped {
                count,
                resume: None,
            }
        }
        items => items,
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.hub.shared.stats.watcher_removed();
    }
}

/// One client's watch of one topic.
struct TopicWatcher {
    hub: Arc<Hub>,
    topic: Topic,
    channel: Arc<Channel>,
    /// Changes when entries go on the ring; `None` once dropped.
    head: Option<watch::Receiver<u64>>,
    /// The number of the next ring entry to take.
    next: u64,
    /// Entries taken off the ring while the client's socket was full
    /// (see [`TopicWatcher::absorb`]); at most the hub's buffer.
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

impl TopicWatcher {
    /// The last id given to the client (where it started, before the
    /// first): `WATCH ... AFTER` it resumes with nothing lost or repeated.
    fn position(&self) -> StreamId {
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
    async fn next(&mut self, max: usize) -> Next {
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
                        tracing::warn!(topic = %self.topic, "watch replay: Redis call failed ({err}); retrying");
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
    async fn absorb(&mut self) -> Next {
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
            resume: Some(self.position),
        }
    }

    /// One page of the replay from Redis, up to `until`.
    async fn replay(&mut self, until: StreamId) -> Result<Vec<Arc<Item>>, StoreError> {
        let feed = self
            .hub
            .store
            .feed(self.topic, Some(self.position), HISTORY_PAGE)
            .await?;
        let mut items = Vec::with_capacity(feed.items.len());
        for (id, item) in &feed.items {
            if *id > until {
                break;
            }
            self.position = *id;
            items.push(Arc::new(Item {
                id: *id,
                line: Bytes::from((self.hub.shared.render)(self.topic, item)),
            }));
        }
        if feed.next.is_none() || self.position >= until || items.len() < feed.items.len() {
            self.replay_until = None;
        }
        Ok(items)
    }
}

impl Drop for TopicWatcher {
    fn drop(&mut self) {
        drop(self.head.take());
        self.hub.release(self.topic);
    }
}
