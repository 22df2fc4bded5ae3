//! What WATCH reads from Redis: an instance's events and chat merged in id
//! order (`meet_feed`, the source of truth), and what the library publishes
//! as it writes them.
//!
//! Every JOIN, LEAVE, POST and timeout publishes its entry on the
//! instance's channel (`meetingd:{p<P>}:watch:<M>/<O>`, see
//! `lua/include/watch.lua`) with SPUBLISH: the partition's tag routes it
//! to the master that holds the instance on a cluster, and a single Redis
//! serves sharded channels as well. [`Published`] decodes the message; it
//! carries the id before it, so a receiver knows whether it missed
//! anything.
//!
//! A subscriber connection ([`Store::subscriber`]) is a plain RESP3
//! connection to the one Redis, or to one master of a cluster, whose push
//! messages (the published entries, a lost connection, a channel the
//! server let go of) go to a callback. [`Store::shards`] says which master
//! serves which slot, [`channel_slot`] a channel's slot.

use std::fmt;
use std::str::FromStr;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, PushInfo, Value};

use super::reply::{self, Fields};
use super::{Store, StoreError};
use crate::store::types::{EndReason, Event, EventKind, InstanceId, Message, Millis};

/// An id of an instance's sequence (`ms-seq`), ordered as Redis orders
/// stream ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// The milliseconds part.
    pub ms: u64,
    /// The sequence within the millisecond.
    pub seq: u64,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = String;

    /// `ms-seq`, or a bare `ms` (which is `ms-0`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        let number = |part: &str| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        };
        match (number(ms), number(seq)) {
            (Some(ms), Some(seq)) => Ok(StreamId { ms, seq }),
            _ => Err(format!("{s:?} is not an id like 1795341600000-0")),
        }
    }
}

/// What a watch follows: an instance's entries (its events and chat), or
/// the starts and ends of a partition's instances (WATCH ACTIVE follows
/// every partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// One instance.
    Instance(InstanceId),
    /// The log of transitions of one partition.
    Partition(u64),
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Instance(instance) => write!(f, "{instance}"),
            Topic::Partition(p) => write!(f, "active (partition {p})"),
        }
    }
}

impl From<InstanceId> for Topic {
    fn from(instance: InstanceId) -> Topic {
        Topic::Instance(instance)
    }
}

/// A start or an end of an instance, as its partition's log of
/// transitions has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Its id in the partition's log.
    pub id: String,
    /// Which instance.
    pub instance: InstanceId,
    /// [`EventKind::Start`] or [`EventKind::End`].
    pub kind: EventKind,
    /// When, by the clock.
    pub at: Millis,
    /// The instance's window.
    pub from: Millis,
    /// Its scheduled end.
    pub to: Millis,
    /// Why an end ended.
    pub reason: Option<EndReason>,
}

/// One entry of the merged feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A join, leave, timeout, start or end of the instance.
    Event(Event),
    /// A chat message.
    Message(Message),
    /// A start or an end in a partition's log of transitions.
    Transition(Transition),
}

impl FeedItem {
    /// Its id, as stored.
    pub fn id(&self) -> &str {
        match self {
            FeedItem::Event(e) => &e.id,
            FeedItem::Message(m) => &m.id,
            FeedItem::Transition(t) => &t.id,
        }
    }
}

/// A page of the merged feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// The last id the instance handed out ("0-0" when none yet).
    pub last: StreamId,
    /// The entries with their ids, oldest first.
    pub items: Vec<(StreamId, FeedItem)>,
    /// The id to read after for the next page; `None` at the end.
    pub next: Option<String>,
}

/// An entry as the library published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The id handed out before it in its instance; `None` when the
    /// library did not say (the first of a batch of timeouts).
    pub prev: Option<StreamId>,
    /// Its id.
    pub id: StreamId,
    /// The entry, as the feed would give it.
    pub item: FeedItem,
}

impl Published {
    /// Decode what was published on `topic`'s channel; `None` for
    /// anything else.
    pub fn parse_for(topic: Topic, payload: &[u8]) -> Option<Published> {
        match topic {
            Topic::Instance(_) => Published::parse(payload),
            Topic::Partition(_) => Published::parse_transition(payload),
        }
    }

