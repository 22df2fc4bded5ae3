//! Users as the daemon holds them: a cache that Redis keeps fresh.
//!
//! A user lives under a hash tag of their own, so the call of a JOIN (under
//! its meeting's tag) cannot read them: the daemon must know that the user
//! exists and pass their e-mail in. To make that one call and not two,
//! users (their name and e-mail) are cached. Redis' server-assisted
//! client-side caching keeps the cache right: the reads that fill it go on
//! a connection of their own with `CLIENT TRACKING ON OPTIN`, each behind a
//! `CLIENT CACHING YES`, and when a user read so changes, by any path (the
//! daemon, redis-cli, a script), Redis sends that connection an
//! invalidation message before it answers the write. The message drops the
//! user; a flush drops what that connection tracked.
//!
//! A connection that is lost loses its tracking: Redis forgets what it
//! read, and a change made meanwhile is never told. So every entry
//! remembers the tracking connection (the link) that read it, and a lost
//! link drops exactly its entries. On one Redis that is all of them. On a
//! cluster each master has a link of the cache's own (not the cluster
//! client's: redis-rs' cluster connection sends one anonymous
//! "disconnected" for whichever of its node connections dropped, and
//! replaces a node's connection after a failed PING without any), so when a
//! master dies, only the users it holds are dropped; those of the healthy
//! masters stay, still tracked, and JOINs of their meetings go on without
//! reading them. A link is only ever replaced after it is known lost, its
//! entries dropped first. A read the cache cannot track (its slot is
//! moving, or the slot map is behind) goes through the cluster client and
//! is served, not kept.
//!
//! A read races an invalidation (or a lost link) that arrives while it is
//! on its way: its answer may then be the value from before. Every
//! invalidation and every lost link moves an epoch on; an answer is kept
//! only when the epoch did not move while it was read (it still serves its
//! own request, which was sent before the change was known).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::caching::{CacheConfig, CacheMode};
use redis::{ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value};

use super::conn::Conn;
use super::keys::Keys;
use super::types::Id;
use super::{StoreError, StoreOptions, reply};

/// What the daemon keeps of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Their name.
    pub name: String,
    /// Their e-mail, lower-cased.
    pub email: String,
}

/// The cache and the connections that fill it.
pub(super) struct Users {
    conn: Tracked,
    cache: Arc<Mutex<Cache>>,
}

enum Tracked {
    /// One Redis: one link, id 0, which reconnects by itself (a
    /// reconnection is a lost link).
    Single(ConnectionManager),
    /// A cluster: a link per master.
    Cluster(Arc<Links>),
}

/// A user as cached, with the link whose tracking keeps them fresh.
struct Entry {
    known: Arc<Known>,
    link: u64,
}

struct Cache {
    users: lru::LruCache<Id, Entry>,
    /// Moves on at every invalidation and every lost link.
    epoch: u64,
}

impl Cache {
    /// A link was lost (or flushed): its tracking with it.
    fn forget_link(&mut self, link: u64) {
        let lost: Vec<Id> = self
            .users
            .iter()
            .filter(|(_, entry)| entry.link == link)
            .map(|(user, _)| *user)
            .collect();
        for user in lost {
            self.users.pop(&user);
        }
        self.epoch += 1;
    }

    /// What an invalidation message of `link` says: some users' keys
    /// changed, or (nil) everything it tracked may have.
    fn invalidate(&mut self, link: u64, data: &[Value]) {
        self.epoch += 1;
        match data.first() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    if let Some(user) = reply::text("invalidate", key.clone())
                        .ok()
                        .and_then(|k| Keys::user_of(&k))
                    {
                        self.users.pop(&user);
                    }
                }
            }
            _ => self.forget_link(link),
        }
    }
}

/// What a link's push messages do to the cache.
fn on_push(cache: &Mutex<Cache>, link: u64, info: &PushInfo) {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    match info.kind {
        PushKind::Invalidate => cache.invalidate(link, &info.data),
        PushKind::Disconnection => cache.forget_link(link),
        _ => {}
    }
}

