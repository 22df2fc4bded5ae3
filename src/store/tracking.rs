//! The tracked connections: reads that Redis keeps the daemon's caches
//! right about (server-assisted client-side caching).
//!
//! Two caches use them: the users (`users.rs`), which JOIN needs, and the
//! answers of ACTIVE and ATTENDANCE per partition (`running.rs`). The
//! reads that fill them go on a connection of their own with `CLIENT
//! TRACKING ON OPTIN`, each behind a `CLIENT CACHING YES`, and when a key
//! read so changes, by any path (the daemon, redis-cli, a script), Redis
//! sends that connection an invalidation message naming the key, queued
//! on it in the same step as the write, before Redis runs any later
//! command. A Lua call tracks the keys it declares (Redis 7.0 tracks no
//! other key a script reads), so a cached call declares every key it reads.
//!
//! A connection that is lost loses its tracking: Redis forgets what it
//! read, and a change made meanwhile is never told. So every cached entry
//! remembers the tracking connection (the link) that read it, and a lost
//! link drops its entries; the next read makes a new link (with a new id).
//! The links are plain multiplexed connections whose push messages are
//! handed over inline, in the order the connection reads them (redis-rs'
//! ConnectionManager hands them to another task, which may run after the
//! reply that followed them: a barrier could then return before the
//! invalidation it must wait for). On one Redis there is one link. On a
//! cluster each master has a link of the caches' own (not the cluster client's:
//! redis-rs' cluster connection sends one anonymous "disconnected" for
//! whichever of its node connections dropped, and replaces a node's
//! connection after a failed PING without any), so when a master dies,
//! only what it holds is dropped. A link is only ever replaced after it is
//! known lost, its entries dropped first. A read that cannot be tracked
//! (its slot is moving, or the slot map is behind) goes through the
//! cluster client and is served, not kept.
//!
//! [`Tracking::barrier`] makes a read of the caches as fresh as a read of
//! Redis: a PING on every link. Its answer comes after every invalidation
//! queued before Redis ran it, and pushes are handed over as the link
//! reads them, in order: once the barrier returns, every change made
//! before it (acknowledged to anyone before it was sent) has reached the
//! caches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value};

use super::conn::Conn;
use super::{StoreError, StoreOptions, reply};

/// What the caches are told by the links.
pub(super) trait Sink: Send + Sync {
    /// Keys read on `link` changed, or (`None`: a flush) everything it
    /// tracked may have.
    fn invalidated(&self, link: u64, keys: Option<&[String]>);
    /// `link` is lost: what it tracked is no longer kept right.
    fn lost(&self, link: u64);
}

/// Hand a link's push message to the caches.
fn on_push(sinks: &[Arc<dyn Sink>], link: u64, info: &PushInfo) {
    match info.kind {
        PushKind::Invalidate => {
            let keys: Option<Vec<String>> = match info.data.first() {
                Some(Value::Array(keys)) => Some(
                    keys.iter()
                        .filter_map(|k| reply::text("invalidate", k.clone()).ok())
                        .collect(),
                ),
                _ => None,
            };
            for sink in sinks {
                sink.invalidated(link, keys.as_deref());
            }
        }
        PushKind::Disconnection => {
            for sink in sinks {
                sink.lost(link);
            }
        }
        _ => {}
    }
}

/// A tracking connection made by `client` as link `id`: RESP3, `timeout`
/// to connect and for each reply, its pushes to `sinks` (then `lost`
/// called when it is lost), tracking on (OPTIN).
async fn tracking_connection(
    client: redis::Client,
    timeout: Duration,
    sinks: &Arc<[Arc<dyn Sink>]>,
    id: u64,
    lost: impl Fn() + Send + Sync + 'static,
) -> Result<MultiplexedConnection, StoreError> {
    let sinks = sinks.clone();
    let config = super::conn::push_config(timeout, move |info| {
        on_push(&sinks, id, &info);
        if info.kind == PushKind::Disconnection {
            lost();
        }
    });
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("OPTIN")
        .exec_async(&mut conn)
        .await?;
    Ok(conn)
}

/// The tracked connections of the store.
pub(super) enum Tracking {
    /// One Redis: one link at a time, made again when lost.
    Single(Arc<OneLink>),
    /// A cluster: a link per master.
    Cluster(Arc<Links>),
}

/// The link to the one Redis.
pub(super) struct OneLink {
    url: String,
    timeout: Duration,
    sinks: Arc<[Arc<dyn Sink>]>,
    link: Mutex<Option<Link>>,
    next_id: AtomicU64,
}

