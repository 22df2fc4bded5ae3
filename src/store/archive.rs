//! The archiver's side of Redis: each partition's outbox (a stream the
//! library appends to, in the same call, whatever the archive is to copy),
//! read through one consumer group shared by every daemon on the store, and
//! what else the archiver reads beside the event logs and chats: the POST
//! keys of an instance, a page at a time.
//!
//! An entry is delivered to one consumer; it stays pending until
//! [`Store::archived`] acknowledges it (after the database committed), and
//! an entry pending too long with a consumer that went away is taken over
//! with XAUTOCLAIM. Every call here is bounded by its count.

use std::time::Duration;

use redis::Value;

use super::reply;
use super::types::{Event, Id, InstanceId, Message, Millis, User};
use super::{Call, Keys, OUTBOX_GROUP, Store, StoreError};

/// One outbox entry: its partition, its stream id and its fields (`k` says
/// which kind: `end`, `meeting`, `audience`, `instance`). An entry whose
/// data was deleted while it was pending has no fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The partition whose outbox holds it.
    pub partition: u64,
    /// Its stream id, `<ms>-<seq>`.
    pub id: String,
    /// Its fields, in order.
    pub fields: Vec<(String, String)>,
}

impl OutboxEntry {
    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A partition's outbox as it stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Entries not yet archived (delivered or not).
    pub waiting: u64,
    /// When the oldest of them was written (ms), if any.
    pub oldest: Option<Millis>,
}

impl Store {
    /// The sharded channel that announces `partition`'s new outbox entries
    /// (their ids): named as the outbox stream is (a channel is not a key).
    pub fn outbox_channel(partition: u64) -> String {
        Keys::outbox(partition)
    }

