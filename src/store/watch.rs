//! What WATCH reads: an instance's events and chat merged in id order
//! (`meet_feed`), and a dedicated connection that blocks until either
//! stream has something new (XREAD BLOCK), so a reader never polls.
//!
//! The blocking read runs on a connection of its own: on the shared
//! multiplexed connection it would hold up every request queued behind it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::Value;

use super::reply::{self, Fields};
use super::{Store, StoreError};
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

/// A connection of its own for blocking reads.
pub struct Listener {
    conn: ListenerConn,
}

enum ListenerConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Store {
    /// A page of an instance's events and chat merged in id order, after
    /// `after` (from the start without it); `not_found` for an unknown
    /// instance.
    pub async fn feed(
        &self,
        instance: InstanceId,
        after: Option<StreamId>,
        limit: usize,
    ) -> Result<Feed, StoreError> {
        let args = [
            instance.order.to_string(),
            after.map(|id| id.to_string()).unwrap_or_default(),
            limit.clamp(1, super::PAGE).to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let value = self
            .value(super::Call::new(
                "meet_feed",
                &self.keys.meeting(instance.meeting),
                &args,
                false,
                Ok,
            ))
            .await?;
        decode_feed(value)
    }

    /// Open a connection for [`Listener::wait`]. Its calls may take `block`
    /// plus the store's timeout.
    pub async fn listener(&self, block: Duration) -> Result<Listener, StoreError> {
        let timeout = block + self.options.timeout;
        let conn = if self.options.cluster.is_empty() {
            let client = redis::Client::open(self.options.url.as_str())?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.options.timeout))
                .set_response_timeout(Some(timeout));
            ListenerConn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )
        } else {
            let client = super::conn::cluster_client(&self.options, timeout)?;
            ListenerConn::Cluster(client.get_async_connection().await?)
        };
        Ok(Listener { conn })
    }
}

impl Listener {
    /// Wait until the instance's events or chat have an entry after
    /// `after`, for at most `block`: true when there is one. Returns at
    /// once when one is there already, so nothing written between a read
    /// and this wait is missed.
    pub async fn wait(
        &mut self,
        store: &Store,
        instance: InstanceId,
        after: StreamId,
        block: Duration,
    ) -> Result<bool, StoreError> {
        let after = after.to_string();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(store.keys.events(instance))
            .arg(store.keys.chat(instance))
            .arg(&after)
            .arg(&after);
        let value: Value = match &mut self.conn {
            ListenerConn::Single(conn) => cmd.query_async(conn).await?,
            ListenerConn::Cluster(conn) => cmd.query_async(conn).await?,
        };
        // nil when the time ran out; with COUNT 1, anything else holds an
        // entry
        Ok(match value {
            Value::Nil => false,
            Value::Array(streams) | Value::Set(streams) => !streams.is_empty(),
            Value::Map(streams) => !streams.is_empty(),
            _ => true,
        })
    }
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
        .map(|entry| {
            let (id, f) = reply::entry(F, entry)?;
            let parsed = id
                .parse::<StreamId>()
                .map_err(|e| StoreError::Internal(format!("unexpected reply from {F}: {e}")))?;
            let item = if f.has("text") {
                FeedItem::Message(reply::message(id, f)?)
            } else {
                FeedItem::Event(reply::event(id, f)?)
            };
            Ok::<_, StoreError>((parsed, item))
        })
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