impl OneLink {
    /// The link, made if there is none.
    async fn link(self: &Arc<Self>) -> Result<Link, StoreError> {
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let me = Arc::downgrade(self);
        let made = async {
            let client = super::conn::resp3_client(&self.url)?;
            tracking_connection(client, self.timeout, &self.sinks, id, move || {
                if let Some(me) = me.upgrade() {
                    me.lost(id);
                }
            })
            .await
        };
        let conn = tokio::time::timeout(self.timeout, made)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no answer from Redis within {} ms",
                    self.timeout.as_millis()
                ))
            })??;
        let mut current = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        // another read may have made one meanwhile: one link at a time
        Ok(current.get_or_insert(Link { id, conn }).clone())
    }

    fn current(&self) -> Option<Link> {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The link `id` is lost: forget it, and what it tracked.
    fn lost(&self, id: u64) {
        {
            let mut current = self.link.lock().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|l| l.id == id) {
                *current = None;
            }
        }
        for sink in self.sinks.iter() {
            sink.lost(id);
        }
    }

    /// `pipe` on the link, and the link's id.
    async fn query(
        self: &Arc<Self>,
        pipe: &redis::Pipeline,
    ) -> Result<(Vec<Value>, Option<u64>), StoreError> {
        let link = self.link().await?;
        match pipe.query_async::<Vec<Value>>(&mut link.conn.clone()).await {
            Ok(values) => Ok((values, Some(link.id))),
            Err(err) => {
                if err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_unrecoverable_error()
                    || err.is_timeout()
                {
                    self.lost(link.id);
                }
                Err(err.into())
            }
        }
    }

    /// A PING on the link; which of `kept` it read (the others were read
    /// on a link lost since).
    async fn barrier(self: &Arc<Self>, kept: &[(String, u64)]) -> Result<Vec<bool>, StoreError> {
        let link = self.link().await?;
        if let Err(err) = redis::cmd("PING").exec_async(&mut link.conn.clone()).await {
            self.lost(link.id);
            return Err(err.into());
        }
        Ok(kept.iter().map(|(_, id)| *id == link.id).collect())
    }
}

impl Tracking {
    /// Open the tracked connection (RESP3, tracking turned on at every
    /// connect), its pushes to `sinks`. On a cluster, links are made as
    /// masters are read from; `conn` (the store's) tells the masters and
    /// reads what cannot be tracked.
    pub(super) async fn open(
        options: &StoreOptions,
        conn: &Conn,
        sinks: Vec<Arc<dyn Sink>>,
    ) -> Result<Tracking, StoreError> {
        let sinks: Arc<[Arc<dyn Sink>]> = sinks.into();
        if options.cluster.is_empty() {
            // OPTIN: only the reads behind CLIENT CACHING YES are tracked
            let one = Arc::new(OneLink {
                url: options.url.clone(),
                timeout: options.timeout,
                sinks,
                link: Mutex::new(None),
                next_id: AtomicU64::new(1),
            });
            // made now if Redis answers, else by the first read
            if let Err(err) = one.link().await {
                tracing::debug!(error = %err, "the caches' connection is made later");
            }
            return Ok(Tracking::Single(one));
        }
        let first = options.cluster.first().map_or("", String::as_str);
        let links = Arc::new(Links {
            conn: conn.clone(),
            info: super::conn::resp3_info(first, "Redis Cluster URL")?,
            timeout: options.timeout,
            sinks,
            state: Mutex::new(LinkState::default()),
            next_id: AtomicU64::new(1),
            refreshing: AtomicBool::new(false),
        });
        links.refresh().await?;
        Ok(Tracking::Cluster(links))
    }

    /// Run `pipe` on the link of the master that serves `key`'s slot, each
    /// of its commands that reads behind a `CLIENT CACHING YES` (which
    /// `pipe` holds: see [`cached`]), and the link's id; `None` for a read
    /// that could not be tracked (a slot that moves, a slot map behind: it
    /// went through the cluster client, its `CLIENT CACHING` left out by
    /// `untracked`), whose answer serves but is not kept.
    pub(super) async fn query(
        &self,
        key: &str,
        pipe: &redis::Pipeline,
        untracked: &redis::Pipeline,
    ) -> Result<(Vec<Value>, Option<u64>), StoreError> {
        match self {
            Tracking::Single(one) => one.query(pipe).await,
            Tracking::Cluster(links) => links.query(key, pipe, untracked).await,
        }
    }

    /// A round trip on every link, so that every invalidation of a change
    /// made before it has reached the caches when it returns; and for
    /// each of `kept` (a key, and the link an entry read it on) whether
    /// that link still serves the key (on a cluster a slot moves, a master
    /// is demoted: then writes go elsewhere and its link hears of none).
    pub(super) async fn barrier(&self, kept: &[(String, u64)]) -> Result<Vec<bool>, StoreError> {
        match self {
            Tracking::Single(one) => one.barrier(kept).await,
            Tracking::Cluster(links) => links.barrier(kept).await,
        }
    }
}