    /// The partition whose outbox a channel of [`Store::outbox_channel`]
    /// announces.
    pub fn outbox_channel_partition(channel: &[u8]) -> Option<u64> {
        let channel = std::str::from_utf8(channel).ok()?;
        let digits = channel
            .strip_prefix("meetingd:{p")?
            .strip_suffix("}:outbox")?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return None;
        }
        digits.parse().ok()
    }

    /// Turn archiving on: every partition's outbox and its consumer group
    /// are created if missing (from then on the library writes to them).
    pub async fn outbox_enable(&self) -> Result<(), StoreError> {
        for partition in 0..self.keys.partitions() {
            let mut conn = self.conn.clone();
            let created: Result<Value, redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(Keys::outbox(partition))
                .arg(OUTBOX_GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(_) => {}
                Err(err) if err.code() == Some("BUSYGROUP") => {
                    self.outbox_forget_consumers(partition).await?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Forget the consumers of `partition`'s outbox group that hold
    /// nothing and have not read for a day: every daemon run reads under a
    /// name of its own, and the group would keep them all.
    async fn outbox_forget_consumers(&self, partition: u64) -> Result<(), StoreError> {
        const F: &str = "XINFO";
        const DAY_MS: i64 = 86_400_000;
        let key = Keys::outbox(partition);
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd(F)
            .arg("CONSUMERS")
            .arg(&key)
            .arg(OUTBOX_GROUP)
            .query_async(&mut conn)
            .await?;
        for consumer in reply::array(F, value)? {
            let items = match consumer {
                Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                other => reply::array(F, other)?,
            };
            let (mut name, mut pending, mut idle) = (None, None, None);
            let mut items = items.into_iter();
            while let (Some(field), Some(value)) = (items.next(), items.next()) {
                match reply::text(F, field)?.as_str() {
                    "name" => name = Some(reply::text(F, value)?),
                    "pending" => pending = Some(reply::int(F, value)?),
                    "idle" => idle = Some(reply::int(F, value)?),
                    _ => {}
                }
            }
            if let (Some(name), Some(0), Some(idle)) = (name, pending, idle)
                && idle > DAY_MS
            {
                let _: Value = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&key)
                    .arg(OUTBOX_GROUP)
                    .arg(name)
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Up to `count` entries of `partition`'s outbox for `consumer`: with
    /// `pending`, those already delivered to it and not acknowledged (a
    /// batch it failed to archive); else new ones.
    pub async fn outbox_read(
        &self,
        partition: u64,
        consumer: &str,
        pending: bool,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        const F: &str = "XREADGROUP";
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd(F)
            .arg("GROUP")
            .arg(OUTBOX_GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(Keys::outbox(partition))
            .arg(if pending { "0" } else { ">" })
            .query_async(&mut conn)
            .await?;
        // nil, or [[key, entries]] (a map in RESP3)
        let entries = match value {
            Value::Nil => return Ok(Vec::new()),
            Value::Map(pairs) => pairs.into_iter().next().map(|(_, entries)| entries),
            other => match reply::array(F, other)?.into_iter().next() {
                Some(stream) => reply::array(F, stream)?.into_iter().nth(1),
                None => None,
            },
        };
        match entries {
            Some(entries) => entries_of(F, partition, entries),
            None => Ok(Vec::new()),
        }
    }

    /// Take over up to `count` entries of `partition`'s outbox that another
    /// consumer has held for `idle` without acknowledging (a daemon that
    /// died or lost its database mid-batch).
    pub async fn outbox_claim(
        &self,
        partition: u64,
        consumer: &str,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        const F: &str = "XAUTOCLAIM";
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd(F)
            .arg(Keys::outbox(partition))
            .arg(OUTBOX_GROUP)
            .arg(consumer)
            .arg(idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await?;
        // [next cursor, entries, deleted ids]
        match reply::array(F, value)?.into_iter().nth(1) {
            Some(entries) => entries_of(F, partition, entries),
            None => Ok(Vec::new()),
        }
    }

    /// Keep holding entry `id` of `partition`'s outbox while archiving it
    /// takes long (a large instance): its idle time starts again, so no
    /// other daemon takes it over meanwhile.
    pub async fn outbox_keep(
        &self,
        partition: u64,
        consumer: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("XCLAIM")
            .arg(Keys::outbox(partition))
            .arg(OUTBOX_GROUP)
            .arg(consumer)
            .arg(0)
            .arg(id)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// How many entries wait in `partition`'s outbox, and since when. An
    /// outbox that is gone (deleted, Redis flushed) fails with `NOGROUP`,
    /// as reading it would.
    pub async fn outbox_backlog(&self, partition: u64) -> Result<Backlog, StoreError> {
        let key = Keys::outbox(partition);
        let mut conn = self.conn.clone();
        let (waiting, exists): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&key)
            .cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        if exists == 0 {
            return Err(StoreError::Internal(format!(
                "NOGROUP the outbox {key} is gone"
            )));
        }
        if waiting == 0 {
            return Ok(Backlog::default());
        }
        let first: Value = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let oldest = match reply::array("XRANGE", first)?.into_iter().next() {
            Some(entry) => {
                let id = reply::text("XRANGE", reply::array("XRANGE", entry)?.remove(0))?;
                Some(reply::id_ms("XRANGE", &id)?)
            }
            None => None,
        };
        Ok(Backlog { waiting, oldest })
    }

    /// The archive committed what `partition`'s outbox entry `id` asked
    /// for: acknowledge and delete it (`id` None: not yet), after giving
    /// `instance`'s history, if any, the expiry it was kept from (the
    /// message indexes of `posters` too). Safe to repeat.
    pub async fn archived(
        &self,
        partition: u64,
        id: Option<&str>,
        retention: Duration,
        instance: Option<InstanceId>,
        posters: &[Id],
    ) -> Result<(), StoreError> {
        let mut args = vec![
            id.unwrap_or_default().to_string(),
            retention.as_millis().to_string(),
        ];
        if let Some(instance) = instance {
            args.push(instance.meeting.to_string());
            args.push(instance.order.to_string());
            args.extend(posters.iter().map(ToString::to_string));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let call = Call::new(
            "meet_archived",
            &Keys::outbox(partition),
            &args,
            true,
            |value| reply::int("meet_archived", value),
        );
        self.run(call).await?;
        Ok(())
    }

    /// Queue `instance` for the archiver as if it had just ended (a
    /// backfill): whether it was (an instance not ended, still draining,
    /// or in a partition that does not archive is not).
    pub async fn archive_enqueue(&self, instance: InstanceId) -> Result<bool, StoreError> {
        let call = Call::new(
            "meet_archive_enqueue",
            &self.keys.meeting(instance.meeting),
            &[&instance.order.to_string()],
            true,
            |value| reply::int("meet_archive_enqueue", value),
        );
        Ok(self.run(call).await? == 1)
    }

    /// A page of an ended instance's event log, read straight from its
    /// stream (one XRANGE, no library call: the archiver's bulk read,
    /// which needs no rule of the library), after the id `after`, at most
    /// `count` events; and whether more may follow. A stream that is gone
    /// (deleted, expired) reads as empty.
    pub async fn archive_events(
        &self,
        instance: InstanceId,
        after: Option<&str>,
        count: usize,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let key = self.keys.events(instance);
        let entries = self.stream_range(&key, after, count).await?;
        let more = entries.len() >= count.max(1);
        let events = entries
            .into_iter()
            .map(|entry| {
                let (id, fields) = reply::entry("XRANGE", entry)?;
                reply::event(id, fields)
            })
            .collect::<Result<_, _>>()?;
        Ok((events, more))
    }

    /// A page of an ended instance's chat, as [`Store::archive_events`]
    /// reads its events.
    pub async fn archive_messages(
        &self,
        instance: InstanceId,
        after: Option<&str>,
        count: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let key = self.keys.chat(instance);
        let entries = self.stream_range(&key, after, count).await?;
        let more = entries.len() >= count.max(1);
        let messages = entries
            .into_iter()
            .map(|entry| {
                let (id, fields) = reply::entry("XRANGE", entry)?;
                reply::message(id, fields)
            })
            .collect::<Result<_, _>>()?;
        Ok((messages, more))
    }

    /// At most `count` entries of the stream `key` after `after` (from
    /// the start without it), each as Redis gave it.
    async fn stream_range(
        &self,
        key: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let from = match after {
            Some(id) => {
                if id.parse::<super::StreamId>().is_err() {
                    return Err(StoreError::Internal(format!("not a stream id: {id:?}")));
                }
                format!("({id}")
            }
            None => "-".to_string(),
        };
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(from)
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await?;
        reply::array("XRANGE", value)
    }

    /// The users among `ids` that exist, as their hashes hold them: one
    /// HMGET each, in one pipeline on one Redis (concurrent calls on a
    /// cluster, where each user has a slot of their own); those that do
    /// not exist are left out.
    pub async fn archive_users(&self, ids: &[Id]) -> Result<Vec<User>, StoreError> {
        const F: &str = "HMGET";
        let calls: Vec<Call<Option<User>>> = ids
            .iter()
            .map(|&id| {
                let mut cmd = redis::cmd(F);
                cmd.arg(Keys::user(id))
                    .arg(&["name", "age", "gender", "email"]);
                Call::command(cmd, false, move |value| {
                    let mut values = reply::array(F, value)?.into_iter();
                    let mut next = || values.next().unwrap_or(Value::Nil);
                    let name = match next() {
                        Value::Nil => return Ok(None),
                        name => reply::text(F, name)?,
                    };
                    let age = match next() {
                        Value::Nil => 0,
                        age => {
                            let age = reply::int(F, age)?;
                            u8::try_from(age).map_err(|_| {
                                StoreError::Internal(format!("user {id}: age {age}"))
                            })?
                        }
                    };
                    let text = |v: Value| -> Result<String, StoreError> {
                        match v {
                            Value::Nil => Ok(String::new()),
                            v => reply::text(F, v),
                        }
                    };
                    Ok(Some(User {
                        id,
                        name,
                        age,
                        gender: text(next())?,
                        email: text(next())?,
                    }))
                })
            })
            .collect();
        let mut users = Vec::with_capacity(ids.len());
        for user in self.run_many(calls).await {
            if let Some(user) = user? {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// Every ended instance the store holds, from the meetings' schedules
    /// (found by SCAN: for `meetingd archive --backfill`, never a request).
    pub async fn ended_instances(&self) -> Result<Vec<InstanceId>, StoreError> {
        let mut ended = Vec::new();
        for key in self.all_keys().await? {
            let Some(meeting) = key
                .split_once("}:schedule:")
                .filter(|(tag, _)| tag.starts_with("meetingd:{p"))
                .and_then(|(_, m)| m.parse::<Id>().ok())
            else {
                continue;
            };
            for (field, value) in self.hash(&key).await? {
                if let (Ok(order), true) = (field.parse::<Id>(), value.ends_with("|ended")) {
                    ended.push(InstanceId::new(meeting, order));
                }
            }
        }
        Ok(ended)
    }

    /// A page of an instance's POST keys (HSCAN of its `posted` hash, at
    /// most about `count` fields): the next cursor (0 at the end) and
    /// (user, key, message id) triples.
    pub async fn posted_page(
        &self,
        instance: InstanceId,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(Id, String, String)>), StoreError> {
        const F: &str = "HSCAN";
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd(F)
            .arg(self.keys.posted(instance))
            .arg(cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await?;
        let mut parts = reply::array(F, value)?.into_iter();
        let next: u64 = match parts.next() {
            Some(next) => reply::text(F, next)?
                .parse()
                .map_err(|_| StoreError::Internal("HSCAN: a cursor that is no number".into()))?,
            None => 0,
        };
        let mut found = Vec::new();
        let items = match parts.next() {
            Some(Value::Map(pairs)) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            Some(items) => reply::array(F, items)?,
            None => Vec::new(),
        };
        let mut items = items.into_iter();
        while let (Some(field), Some(id)) = (items.next(), items.next()) {
            let field = reply::text(F, field)?;
            let id = reply::text(F, id)?;
            // "<user>:<key>"; a key may hold ':' itself
            if let Some((user, key)) = field.split_once(':')
                && let Ok(user) = user.parse()
            {
                found.push((user, key.to_string(), id));
            }
        }
        Ok((next, found))
    }
}

/// A list of stream entries as outbox entries (an entry deleted while
/// pending comes with nil fields: none).
fn entries_of(
    function: &'static str,
    partition: u64,
    entries: Value,
) -> Result<Vec<OutboxEntry>, StoreError> {
    reply::array(function, entries)?
        .into_iter()
        .map(|entry| {
            let mut parts = reply::array(function, entry)?.into_iter();
            let id = reply::text(function, parts.next().unwrap_or_default())?;
            let fields = match parts.next() {
                None | Some(Value::Nil) => Vec::new(),
                Some(Value::Map(pairs)) => pairs
                    .into_iter()
                    .map(|(k, v)| Ok((reply::text(function, k)?, reply::text(function, v)?)))
                    .collect::<Result<_, StoreError>>()?,
                Some(items) => {
                    let items = reply::array(function, items)?;
                    let mut fields = Vec::with_capacity(items.len() / 2);
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        fields.push((reply::text(function, k)?, reply::text(function, v)?));
                    }
                    fields
                }
            };
            Ok(OutboxEntry {
                partition,
                id,
                fields,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_channels_name_their_partition() {
        for p in [0, 7, 63, 1000] {
            assert_eq!(
                Store::outbox_channel_partition(Store::outbox_channel(p).as_bytes()),
                Some(p)
            );
        }
        for bad in [
            &b"meetingd:{p}:outbox"[..],
            b"meetingd:{p07}:outbox",
            b"meetingd:{p7}:watch:1/1",
            b"meetingd:{px}:outbox",
            b"meetingd:{p7}:outboxes",
        ] {
            assert_eq!(Store::outbox_channel_partition(bad), None, "{bad:?}");
        }
    }
}
