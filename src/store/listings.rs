//! The listings, MEETINGS and USERS, and the indexes they page through.
//!
//! Every partition has two sorted sets, each member an id scored by
//! itself: `meetingd:{p<P>}:meetings`, the meetings of partition P (M mod
//! the partition count = P), kept by `meet_meeting_set` in the same call
//! as the meeting; and `meetingd:{p<P>}:users`, the users U with U mod the
//! partition count = P. A user's hash is under the user's own tag, so the user
//! index cannot be written in the call that writes the user: USER SET
//! first enters the user in the index (`meet_user_index`, which also queues
//! the user's values for the archive in the partition's outbox), then
//! writes the hash. A failure in between leaves an index entry without a user, which
//! the listing skips and the next USER SET of the user completes; the
//! other order could leave a user no listing shows.
//!
//! A page (`after`, `limit` n) costs the same whatever is stored: every
//! partition is asked for its first n ids after `after` (`meet_ids`, one
//! pipeline), the ids are merged and the first n kept, then the details of
//! those n only are read (pipelined: `meet_meetings` once per partition
//! involved, `meet_user_get` once per user). No SCAN on this path.
//!
//! Data written before the indexes existed (meetingd 0.2) is indexed once,
//! by the first daemon that starts on it ([`Store::build_indexes`]: SCAN in
//! small steps while the daemon serves); `meetingd:{layout}:indexed` says
//! it is done, and from then on the listings are complete. Several daemons
//! may build at once: entering an id twice changes nothing. `meetingd
//! repartition` rebuilds the indexes for the new count
//! ([`Store::rebuild_indexes`]) and `meetingd check` verifies them
//! ([`Store::check_indexes`]).

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;
use redis::aio::ConnectionLike;

use super::reply::{self, Fields};
use super::types::{Id, User};
use super::{Call, Keys, PAGE, Store, StoreError};
use crate::error::Code;

/// A meeting as MEETINGS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingRow {
    /// The meeting's id.
    pub id: Id,
    /// Title.
    pub title: String,
    /// Public or private.
    pub public: bool,
    /// How many instances it has.
    pub instances: u64,
    /// The order of its running instance, if one runs.
    pub running: Option<Id>,
}

/// A page of a listing, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// The rows.
    pub items: Vec<T>,
    /// The id to pass as `after` for the next page; `None` at the end.
    pub next: Option<Id>,
}

/// What the start-up backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Indexed {
    /// Meetings entered in the meeting indexes.
    pub meetings: u64,
    /// Users entered in the user indexes.
    pub users: u64,
}

/// Keys per SCAN step, and members per ZADD, of the backfill and rebuild.
const STEP: usize = 500;

/// The meeting a meeting hash's key names (`meetingd:{p<P>}:meeting:<M>`).
fn meeting_of(key: &str) -> Option<Id> {
    let rest = key.strip_prefix("meetingd:{p")?;
    let (_, id) = rest.split_once("}:meeting:")?;
    id.parse().ok()
}

impl Store {
    /// The call that enters a user in its partition's user index and, in
    /// the same call, queues its values for the archive (USER SET sends it
    /// before `meet_user_set`, with the same values).
    pub(super) fn user_index_call(&self, user: &User) -> Call<()> {
        Call::new(
            "meet_user_index",
            &self.keys.user_index(user.id),
            &[
                &user.id.to_string(),
                &user.name,
                &user.age.to_string(),
                &user.gender,
                &user.email,
            ],
            true,
            |_| Ok(()),
        )
    }

