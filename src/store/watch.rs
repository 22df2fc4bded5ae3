//! What WATCH reads: an instance's events and chat merged in id order
//! (`meet_feed`), and, per reader, a connection of its own that blocks
//! until any of the streams it is given has something new (one XREAD BLOCK
//! over all of them: a reader's instances are of one partition and share
//! its hash tag, so this works on a cluster too), so a reader never polls.
//!
//! The blocking read runs on a connection of its own: on the shared
//! multiplexed connection it would hold up every request queued behind it.
//! On a cluster it is a plain connection to the master serving the
//! partition's slot (found again when the slot moves). A reader that must
//! look at a new instance before its block ends is woken through its
//! partition's wake stream (`meetingd:{p<P>}:wake`), which its XREAD
//! includes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::Value;

use super::reply::{self, Fields};
use super::{Keys, Store, StoreError};
use crate::store::types::{Event, InstanceId, Message};

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

/// One entry of the merged feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A join, leave or timeout.
    Event(Event),
    /// A chat message.
    Message(Message),
}

impl FeedItem {
    /// Its id, as stored.
    pub fn id(&self) -> &str {
        match self {
            FeedItem::Event(e) => &e.id,
            FeedItem::Message(m) => &m.id,
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

/// A connection of its own for a reader's blocking reads.
pub struct Listener {
    conn: redis::aio::MultiplexedConnection,
    /// Its partition's wake stream, whose entries say only "look again".
    wake: String,
}

/// Most entries the wake stream of a partition keeps.
const WAKE_KEEP: usize = 16;

impl Store {
    /// The call of a page of an instance's events and chat merged in id
    /// order, after `after` (from the start without it); `not_found` for an
    /// unknown instance.
    pub fn feed_call(
        &self,
        instance: InstanceId,
        after: Option<StreamId>,
        limit: usize,
    ) -> super::Call<Feed> {
        let args = [
            instance.order.to_string(),
            after.map(|id| id.to_string()).unwrap_or_default(),
            limit.clamp(1, super::PAGE).to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        super::Call::new(
            "meet_feed",
            &self.keys.meeting(instance.meeting),
            &args,
            false,
            decode_feed,
        )
    }

    /// A page of an instance's feed (see [`Store::feed_call`]).
    pub async fn feed(
        &self,
        instance: InstanceId,
        after: Option<StreamId>,
        limit: usize,
    ) -> Result<Feed, StoreError> {
        self.run(self.feed_call(instance, after, limit)).await
    }

    /// Open a connection for the blocking reads of `partition`: to the one
    /// Redis, or to the master serving the partition's slot. Its calls may
    /// take `block` plus the store's timeout.
    pub async fn listener(&self, partition: u64, block: Duration) -> Result<Listener, StoreError> {
        let timeout = block + self.options.timeout;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.timeout))
            .set_response_timeout(Some(timeout));
        let conn = if self.conn.is_cluster() {
            let master = self.conn.owner_of(&Keys::wake(partition)).await?;
            self.conn.direct_with(&master, &config).await?
        } else {
            let client = redis::Client::open(self.options.url.as_str())?;
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await?
        };
        Ok(Listener {
            conn,
            wake: Keys::wake(partition),
        })
    }

    /// Wake the readers of `partition` out of their blocking reads (a new
    /// instance to watch).
    pub async fn wake(&self, partition: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("XADD")
            .arg(Keys::wake(partition))
            .arg("MAXLEN")
            .arg("~")
            .arg(WAKE_KEEP)
            .arg("*")
            .arg("w")
            .arg("1")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The last id of `partition`'s wake stream ("0-0" when it has none):
    /// where a reader starts to listen for wakes.
    pub async fn wake_cursor(&self, partition: u64) -> Result<StreamId, StoreError> {
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd("XREVRANGE")
            .arg(Keys::wake(partition))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        match reply::array("XREVRANGE", value)?.into_iter().next() {
            Some(entry) => {
                let (id, _) = reply::entry("XREVRANGE", entry)?;
                id.parse()
                    .map_err(|e| StoreError::Internal(format!("the wake stream: {e}")))
            }
            None => Ok(StreamId::default()),
        }
    }
}

/// What a wait found in one stream: its key, the entries after the id it
/// was read from (at most the count asked for), decoded as feed items.
pub type StreamNews = (String, Vec<(StreamId, FeedItem)>);

/// What a wait found.
#[derive(Debug, Default)]
pub struct Waited {
    /// The streams with news (the wake stream not among them).
    pub news: Vec<StreamNews>,
    /// The id of the last entry read from the wake stream, when it had
    /// any: where the next wait reads it from.
    pub woken: Option<StreamId>,
}

impl Listener {
    /// Wait until one of `streams` (key, and the id read up to) has an
    /// entry after its id, for at most `block`: the streams that have, each
    /// with its first `count` new entries (none when the time ran out).
    /// Returns at once when one has already, so nothing written between a
    /// read and this wait is missed. The entries are those meet_feed would
    /// give, so a reader can send them without asking again; of the wake
    /// stream's, only the last id is kept.
    pub async fn wait(
        &mut self,
        streams: &[(String, StreamId)],
        block: Duration,
        count: usize,
    ) -> Result<Waited, StoreError> {
        const F: &str = "XREAD";
        let mut cmd = redis::cmd(F);
        cmd.arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS");
        for (key, _) in streams {
            cmd.arg(key);
        }
        for (_, after) in streams {
            cmd.arg(after.to_string());
        }
        let value: Value = cmd.query_async(&mut self.conn).await?;
        // nil when the time ran out; else [key, entries] per stream with
        // news (a map in RESP3)
        let streams: Vec<(Value, Value)> = match value {
            Value::Nil => return Ok(Waited::default()),
            Value::Map(pairs) => pairs,
            other => reply::array(F, other)?
                .into_iter()
                .map(|stream| {
                    let mut parts = reply::array(F, stream)?.into_iter();
                    match (parts.next(), parts.next()) {
                        (Some(key), Some(entries)) => Ok((key, entries)),
                        _ => Err(StoreError::Internal(
                            "unexpected reply from XREAD: a stream without entries".into(),
                        )),
                    }
                })
                .collect::<Result<_, StoreError>>()?,
        };
        let mut waited = Waited::default();
        for (key, entries) in streams {
            let key = reply::text(F, key)?;
            let entries = reply::array(F, entries)?;
            if key == self.wake {
                if let Some(last) = entries.into_iter().last() {
                    let (id, _) = reply::entry(F, last)?;
                    waited.woken = Some(id.parse().map_err(|e| {
                        StoreError::Internal(format!("unexpected reply from {F}: {e}"))
                    })?);
                }
                continue;
            }
            let entries = entries
                .into_iter()
                .map(|entry| feed_entry(F, entry))
                .collect::<Result<_, _>>()?;
            waited.news.push((key, entries));
        }
        Ok(waited)
    }
}

/// A stream entry of an instance's event log or chat as a feed item: one
/// with `text` is a message, else an event.
fn feed_entry(function: &'static str, entry: Value) -> Result<(StreamId, FeedItem), StoreError> {
    let (id, f) = reply::entry(function, entry)?;
    let parsed = id
        .parse::<StreamId>()
        .map_err(|e| StoreError::Internal(format!("unexpected reply from {function}: {e}")))?;
    let item = if f.has("text") {
        FeedItem::Message(reply::message(id, f)?)
    } else {
        FeedItem::Event(reply::event(id, f)?)
    };
    Ok((parsed, item))
}

fn decode_feed(value: Value) -> Result<Feed, StoreError> {
    const F: &str = "meet_feed";
    let mut fields = Fields::new(F, value)?;
    let last = reply::text(F, fields.take("last")?)?
        .parse::<StreamId>()
        .map_err(|e| StoreError::Internal(format!("unexpected reply from {F}: {e}")))?;
    let next = fields
        .optional("next")?
        .map(|v| reply::text(F, v))
        .transpose()?;
    let items = fields
        .array("entries")?
        .into_iter()
        .map(|entry| feed_entry(F, entry))
        .collect::<Result<_, _>>()?;
    Ok(Feed { last, items, next })
}

#[cfg(test)]
mod tests {
    use super::*;

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