impl Users {
    /// Open the tracked connection (RESP3, tracking turned on at every
    /// connect) and an empty cache of at most `options.user_cache` users.
    /// On a cluster, links are made as masters are read from; `conn`
    /// (the store's) tells the masters and reads what cannot be tracked.
    pub(super) async fn open(options: &StoreOptions, conn: &Conn) -> Result<Users, StoreError> {
        let capacity = NonZeroUsize::new(options.user_cache.max(1)).unwrap_or(NonZeroUsize::MIN);
        // grown as users come, not made for the limit at once (the
        // default's table is 2 MiB)
        let mut users = lru::LruCache::unbounded();
        users.resize(capacity);
        let cache = Arc::new(Mutex::new(Cache { users, epoch: 0 }));
        let tracked = if options.cluster.is_empty() {
            let pushed = cache.clone();
            let on_push = move |info: PushInfo| {
                on_push(&pushed, 0, &info);
                Ok::<(), ()>(())
            };
            // OPTIN: only the reads behind CLIENT CACHING YES are tracked;
            // redis-rs' own cache is never asked to keep anything
            let tracking = CacheConfig::new().set_mode(CacheMode::OptIn);
            let client = super::conn::resp3_client(&options.url)?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(options.timeout))
                .set_connection_timeout(Some(options.timeout))
                .set_number_of_retries(2)
                .set_cache_config(tracking)
                .set_push_sender(on_push);
            Tracked::Single(ConnectionManager::new_with_config(client, config).await?)
        } else {
            let first = options.cluster.first().map_or("", String::as_str);
            let info = redis::IntoConnectionInfo::into_connection_info(first)
                .map_err(|e| StoreError::Internal(format!("bad Redis Cluster URL: {e}")))?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let links = Arc::new(Links {
                conn: conn.clone(),
                info: info.set_redis_settings(settings),
                timeout: options.timeout,
                cache: cache.clone(),
                state: Mutex::new(LinkState::default()),
                next_id: AtomicU64::new(1),
                refreshing: AtomicBool::new(false),
            });
            links.refresh().await?;
            Tracked::Cluster(links)
        };
        Ok(Users {
            conn: tracked,
            cache,
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A user from the cache, if it holds them.
    pub(super) fn cached(&self, user: Id) -> Option<Arc<Known>> {
        self.cache().users.get(&user).map(|e| e.known.clone())
    }

    /// Users from the cache (`None` where it does not hold them).
    pub(super) fn cached_many(&self, users: &[Id]) -> Vec<Option<Arc<Known>>> {
        let mut cache = self.cache();
        users
            .iter()
            .map(|u| cache.users.get(u).map(|e| e.known.clone()))
            .collect()
    }

    /// Forget a user (the daemon changed them).
    pub(super) fn forget(&self, user: Id) {
        let mut cache = self.cache();
        cache.users.pop(&user);
        cache.epoch += 1;
    }

    /// Users by id, from the cache or read (and tracked) in one round trip
    /// for those it does not hold; `None` for a user that does not exist.
    pub(super) async fn get(&self, ids: &[Id]) -> Result<Vec<Option<Arc<Known>>>, StoreError> {
        let mut found: Vec<Option<Arc<Known>>> = self.cached_many(ids);
        let mut missing: Vec<(usize, Id)> = Vec::new();
        let mut seen = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            if found[i].is_none() && seen.insert(*id, i).is_none() {
                missing.push((i, *id));
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let epoch = self.cache().epoch;
        let read = self.read(&missing).await?;
        {
            let mut cache = self.cache();
            let fresh = cache.epoch == epoch;
            for ((i, id), (user, link)) in missing.iter().zip(read) {
                if let (Some(user), Some(link), true) = (&user, link, fresh) {
                    let known = user.clone();
                    cache.users.put(*id, Entry { known, link });
                }
                found[*i] = user;
            }
        }
        // a user asked for twice, read once
        for (i, id) in ids.iter().enumerate() {
            if found[i].is_none() {
                if let Some(first) = seen.get(id) {
                    found[i] = found[*first].clone();
                }
            }
        }
        Ok(found)
    }

    /// Read users, each behind CLIENT CACHING YES so Redis tracks them;
    /// with each, the link that tracks it (`None`: not tracked, not to
    /// keep).
    async fn read(&self, missing: &[(usize, Id)]) -> Result<Vec<Read>, StoreError> {
        match &self.conn {
            Tracked::Single(conn) => {
                let mut pipe = redis::pipe();
                for (_, user) in missing {
                    tracked_read(&mut pipe, *user);
                }
                let values: Vec<Value> = pipe.query_async(&mut conn.clone()).await?;
                values
                    .into_iter()
                    .map(|value| Ok((known(value)?, Some(0))))
                    .collect()
            }
            Tracked::Cluster(links) => {
                // one pipeline per user, on the link to the master of the
                // user's slot
                let reads = missing.iter().map(|(_, user)| links.read(*user));
                futures_util::future::join_all(reads)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }
}

/// A user read, and the link that tracks them.
type Read = (Option<Arc<Known>>, Option<u64>);

/// CLIENT CACHING YES, then the user's HMGET (the reply kept).
fn tracked_read(pipe: &mut redis::Pipeline, user: Id) {
    pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
    pipe.cmd("HMGET")
        .arg(Keys::user(user))
        .arg("name")
        .arg("email");
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
struct Links {
    conn: Conn,
    /// The first node's settings (user, password), RESP3.
    info: ConnectionInfo,
    timeout: Duration,
    cache: Arc<Mutex<Cache>>,
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
        // its users are read again from the master that serves them
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
                tracing::debug!(error = %err, "the user cache cannot read the slot map");
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
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget_link(id);
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
            "cannot connect to Redis node {}:{} for the user cache: {why}; its users are read again once it answers",
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

    /// A tracking connection to `addr`: RESP3, its pushes to the cache as
    /// link `id`, tracking on (OPTIN).
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
        let cache = self.cache.clone();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(move |info: PushInfo| {
                on_push(&cache, id, &info);
                if info.kind == PushKind::Disconnection {
                    if let Some(links) = links.upgrade() {
                        links.lost(&lost_addr, id);
                    }
                }
                Ok::<(), ()>(())
            });
        let mut conn = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let _: Value = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("OPTIN")
            .query_async(&mut conn)
            .await?;
        Ok(conn)
    }

    /// One user, read on the link to their master and tracked there; read
    /// through the cluster client, and not tracked, when that master no
    /// longer serves their slot.
    async fn read(self: &Arc<Self>, user: Id) -> Result<Read, StoreError> {
        let key = Keys::user(user);
        let slot = slot_of(&key);
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
        let mut pipe = redis::pipe();
        tracked_read(&mut pipe, user);
        match pipe.query_async::<Vec<Value>>(&mut link.conn.clone()).await {
            Ok(mut values) => Ok((known(values.pop().unwrap_or(Value::Nil))?, Some(link.id))),
            Err(err) if err.redirect_node().is_some() => {
                // MOVED (the map is behind) or ASK (the slot is moving)
                self.refresh_soon();
                let value: Value = redis::cmd("HMGET")
                    .arg(&key)
                    .arg("name")
                    .arg("email")
                    .query_async(&mut self.conn.clone())
                    .await?;
                Ok((known(value)?, None))
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
}

/// A user from HMGET's `[name, email]`; `None` when they do not exist.
fn known(value: Value) -> Result<Option<Arc<Known>>, StoreError> {
    let mut fields = reply::array("HMGET", value)?.into_iter();
    match (fields.next(), fields.next()) {
        (Some(Value::Nil) | None, _) => Ok(None),
        (Some(name), Some(email)) => Ok(Some(Arc::new(Known {
            name: reply::text("HMGET", name)?,
            email: reply::text("HMGET", email)?,
        }))),
        (Some(_), None) => Err(StoreError::Internal("HMGET of a user: one field".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Cache {
        Cache {
            users: lru::LruCache::new(NonZeroUsize::MIN.saturating_add(9)),
            epoch: 0,
        }
    }

    fn put(cache: &mut Cache, user: Id, link: u64) {
        let known = Arc::new(Known {
            name: format!("u{user}"),
            email: format!("u{user}@example.com"),
        });
        cache.users.put(user, Entry { known, link });
    }

    #[test]
    fn a_lost_link_drops_its_users_only() {
        let mut cache = cache();
        put(&mut cache, 1, 1);
        put(&mut cache, 2, 2);
        put(&mut cache, 3, 1);
        cache.forget_link(1);
        let left: Vec<Id> = cache.users.iter().map(|(u, _)| *u).collect();
        assert_eq!(left, [2]);
        assert_eq!(cache.epoch, 1, "a read under way is not kept");
    }

    #[test]
    fn a_flush_drops_what_its_link_tracked() {
        let mut cache = cache();
        put(&mut cache, 1, 1);
        put(&mut cache, 2, 2);
        cache.invalidate(2, &[Value::Nil]);
        let left: Vec<Id> = cache.users.iter().map(|(u, _)| *u).collect();
        assert_eq!(left, [1]);
    }

    #[test]
    fn slots_follow_hash_tags() {
        // CLUSTER KEYSLOT's answers
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("a{}b"), slot_of("a{}b"));
    }
}