    /// Calls sent together: in one pipeline on one Redis; on a cluster, at
    /// once (their keys are on several nodes).
    pub(super) async fn run_many<T: Send + 'static>(
        &self,
        calls: Vec<Call<T>>,
    ) -> Vec<Result<T, StoreError>> {
        if self.conn.is_cluster() {
            futures_util::future::join_all(calls.into_iter().map(|call| self.run(call))).await
        } else {
            self.run_all(calls).await
        }
    }

    /// The first `limit` ids after `after` over every partition's index
    /// (`meetings` or `users`), in order, and whether there are more.
    async fn merged_ids(
        &self,
        index: fn(u64) -> String,
        after: Option<Id>,
        limit: usize,
    ) -> Result<(Vec<Id>, bool), StoreError> {
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let limit_arg = limit.to_string();
        let calls = (0..self.keys.partitions())
            .map(|p| {
                Call::new(
                    "meet_ids",
                    &index(p),
                    &[&after, &limit_arg],
                    false,
                    |value| {
                        let mut f = Fields::new("meet_ids", value)?;
                        let ids = f
                            .array("ids")?
                            .into_iter()
                            .map(|id| reply::id("meet_ids", id))
                            .collect::<Result<Vec<Id>, _>>()?;
                        Ok((ids, f.optional("next")?.is_some()))
                    },
                )
            })
            .collect();
        let mut ids = Vec::new();
        let mut more = false;
        for reply in self.run_many(calls).await {
            let (page, partial) = reply?;
            ids.extend(page);
            more |= partial;
        }
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > limit {
            ids.truncate(limit);
            more = true;
        }
        Ok((ids, more))
    }

    /// A page of the meetings, by id: at most `limit` (1..1000) after
    /// `after`.
    pub async fn meetings_page(
        &self,
        after: Option<Id>,
        limit: usize,
    ) -> Result<Listing<MeetingRow>, StoreError> {
        const F: &str = "meet_meetings";
        let limit = limit.clamp(1, PAGE);
        let (ids, more) = self.merged_ids(Keys::meetings, after, limit).await?;
        let mut by_partition: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for id in &ids {
            by_partition
                .entry(self.keys.partition(*id))
                .or_default()
                .push(id.to_string());
        }
        let calls = by_partition
            .iter()
            .map(|(p, members)| {
                let args: Vec<&str> = members.iter().map(String::as_str).collect();
                Call::new(F, &Keys::meetings(*p), &args, false, |value| {
                    Fields::new(F, value)?
                        .array("rows")?
                        .into_iter()
                        .map(meeting_row)
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut items = Vec::with_capacity(ids.len());
        for rows in self.run_many(calls).await {
            items.extend(rows?);
        }
        items.sort_unstable_by_key(|row| row.id);
        Ok(Listing {
            items,
            next: more.then(|| ids.last().copied()).flatten(),
        })
    }

    /// A page of the users, by id: at most `limit` (1..1000) after
    /// `after`. Index entries without a user (a USER SET that failed
    /// half-way) are skipped.
    pub async fn users_page(
        &self,
        after: Option<Id>,
        limit: usize,
    ) -> Result<Listing<User>, StoreError> {
        let limit = limit.clamp(1, PAGE);
        let (ids, more) = self.merged_ids(Keys::users, after, limit).await?;
        let items = self.users_get(&ids).await?;
        Ok(Listing {
            items,
            next: more.then(|| ids.last().copied()).flatten(),
        })
    }

    /// The users of `ids` that exist, in their order, read at once (one
    /// pipeline; on a cluster, concurrently).
    pub async fn users_get(&self, ids: &[Id]) -> Result<Vec<User>, StoreError> {
        let calls = ids
            .iter()
            .map(|id| {
                Call::new("meet_user_get", &Keys::user(*id), &[], false, |value| {
                    super::admin::decode_user(Fields::new("meet_user_get", value)?)
                })
            })
            .collect();
        let mut items = Vec::with_capacity(ids.len());
        for user in self.run_many(calls).await {
            match user {
                Ok(user) => items.push(user),
                Err(StoreError::Rule {
                    code: Code::NotFound,
                    ..
                }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(items)
    }

    /// Whether the listings' indexes hold everything stored (the flag
    /// `meetingd:{layout}:indexed`).
    pub async fn indexes_built(&self) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let flag: Value = redis::cmd("EXISTS")
            .arg(Keys::indexed())
            .query_async(&mut conn)
            .await?;
        Ok(reply::int("EXISTS", flag)? == 1)
    }

    /// Index what was stored before the listings' indexes existed, once:
    /// unless the flag says it was done, SCAN every key (500 a step, every
    /// master of a cluster), enter each meeting and user in its partition's
    /// index, then set the flag. `None` when it was done already. Run while
    /// the daemon serves: what is written meanwhile indexes itself, and an
    /// id entered twice changes nothing, so daemons may run it together.
    pub async fn build_indexes(&self) -> Result<Option<Indexed>, StoreError> {
        if self.indexes_built().await? {
            return Ok(None);
        }
        tracing::info!(
            "indexing the meetings and users stored before the listings' indexes (once, \
             while serving)"
        );
        let mut done = Indexed::default();
        if self.conn.is_cluster() {
            for mut conn in self.conn.live_masters("indexed").await? {
                self.index_keys_of(&mut conn, &mut done).await?;
            }
        } else {
            let mut conn = self.conn.clone();
            self.index_keys_of(&mut conn, &mut done).await?;
        }
        self.raw_command(redis::cmd("SET").arg(Keys::indexed()).arg("1"))
            .await?;
        Ok(Some(done))
    }

    /// One node's keys, a SCAN step at a time, into the indexes.
    async fn index_keys_of(
        &self,
        node: &mut impl ConnectionLike,
        done: &mut Indexed,
    ) -> Result<(), StoreError> {
        let mut cursor = "0".to_string();
        loop {
            let value: Value = redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg("meetingd:*")
                .arg("COUNT")
                .arg(STEP)
                .query_async(node)
                .await?;
            let mut parts = reply::array("SCAN", value)?.into_iter();
            cursor = reply::text("SCAN", parts.next().unwrap_or_default())?;
            let mut meetings = Vec::new();
            let mut users = Vec::new();
            for key in reply::array("SCAN", parts.next().unwrap_or_default())? {
                let key = reply::text("SCAN", key)?;
                if let Some(m) = meeting_of(&key) {
                    meetings.push(m);
                } else if let Some(u) = Keys::user_of(&key) {
                    users.push(u);
                }
            }
            done.meetings += meetings.len() as u64;
            done.users += users.len() as u64;
            self.enter(Keys::meetings, &meetings).await?;
            self.enter(Keys::users, &users).await?;
            if cursor == "0" {
                return Ok(());
            }
        }
    }

    /// ZADD `ids` (each scored by itself) to their partitions' `index`,
    /// at most 500 a command: in one pipeline on one Redis, at once on a
    /// cluster (the partitions' keys are on several nodes).
    async fn enter(&self, index: fn(u64) -> String, ids: &[Id]) -> Result<(), StoreError> {
        let mut by_partition: BTreeMap<u64, Vec<Id>> = BTreeMap::new();
        for id in ids {
            by_partition
                .entry(self.keys.partition(*id))
                .or_default()
                .push(*id);
        }
        let mut cmds = Vec::new();
        for (p, ids) in by_partition {
            for chunk in ids.chunks(STEP) {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(index(p));
                for id in chunk {
                    cmd.arg(*id).arg(*id);
                }
                cmds.push(cmd);
            }
        }
        if self.conn.is_cluster() {
            let sent = futures_util::future::join_all(cmds.iter().map(|c| self.raw_command(c)));
            for result in sent.await {
                result?;
            }
        } else if !cmds.is_empty() {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd).ignore();
            }
            let mut conn = self.conn.clone();
            let () = pipe.query_async(&mut conn).await?;
        }
        Ok(())
    }

    async fn raw_command(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// `meetingd repartition`, at its end: the indexes of every partition
    /// of the old count (`from`) and the new (`to`) dropped, then built
    /// again for `to` from the keys stored (`all`, scanned), and the flag
    /// set. Run with no daemon serving; run again, it does the same.
    pub(super) async fn rebuild_indexes(
        &self,
        all: &BTreeSet<String>,
        from: u64,
        to: u64,
    ) -> Result<(), StoreError> {
        for p in 0..from.max(to) {
            let mut cmd = redis::cmd("UNLINK");
            cmd.arg(Keys::meetings(p)).arg(Keys::users(p));
            self.raw_command(&cmd).await?;
        }
        let meetings: BTreeSet<Id> = all.iter().filter_map(|k| meeting_of(k)).collect();
        let users: BTreeSet<Id> = all.iter().filter_map(|k| Keys::user_of(k)).collect();
        let at_to = Store {
            keys: Keys::new(to),
            ..self.clone()
        };
        at_to
            .enter(Keys::meetings, &meetings.into_iter().collect::<Vec<_>>())
            .await?;
        at_to
            .enter(Keys::users, &users.into_iter().collect::<Vec<_>>())
            .await?;
        self.raw_command(redis::cmd("SET").arg(Keys::indexed()).arg("1"))
            .await?;
        Ok(())
    }

    /// An index's members, 1000 at a time by score.
    async fn index_members(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        let mut min = "-inf".to_string();
        loop {
            let value = self
                .raw_command(
                    redis::cmd("ZRANGE")
                        .arg(key)
                        .arg(&min)
                        .arg("+inf")
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(1000)
                        .arg("WITHSCORES"),
                )
                .await?;
            // RESP3 gives [member, score] pairs, RESP2 a flat list
            let flat: Vec<Value> = reply::array("ZRANGE", value)?
                .into_iter()
                .flat_map(|item| match item {
                    Value::Array(pair) => pair,
                    other => vec![other],
                })
                .collect();
            let n = flat.len() / 2;
            let mut items = flat.into_iter();
            while let (Some(member), Some(score)) = (items.next(), items.next()) {
                let score = match score {
                    Value::Double(d) => format!("{d:.0}"),
                    other => reply::text("ZRANGE", other)?,
                };
                min = format!("({score}");
                out.push((reply::text("ZRANGE", member)?, score));
            }
            if n < 1000 {
                return Ok(out);
            }
        }
    }

    /// `meetingd check` on the listings' indexes: each member an id of its
    /// partition scored by itself, naming a meeting (a user) that exists;
    /// every meeting and user in its index (before the backfill is done,
    /// one line says how many are not yet).
    pub(super) async fn check_indexes(
        &self,
        meetings: &BTreeSet<Id>,
        users: &BTreeSet<Id>,
    ) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let built = self.indexes_built().await?;
        let mut unindexed = [0u64; 2];
        for (index, what, stored) in [
            (Keys::meetings as fn(u64) -> String, "meeting", meetings),
            (Keys::users, "user", users),
        ] {
            let mut listed = BTreeSet::new();
            for p in 0..self.keys.partitions() {
                let key = index(p);
                for (member, score) in self.index_members(&key).await? {
                    let id = member
                        .parse::<Id>()
                        .ok()
                        .filter(|id| self.keys.partition(*id) == p && score == member);
                    let Some(id) = id else {
                        problems.push(format!(
                            "{key}: a member {member:?} (score {score}) that is no {what} id of \
                             partition {p} scored by itself"
                        ));
                        continue;
                    };
                    listed.insert(id);
                    if !stored.contains(&id) {
                        let why = if what == "user" {
                            " (a USER SET that failed after entering it: listings skip it, a \
                             USER SET of the user completes it)"
                        } else {
                            ""
                        };
                        problems.push(format!(
                            "{key}: {what} {id} is listed but does not exist{why}"
                        ));
                    }
                }
            }
            for id in stored.difference(&listed) {
                if built {
                    problems.push(format!(
                        "{what} {id}: missing from {} (MEETINGS and USERS do not show it; a \
                         {} SET of it enters it)",
                        index(self.keys.partition(*id)),
                        what.to_uppercase()
                    ));
                } else {
                    unindexed[usize::from(what == "user")] += 1;
                }
            }
        }
        // before the backfill: what older versions stored is not indexed
        // yet, which is no damage; said once
        if unindexed != [0, 0] {
            problems.push(format!(
                "{} meetings and {} users are not in the listings' indexes yet ({} is not set): \
                 a daemon indexes them when it starts; MEETINGS and USERS miss them until then",
                unindexed[0],
                unindexed[1],
                Keys::indexed()
            ));
        }
        Ok(problems)
    }
}

/// A row of meet_meetings: `{id, title, public, instances, running}`.
fn meeting_row(row: Value) -> Result<MeetingRow, StoreError> {
    const F: &str = "meet_meetings";
    let mut row = reply::array(F, row)?.into_iter();
    let mut next = || row.next().unwrap_or_default();
    let id = reply::id(F, next())?;
    let title = reply::text(F, next())?;
    let public = reply::text(F, next())? == "true";
    let instances = u64::try_from(reply::int(F, next())?).unwrap_or(0);
    let running = match next() {
        Value::Nil | Value::Boolean(false) => None,
        order => Some(reply::id(F, order)?),
    };
    Ok(MeetingRow {
        id,
        title,
        public,
        instances,
        running,
    })
}