/// Add `cmd` to `pipe` so that the keys it declares are tracked: behind a
/// `CLIENT CACHING YES`, whose own reply is left out.
pub(super) fn cached(pipe: &mut redis::Pipeline, cmd: redis::Cmd) {
    pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
    pipe.add_command(cmd);
}

/// A master's address.
type Addr = (String, u16);

/// A tracking connection to one master.
#[derive(Clone)]
struct Link {
    id: u64,
    conn: MultiplexedConnection,
}

/// The links of a cluster, and which master serves which slot.
pub(super) struct Links {
    conn: Conn,
    /// The first node's settings (user, password), RESP3.
    info: ConnectionInfo,
    timeout: Duration,
    sinks: Arc<[Arc<dyn Sink>]>,
    state: Mutex<LinkState>,
    next_id: AtomicU64,
    /// A refresh of the slot map is under way.
    refreshing: AtomicBool,
}

#[derive(Default)]
struct LinkState {
    /// Slot ranges (inclusive) and their master.
    owners: Vec<(u16, u16, Addr)>,
    links: HashMap<Addr, Link>,
    /// Masters a link could not be made to: not tried again until then
    /// (a dead master would otherwise be dialled by every read), and why.
    down: HashMap<Addr, (Instant, String)>,
}

/// How long a master a link could not be made to is not dialled again.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// Redis Cluster's slots.
const SLOTS: u16 = 16_384;

/// The slot of `key` (its hash tag's, when it has one).
pub(super) fn slot_of(key: &str) -> u16 {
    let tagged = key
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged.as_bytes()) % SLOTS
}