    /// Decode `<prev> <id> <kind> <user>[ <rest>]` (see
    /// `lua/include/watch.lua`); `None` for anything else.
    pub fn parse(payload: &[u8]) -> Option<Published> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.splitn(5, ' ');
        let prev = parse_prev(parts.next()?)?;
        let raw_id = parts.next()?;
        let id = raw_id.parse::<StreamId>().ok()?;
        let kind = parts.next()?;
        let user = parts.next()?;
        let rest = parts.next();
        let at = i64::try_from(id.ms).ok()?;
        let event = |kind, user, at, scheduled_end, processed_at, reason| {
            FeedItem::Event(Event {
                id: raw_id.to_string(),
                user,
                kind,
                at,
                scheduled_end,
                processed_at,
                reason,
            })
        };
        let item = match (kind, rest) {
            ("4" | "5", _) if user != "-" => return None,
            ("4", Some(rest)) => event(
                EventKind::Start,
                None,
                rest.parse().ok()?,
                None,
                Some(at),
                None,
            ),
            ("5", Some(rest)) => {
                let mut words = rest.split(' ');
                let (ended, end, why) = (words.next()?, words.next()?, words.next()?);
                if words.next().is_some() {
                    return None;
                }
                event(
                    EventKind::End,
                    None,
                    ended.parse().ok()?,
                    Some(end.parse().ok()?),
                    Some(at),
                    Some(EndReason::parse(why)?),
                )
            }
            ("1", None) => event(
                EventKind::Join,
                Some(user.parse().ok()?),
                at,
                None,
                None,
                None,
            ),
            ("2", None) => event(
                EventKind::Leave,
                Some(user.parse().ok()?),
                at,
                None,
                None,
                None,
            ),
            ("3", Some(rest)) => {
                let (ended, end) = rest.split_once(' ')?;
                event(
                    EventKind::Timeout,
                    Some(user.parse().ok()?),
                    ended.parse().ok()?,
                    Some(end.parse().ok()?),
                    Some(at),
                    None,
                )
            }
            ("m", Some(text)) => FeedItem::Message(Message {
                id: raw_id.to_string(),
                user: user.parse().ok()?,
                text: text.to_string(),
                at,
            }),
            _ => return None,
        };
        Some(Published { prev, id, item })
    }

    /// Decode a partition's `<prev> <id> <kind> <M>/<O> <at> <from>
    /// <to>[ <why>]`; `None` for anything else.
    pub fn parse_transition(payload: &[u8]) -> Option<Published> {
        let text = std::str::from_utf8(payload).ok()?;
        let words: Vec<&str> = text.split(' ').collect();
        let (prev, raw_id, kind, name) =
            (words.first()?, words.get(1)?, words.get(2)?, words.get(3)?);
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<Millis>().ok());
        let (kind, reason) = match (*kind, words.len()) {
            ("4", 7) => (EventKind::Start, None),
            ("5", 8) => (EventKind::End, Some(EndReason::parse(words[7])?)),
            _ => return None,
        };
        let (meeting, order) = name.split_once('/')?;
        Some(Published {
            prev: parse_prev(prev)?,
            id: raw_id.parse().ok()?,
            item: FeedItem::Transition(Transition {
                id: raw_id.to_string(),
                instance: InstanceId {
                    meeting: meeting.parse().ok()?,
                    order: order.parse().ok()?,
                },
                kind,
                at: number(4)?,
                from: number(5)?,
                to: number(6)?,
                reason,
            }),
        })
    }
}

/// A published `prev`: an id, or `-` (not known: `Some(None)`).
fn parse_prev(word: &str) -> Option<Option<StreamId>> {
    if word == "-" {
        Some(None)
    } else {
        Some(Some(word.parse::<StreamId>().ok()?))
    }
}

/// The slot of a channel or key (its hash tag's): where SPUBLISH sends it
/// on a cluster.
pub fn channel_slot(channel: &str) -> u16 {
    super::tracking::slot_of(channel)
}

/// A cluster's slot ranges (inclusive) and the master serving each, as
/// `host:port`.
pub type Shards = Vec<(u16, u16, String)>;

/// The slots of the masters not failed, by `host:port`.
fn shards_of(masters: Vec<super::conn::Master>) -> Shards {
    masters
        .into_iter()
        .filter(|m| !m.failed)
        .flat_map(|m| {
            let addr = format!("{}:{}", m.host, m.port);
            m.slots.into_iter().map(move |(a, b)| (a, b, addr.clone()))
        })
        .collect()
}

/// Who serves `slot` in `shards`.
pub fn shard_of(shards: &Shards, slot: u16) -> Option<&str> {
    shards
        .iter()
        .find(|(a, b, _)| (*a..=*b).contains(&slot))
        .map(|(_, _, addr)| addr.as_str())
}

