//! Users as the daemon holds them: a cache that Redis keeps fresh.
//!
//! A user lives under a hash tag of their own, so the call of a JOIN (under
//! its meeting's tag) cannot read them: the daemon must know that the user
//! exists and pass their e-mail in. To make that one call and not two,
//! users (their name and e-mail) are cached, read on the tracked
//! connections (`tracking.rs`): when a user read so changes, by any path
//! (the daemon, redis-cli, a script), Redis tells the link that read them,
//! and the user is dropped; a lost link drops what it read.
//!
//! A read races an invalidation (or a lost link) that arrives while it is
//! on its way: its answer may then be the value from before. Every
//! invalidation and every lost link moves an epoch on; an answer is kept
//! only when the epoch did not move while it was read (it still serves its
//! own request, which was sent before the change was known).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use redis::Value;

use super::keys::Keys;
use super::tracking::{Sink, Tracking, cached};
use super::types::Id;
use super::{StoreError, reply};

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
    tracking: Arc<Tracking>,
    cache: Arc<UserCache>,
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

    /// What an invalidation message of `link` says: some keys changed
    /// (users among them), or (`None`) everything it tracked may have.
    fn invalidate(&mut self, link: u64, keys: Option<&[String]>) {
        match keys {
            Some(keys) => {
                let users: Vec<Id> = keys.iter().filter_map(|k| Keys::user_of(k)).collect();
                if users.is_empty() {
                    return;
                }
                self.epoch += 1;
                for user in users {
                    self.users.pop(&user);
                }
            }
            None => self.forget_link(link),
        }
    }
}

/// The users' cache, as the links tell it of changes.
pub(super) struct UserCache(Mutex<Cache>);

impl UserCache {
    /// An empty cache of at most `capacity` users.
    pub(super) fn new(capacity: usize) -> UserCache {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        // grown as users come, not made for the limit at once (the
        // default's table is 2 MiB)
        let mut users = lru::LruCache::unbounded();
        users.resize(capacity);
        UserCache(Mutex::new(Cache { users, epoch: 0 }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink for UserCache {
    fn invalidated(&self, link: u64, keys: Option<&[String]>) {
        self.lock().invalidate(link, keys);
    }

    fn lost(&self, link: u64) {
        self.lock().forget_link(link);
    }
}

impl Users {
    /// The users of `cache`, read on `tracking`.
    pub(super) fn new(cache: Arc<UserCache>, tracking: Arc<Tracking>) -> Users {
        Users { tracking, cache }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock()
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
    /// keep): on one Redis in one pipeline, on a cluster one per user, on
    /// the link to the master of the user's slot.
    async fn read(&self, missing: &[(usize, Id)]) -> Result<Vec<Read>, StoreError> {
        if let Tracking::Single(_) = &*self.tracking {
            let mut pipe = redis::pipe();
            for (_, user) in missing {
                cached(&mut pipe, user_read(*user));
            }
            let (values, link) = self.tracking.query("", &pipe, &pipe).await?;
            return values
                .into_iter()
                .map(|value| Ok((known(value)?, link)))
                .collect();
        }
        let reads = missing.iter().map(|(_, user)| async move {
            let mut pipe = redis::pipe();
            cached(&mut pipe, user_read(*user));
            let mut untracked = redis::pipe();
            untracked.add_command(user_read(*user));
            let (mut values, link) = self
                .tracking
                .query(&Keys::user(*user), &pipe, &untracked)
                .await?;
            Ok((known(values.pop().unwrap_or(Value::Nil))?, link))
        });
        futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect()
    }
}

/// A user read, and the link that tracks them.
type Read = (Option<Arc<Known>>, Option<u64>);

/// The user's HMGET (name, e-mail).
fn user_read(user: Id) -> redis::Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(Keys::user(user)).arg("name").arg("email");
    cmd
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
        cache.invalidate(2, None);
        let left: Vec<Id> = cache.users.iter().map(|(u, _)| *u).collect();
        assert_eq!(left, [1]);
    }

    #[test]
    fn other_keys_change_no_user() {
        let mut cache = cache();
        put(&mut cache, 1, 1);
        cache.invalidate(1, Some(&["meetingd:{p1}:active".to_string()]));
        assert_eq!(cache.users.len(), 1);
        assert_eq!(cache.epoch, 0, "a read of users under way is kept");
        cache.invalidate(1, Some(&[Keys::user(1)]));
        assert_eq!(cache.users.len(), 0);
    }
}
