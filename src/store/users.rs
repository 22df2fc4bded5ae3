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
//! user; a lost connection (whose tracking is lost with it) or a flush
//! drops everybody.
//!
//! A read races an invalidation that arrives while it is on its way: its
//! answer may then be the value from before. Every invalidation moves an
//! epoch on; an answer is kept only when the epoch did not move while it
//! was read (it still serves its own request, which was sent before the
//! change was known).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::ConnectionManager;
use redis::caching::{CacheConfig, CacheMode};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{PushInfo, PushKind, Value};

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

/// The cache and the connection that fills it.
pub(super) struct Users {
    conn: Tracked,
    cache: Arc<Mutex<Cache>>,
}

enum Tracked {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

struct Cache {
    users: lru::LruCache<Id, Arc<Known>>,
    /// Moves on at every invalidation and disconnection.
    epoch: u64,
}

impl Cache {
    fn forget_all(&mut self) {
        self.users.clear();
        self.epoch += 1;
    }

    /// What an invalidation message says: some users' keys changed, or
    /// (nil) everything may have.
    fn invalidate(&mut self, data: &[Value]) {
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
            _ => self.users.clear(),
        }
    }
}

impl Users {
    /// Open the tracked connection (RESP3, tracking turned on at every
    /// connect) and an empty cache of at most `options.user_cache` users.
    pub(super) async fn open(options: &StoreOptions) -> Result<Users, StoreError> {
        let capacity = NonZeroUsize::new(options.user_cache.max(1)).unwrap_or(NonZeroUsize::MIN);
        let cache = Arc::new(Mutex::new(Cache {
            users: lru::LruCache::new(capacity),
            epoch: 0,
        }));
        let pushed = cache.clone();
        let on_push = move |info: PushInfo| {
            let mut cache = pushed.lock().unwrap_or_else(PoisonError::into_inner);
            match info.kind {
                PushKind::Invalidate => cache.invalidate(&info.data),
                PushKind::Disconnection => cache.forget_all(),
                _ => {}
            }
            Ok::<(), ()>(())
        };
        // OPTIN: only the reads behind CLIENT CACHING YES are tracked;
        // redis-rs' own cache is never asked to keep anything
        let tracking = CacheConfig::new().set_mode(CacheMode::OptIn);
        let conn = if options.cluster.is_empty() {
            let client = super::conn::resp3_client(&options.url)?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(options.timeout))
                .set_connection_timeout(Some(options.timeout))
                .set_number_of_retries(2)
                .set_cache_config(tracking)
                .set_push_sender(on_push);
            Tracked::Single(ConnectionManager::new_with_config(client, config).await?)
        } else {
            let client = redis::cluster::ClusterClientBuilder::new(options.cluster.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .connection_timeout(options.timeout)
                .response_timeout(options.timeout)
                .cache_config(tracking)
                .push_sender(on_push)
                .build()?;
            Tracked::Cluster(client.get_async_connection().await?)
        };
        Ok(Users { conn, cache })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A user from the cache, if it holds them.
    pub(super) fn cached(&self, user: Id) -> Option<Arc<Known>> {
        self.cache().users.get(&user).cloned()
    }

    /// Users from the cache (`None` where it does not hold them).
    pub(super) fn cached_many(&self, users: &[Id]) -> Vec<Option<Arc<Known>>> {
        let mut cache = self.cache();
        users.iter().map(|u| cache.users.get(u).cloned()).collect()
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
        let mut found: Vec<Option<Arc<Known>>> = {
            let mut cache = self.cache();
            ids.iter().map(|id| cache.users.get(id).cloned()).collect()
        };
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
            for ((i, id), user) in missing.iter().zip(read) {
                if let Some(user) = &user {
                    if fresh {
                        cache.users.put(*id, user.clone());
                    }
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

    /// Read users, each behind CLIENT CACHING YES so Redis tracks them.
    async fn read(&self, missing: &[(usize, Id)]) -> Result<Vec<Option<Arc<Known>>>, StoreError> {
        let read_one = |pipe: &mut redis::Pipeline, user: Id| {
            pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
            pipe.cmd("HMGET")
                .arg(Keys::user(user))
                .arg("name")
                .arg("email");
        };
        let values: Vec<Value> = match &self.conn {
            Tracked::Single(conn) => {
                let mut pipe = redis::pipe();
                for (_, user) in missing {
                    read_one(&mut pipe, *user);
                }
                pipe.query_async(&mut conn.clone()).await?
            }
            Tracked::Cluster(conn) => {
                // one pipeline per user, to the node of the user's slot
                let reads = missing.iter().map(|(_, user)| {
                    let mut pipe = redis::pipe();
                    read_one(&mut pipe, *user);
                    let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                        Keys::user(*user),
                        SlotAddr::Master,
                    ));
                    let mut conn = conn.clone();
                    async move { conn.route_pipeline(pipe, 0, 2, route).await }
                });
                let mut values = Vec::with_capacity(missing.len());
                for result in futures_util::future::join_all(reads).await {
                    let mut replies = result?;
                    values.push(replies.pop().unwrap_or(Value::Nil));
                }
                values
            }
        };
        values.into_iter().map(known).collect()
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