impl Store {
    /// The call of a page of what `topic` follows after `after` (from the
    /// start without it): an instance's events and chat merged in id
    /// order (`not_found` for an unknown instance), or a partition's log
    /// of transitions.
    pub fn feed_call(
        &self,
        topic: impl Into<Topic>,
        after: Option<StreamId>,
        limit: usize,
    ) -> super::Call<Feed> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let limit = limit.clamp(1, super::PAGE).to_string();
        match topic.into() {
            Topic::Instance(instance) => {
                let order = instance.order.to_string();
                super::Call::new(
                    "meet_feed",
                    &self.keys.meeting(instance.meeting),
                    &[&order, &after, &limit],
                    false,
                    decode_feed,
                )
            }
            Topic::Partition(p) => super::Call::new(
                "meet_transitions",
                &super::Keys::transitions(p),
                &[&after, &limit],
                false,
                decode_transitions,
            ),
        }
    }

    /// A page of what `topic` follows (see [`Store::feed_call`]).
    pub async fn feed(
        &self,
        topic: impl Into<Topic>,
        after: Option<StreamId>,
        limit: usize,
    ) -> Result<Feed, StoreError> {
        self.run(self.feed_call(topic, after, limit)).await
    }

    /// The channel `topic`'s entries are published on.
    pub fn watch_channel(&self, topic: impl Into<Topic>) -> String {
        match topic.into() {
            Topic::Instance(instance) => format!(
                "meetingd:{{p{}}}:watch:{instance}",
                self.keys.partition(instance.meeting)
            ),
            Topic::Partition(p) => format!("meetingd:{{p{p}}}:watch:active"),
        }
    }

    /// The topic of a channel [`Store::watch_channel`] named.
    pub fn channel_topic(channel: &[u8]) -> Option<Topic> {
        let channel = std::str::from_utf8(channel).ok()?;
        let (head, name) = channel.rsplit_once(":watch:")?;
        if name == "active" {
            let p = head.strip_prefix("meetingd:{p")?.strip_suffix('}')?;
            return Some(Topic::Partition(p.parse().ok()?));
        }
        let (meeting, order) = name.split_once('/')?;
        Some(Topic::Instance(InstanceId {
            meeting: meeting.parse().ok()?,
            order: order.parse().ok()?,
        }))
    }

    /// Whether the store runs on a cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The masters of a cluster and their slots, failed ones left out
    /// (empty on one Redis).
    pub async fn shards(&self) -> Result<Shards, StoreError> {
        Ok(shards_of(self.conn.masters().await?))
    }

    /// The slot map as the node behind `conn` (a subscriber connection)
    /// sees it. A node that let go of a channel has taken in the change
    /// that made it do so, which another node may not have yet.
    pub async fn shards_seen_by(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Shards, StoreError> {
        let value = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<Value>(conn)
            .await?;
        let text = reply::text("CLUSTER NODES", value)?;
        Ok(shards_of(super::conn::parse_masters(&text)))
    }

    /// A subscriber connection: RESP3, to the one Redis (`shard` empty) or
    /// to the cluster's master at `shard` (`host:port`), its push messages
    /// handed to `on_push` (a lost connection among them, as
    /// [`redis::PushKind::Disconnection`]).
    pub async fn subscriber(
        &self,
        shard: &str,
        on_push: impl Fn(PushInfo) + Send + Sync + 'static,
    ) -> Result<MultiplexedConnection, StoreError> {
        let config = super::conn::push_config(self.options.timeout, on_push);
        let client = if shard.is_empty() {
            super::conn::resp3_client(&self.options.url)?
        } else {
            let (host, port) = shard
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .ok_or_else(|| StoreError::Internal(format!("not host:port: {shard}")))?;
            let first = self.options.cluster.first().map_or("", String::as_str);
            let info = super::conn::resp3_info(first, "Redis Cluster URL")?
                .set_addr(ConnectionAddr::Tcp(host.to_string(), port));
            redis::Client::open(info)?
        };
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

/// A page of an instance's events and chat merged: an entry with `text`
/// is a message, else an event.
fn decode_feed(value: Value) -> Result<Feed, StoreError> {
    decode_entries("meet_feed", value, |id, f| {
        Ok(if f.has("text") {
            FeedItem::Message(reply::message(id, f)?)
        } else {
            FeedItem::Event(reply::event(id, f)?)
        })
    })
}

/// A page of a partition's log of transitions, as a feed.
fn decode_transitions(value: Value) -> Result<Feed, StoreError> {
    decode_entries("meet_transitions", value, |id, f| {
        Ok(FeedItem::Transition(reply::transition(id, f)?))
    })
}

/// A page of stream entries `function` read (`last`, `entries`, `next`)
/// as a feed, each entry an item by `item`.
fn decode_entries(
    function: &'static str,
    value: Value,
    item: impl Fn(String, reply::EntryFields) -> Result<FeedItem, StoreError>,
) -> Result<Feed, StoreError> {
    let stream_id = |id: &str| {
        id.parse::<StreamId>()
            .map_err(|e| StoreError::Internal(format!("unexpected reply from {function}: {e}")))
    };
    let mut fields = Fields::new(function, value)?;
    let last = stream_id(&reply::text(function, fields.take("last")?)?)?;
    let next = fields
        .optional("next")?
        .map(|v| reply::text(function, v))
        .transpose()?;
    let items = fields
        .array("entries")?
        .into_iter()
        .map(|entry| {
            let (id, f) = reply::entry(function, entry)?;
            Ok((stream_id(&id)?, item(id, f)?))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Feed { last, items, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_entries_decode_as_the_feed_has_them() {
        let join = Published::parse(b"0-0 1795341600000-0 1 7").expect("join");
        assert_eq!(join.prev, Some(StreamId::default()));
        assert_eq!(join.id, "1795341600000-0".parse().expect("id"));
        let FeedItem::Event(e) = &join.item else {
            panic!("{join:?}")
        };
        assert_eq!(
            (e.user, e.kind, e.at),
            (Some(7), EventKind::Join, 1795341600000)
        );
        let post = Published::parse(b"1-0 1-1 m 9 hello  there\nyou").expect("post");
        assert_eq!(
            post.item,
            FeedItem::Message(Message {
                id: "1-1".into(),
                user: 9,
                text: "hello  there\nyou".into(),
                at: 1
            })
        );
        let timeout = Published::parse(b"- 5-2 3 4 3 2").expect("timeout");
        assert_eq!(timeout.prev, None);
        let FeedItem::Event(e) = &timeout.item else {
            panic!("{timeout:?}")
        };
        assert_eq!(
            (e.at, e.scheduled_end, e.processed_at),
            (3, Some(2), Some(5))
        );
        for bad in [
            &b""[..],
            b"0-0 1-0 1",
            b"0-0 1-0 4 7",
            b"x 1-0 1 7",
            b"0-0 1-0 1 7 extra",
            b"0-0 1-0 3 7 9",
            b"0-0 1-0 m 7",
        ] {
            assert_eq!(Published::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn channels_name_their_topic() {
        assert_eq!(
            Store::channel_topic(b"meetingd:{p3}:watch:12/4"),
            Some(Topic::Instance(InstanceId::new(12, 4)))
        );
        assert_eq!(
            Store::channel_topic(b"meetingd:{p3}:watch:active"),
            Some(Topic::Partition(3))
        );
        assert_eq!(Store::channel_topic(b"meetingd:{p3}:wake"), None);
        assert_eq!(Store::channel_topic(b"meetingd:{x}:watch:active"), None);
    }

    #[test]
    fn starts_and_ends_decode_as_the_logs_have_them() {
        let start = Published::parse(b"0-0 5-0 4 - 3").expect("start");
        let FeedItem::Event(e) = &start.item else {
            panic!("{start:?}")
        };
        assert_eq!(
            (e.user, e.kind, e.at, e.processed_at),
            (None, EventKind::Start, 3, Some(5))
        );
        let end = Published::parse(b"5-0 9-0 5 - 8 10 preempted").expect("end");
        let FeedItem::Event(e) = &end.item else {
            panic!("{end:?}")
        };
        assert_eq!(
            (e.kind, e.at, e.scheduled_end, e.reason),
            (EventKind::End, 8, Some(10), Some(EndReason::Preempted))
        );
        let ended = Published::parse_transition(b"1-0 2-0 5 12/4 8 1 10 scheduled").expect("end");
        assert_eq!(ended.prev, Some("1-0".parse().expect("id")));
        let FeedItem::Transition(t) = &ended.item else {
            panic!("{ended:?}")
        };
        assert_eq!(
            (t.instance, t.kind, t.at, t.from, t.to, t.reason),
            (
                InstanceId::new(12, 4),
                EventKind::End,
                8,
                1,
                10,
                Some(EndReason::Scheduled)
            )
        );
        assert!(Published::parse_transition(b"- 2-0 4 12/4 1 1 10").is_some());
        for bad in [
            &b"0-0 5-0 4 7 3"[..],
            b"0-0 5-0 5 - 8 10",
            b"0-0 5-0 5 - 8 10 why",
            b"0-0 5-0 5 - 8 10 ended more",
        ] {
            assert_eq!(Published::parse(bad), None, "{bad:?}");
        }
        for bad in [
            &b"1-0 2-0 4 12/4 1 1"[..],
            b"1-0 2-0 5 12/4 8 1 10",
            b"1-0 2-0 4 12 1 1 10",
            b"1-0 2-0 1 12/4 1 1 10",
        ] {
            assert_eq!(Published::parse_transition(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stream_ids_parse_and_order_like_redis() {
        let a: StreamId = "1795341600000-9".parse().expect("id");
        let b: StreamId = "1795341600000-10".parse().expect("id");
        let c: StreamId = "1795341600001".parse().expect("id");
        assert!(a < b && b < c);
        assert_eq!(c.to_string(), "1795341600001-0");
        for bad in [
            "",
            "-",
            "1-",
            "x-1",
            "1-2-3",
            "99999999999999999999999-0",
            "+1-0",
        ] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?}");
        }
    }
}