impl Links {
    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read the slot map from CLUSTER NODES (a failed master left out: its
    /// slots wait for another); let go of links to nodes that serve none.
    async fn refresh(&self) -> Result<(), StoreError> {
        let mut tries = 0;
        let masters = loop {
            // asked of a random master, which may be the one that died
            match self.conn.masters().await {
                Ok(masters) => break masters,
                Err(err) if tries >= 2 => return Err(err),
                Err(_) => tries += 1,
            }
        };
        let owners = masters
            .iter()
            .filter(|m| !m.failed)
            .flat_map(|m| {
                m.slots
                    .iter()
                    .map(|(a, b)| (*a, *b, (m.host.clone(), m.port)))
            })
            .collect::<Vec<(u16, u16, Addr)>>();
        // a link to a node that serves no slot now (a master demoted by a
        // failover, or flagged failed) is let go, with what it tracked:
        // what it read is read again from the master that serves it
        let stale: Vec<(Addr, u64)> = {
            let mut state = self.state();
            let stale = state
                .links
                .iter()
                .filter(|(addr, _)| !owners.iter().any(|(_, _, owner)| owner == *addr))
                .map(|(addr, link)| (addr.clone(), link.id))
                .collect();
            state.owners = owners;
            stale
        };
        for (addr, id) in stale {
            self.lost(&addr, id);
        }
        Ok(())
    }

    /// Refresh the slot map in the background (one refresh at a time).
    fn refresh_soon(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let links = self.clone();
        tokio::spawn(async move {
            if let Err(err) = links.refresh().await {
                tracing::debug!(error = %err, "the caches cannot read the slot map");
            }
            links.refreshing.store(false, Ordering::SeqCst);
        });
    }

    /// The master of `slot`, as last read.
    fn owner(&self, slot: u16) -> Option<Addr> {
        self.state()
            .owners
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, addr)| addr.clone())
    }

    /// A link is lost: forget it, and what it tracked (its push of the
    /// disconnection does the same; whichever comes first).
    fn lost(&self, addr: &Addr, id: u64) {
        {
            let mut state = self.state();
            if state.links.get(addr).is_some_and(|l| l.id == id) {
                state.links.remove(addr);
            }
        }
        for sink in self.sinks.iter() {
            sink.lost(id);
        }
    }

    /// The link to `addr`, made if there is none.
    async fn link(self: &Arc<Self>, addr: &Addr) -> Result<Link, StoreError> {
        {
            let mut state = self.state();
            if let Some(link) = state.links.get(addr) {
                return Ok(link.clone());
            }
            if let Some((until, why)) = state.down.get(addr) {
                if Instant::now() < *until {
                    return Err(StoreError::Unavailable(format!(
                        "Redis node {}:{} cannot be reached ({why})",
                        addr.0, addr.1
                    )));
                }
                state.down.remove(addr);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let made = tokio::time::timeout(self.timeout, self.connect(addr, id)).await;
        let why = match made {
            Ok(Ok(conn)) => {
                let mut state = self.state();
                // another read may have made one meanwhile: one link per
                // master (ours has tracked nothing yet)
                let link = state
                    .links
                    .entry(addr.clone())
                    .or_insert(Link { id, conn })
                    .clone();
                return Ok(link);
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        tracing::warn!(
            "cannot connect to Redis node {}:{} for the caches: {why}; what it holds is read again once it answers",
            addr.0,
            addr.1
        );
        self.state()
            .down
            .insert(addr.clone(), (Instant::now() + DOWN_FOR, why.clone()));
        // the slot may have moved to another master (a failover)
        self.refresh_soon();
        Err(StoreError::Unavailable(format!(
            "Redis node {}:{} cannot be reached ({why})",
            addr.0, addr.1
        )))
    }

    /// A tracking connection to `addr`: RESP3, its pushes to the caches
    /// as link `id`, tracking on (OPTIN).
    async fn connect(
        self: &Arc<Self>,
        addr: &Addr,
        id: u64,
    ) -> Result<MultiplexedConnection, StoreError> {
        let info = self
            .info
            .clone()
            .set_addr(ConnectionAddr::Tcp(addr.0.clone(), addr.1));
        let links = Arc::downgrade(self);
        let lost_addr = addr.clone();
        let client = redis::Client::open(info)?;
        tracking_connection(client, self.timeout, &self.sinks, id, move || {
            if let Some(links) = links.upgrade() {
                links.lost(&lost_addr, id);
            }
        })
        .await
    }

    /// `pipe` on the link to the master of `key`'s slot, tracked there;
    /// `untracked` through the cluster client, and not tracked, when that
    /// master no longer serves the slot.
    async fn query(
        self: &Arc<Self>,
        key: &str,
        pipe: &redis::Pipeline,
        untracked: &redis::Pipeline,
    ) -> Result<(Vec<Value>, Option<u64>), StoreError> {
        let slot = slot_of(key);
        let addr = match self.owner(slot) {
            Some(addr) => addr,
            None => {
                self.refresh().await?;
                self.owner(slot).ok_or_else(|| {
                    StoreError::Unavailable(format!("no master serves slot {slot} now"))
                })?
            }
        };
        let link = self.link(&addr).await?;
        match pipe.query_async::<Vec<Value>>(&mut link.conn.clone()).await {
            Ok(values) => Ok((values, Some(link.id))),
            Err(err) if err.redirect_node().is_some() => {
                // MOVED (the map is behind) or ASK (the slot is moving)
                self.refresh_soon();
                let values: Vec<Value> = untracked.query_async(&mut self.conn.clone()).await?;
                Ok((values, None))
            }
            Err(err) => {
                if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error()
                {
                    self.lost(&addr, link.id);
                }
                Err(err.into())
            }
        }
    }

    /// A PING on every link, with an EXISTS of each of `kept` read on it
    /// (a key its master no longer serves answers MOVED); one that fails
    /// is lost (its entries dropped), and the barrier fails.
    async fn barrier(self: &Arc<Self>, kept: &[(String, u64)]) -> Result<Vec<bool>, StoreError> {
        let links: Vec<(Addr, Link)> = self
            .state()
            .links
            .iter()
            .map(|(addr, link)| (addr.clone(), link.clone()))
            .collect();
        let rounds = links.iter().map(|(_, link)| async move {
            let mine: Vec<usize> = (0..kept.len()).filter(|i| kept[*i].1 == link.id).collect();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            pipe.cmd("PING");
            for i in &mine {
                pipe.cmd("EXISTS").arg(&kept[*i].0);
            }
            let values = pipe.query_async::<Vec<Value>>(&mut link.conn.clone()).await;
            (mine, values)
        });
        let mut served = vec![false; kept.len()];
        let mut failed = None;
        for ((addr, link), (mine, result)) in links
            .iter()
            .zip(futures_util::future::join_all(rounds).await)
        {
            match result {
                Ok(values) => {
                    for (i, value) in mine.iter().zip(values.iter().skip(1)) {
                        served[*i] = !matches!(value, Value::ServerError(_));
                    }
                }
                Err(err) => {
                    self.lost(addr, link.id);
                    failed = Some(err);
                }
            }
        }
        if served.iter().any(|s| !s) {
            // a slot moved, or the map is behind
            self.refresh_soon();
        }
        match failed {
            Some(err) => Err(err.into()),
            None => Ok(served),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        // CLUSTER KEYSLOT's answers
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("a{}b"), slot_of("a{}b"));
    }
}
