//! The connection under the store: one Redis (a multiplexed connection that
//! reconnects by itself) or a Redis Cluster (redis-rs' async cluster
//! client: every call goes to the node of its keys' slot, MOVED and ASK are
//! followed, TRYAGAIN is retried). Both pipeline concurrent calls.
//!
//! On a cluster it also knows the masters (CLUSTER NODES, which lists a
//! master that owns no slot yet too, unlike the client's slot map) and
//! opens plain connections to one of them, for what must reach every
//! master: the library's upkeep and the SCAN of `meetingd check`.
//!
//! Retries on a cluster: redis-rs waits at least `min_retry_wait` before
//! retrying a TRYAGAIN (1.28 s by default), longer than a whole call may
//! take, so a call that met a slot in migration always timed out. The waits
//! here are short (5-100 ms) and the call's timeout bounds them all. A
//! cluster connection that stops answering is replaced (see [`Cluster`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, Pipeline, PushKind, RedisError, RedisFuture, Value,
};

use super::{StoreError, StoreOptions, reply};

/// One Redis, or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// The cluster client's connection, and what it takes to replace it.
///
/// redis-rs 1.2's cluster connection can wedge for good: with many calls
/// bouncing between the two masters of a slot in migration (ASK, then
/// MOVED when another call's ASKING, sent on its own on the shared
/// connection, took the flag), its task starts a slot refresh that never
/// ends (most likely waiting for the connection map's lock, granted to an
/// in-flight call that is not polled until the refresh ends). Every later
/// call times out, the migration long over. So a call that times out (or
/// finds the task gone) has the connection probed with a PING; if that
/// times out too, a new connection is made from the seeds and takes its
/// place.
pub(super) struct Cluster {
    client: redis::cluster::ClusterClient,
    current: RwLock<ClusterConnection>,
    /// A probe is running: one at a time.
    probing: AtomicBool,
    /// The first node's settings (user, password, protocol), for plain
    /// connections to one node.
    info: ConnectionInfo,
    timeout: Duration,
}

impl Cluster {
    /// The connection in use now.
    fn connection(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After `err` from a call: when it looks like the connection is stuck
    /// (a timeout) or gone (its task ended), probe it in the background and
    /// replace it if it does not answer.
    fn after_error(self: &Arc<Self>, err: &RedisError) {
        if !(err.is_timeout() || err.is_io_error() || err.is_connection_dropped()) {
            return;
        }
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let cluster = self.clone();
        tokio::spawn(async move {
            cluster.probe().await;
            cluster.probing.store(false, Ordering::SeqCst);
        });
    }

    async fn probe(&self) {
        let mut stale = self.connection();
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<Value>(&mut stale);
        if matches!(
            tokio::time::timeout(self.timeout, ping).await,
            Ok(Ok(Value::SimpleString(_)
                | Value::BulkString(_)
                | Value::Okay))
        ) {
            return;
        }
        match tokio::time::timeout(self.timeout, self.client.get_async_connection()).await {
            Ok(Ok(fresh)) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                tracing::warn!(
                    "the Redis Cluster connection did not answer a PING: replaced by a new one"
                );
            }
            Ok(Err(err)) => {
                tracing::warn!(
                    "the Redis Cluster connection does not answer, and a new one cannot be made: {err}"
                );
            }
            Err(_) => {
                tracing::warn!(
                    "the Redis Cluster connection does not answer, and a new one timed out"
                );
            }
        }
    }
}

/// A master of the cluster as CLUSTER NODES lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Master {
    /// The node id.
    pub(super) id: String,
    /// Its client address.
    pub(super) host: String,
    /// Its client port.
    pub(super) port: u16,
    /// Flagged `fail` by the cluster: not serving.
    pub(super) failed: bool,
    /// It serves at least one slot (a node joined by a bare CLUSTER MEET
    /// serves none until a slot moves to it).
    pub(super) owns_slots: bool,
    /// The slots it serves, as inclusive ranges.
    pub(super) slots: Vec<(u16, u16)>,
}

impl std::fmt::Display for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Retries of a cluster call (MOVED, ASK, TRYAGAIN, CLUSTERDOWN,
/// reconnection): the call's timeout usually ends them first. Not above
/// 60: redis-rs computes 2^retry * 10 ms in a u64, which overflows there
/// (a panic that ends the connection's task, in a debug build).
const CLUSTER_RETRIES: u32 = 30;
/// The shortest wait before a retry, ms.
const CLUSTER_MIN_RETRY_WAIT: u64 = 5;
/// The longest wait before a retry, ms (the wait doubles from 10 ms).
const CLUSTER_MAX_RETRY_WAIT: u64 = 100;

/// A client of the cluster of `options` whose calls may take `timeout`,
/// retried as above.
pub(super) fn cluster_client(
    options: &StoreOptions,
    timeout: Duration,
) -> Result<redis::cluster::ClusterClient, StoreError> {
    Ok(
        redis::cluster::ClusterClientBuilder::new(options.cluster.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(options.timeout)
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout))
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_MIN_RETRY_WAIT)
            .max_retry_wait(CLUSTER_MAX_RETRY_WAIT)
            .retry_wait_formula(10, 2)
            .build()?,
    )
}

impl Conn {
    /// Connect as `options` say. When a single Redis connection drops,
    /// `checked` is cleared, so the library is checked again, and so is
    /// `connected`, until a call gets a reply again.
    pub(super) async fn open(
        options: &StoreOptions,
        checked: Arc<AtomicBool>,
        connected: Arc<AtomicBool>,
    ) -> Result<Conn, StoreError> {
        if !options.cluster.is_empty() {
            let client = cluster_client(options, options.timeout)?;
            let first = options.cluster.first().map_or("", String::as_str);
            let info = redis::IntoConnectionInfo::into_connection_info(first)
                .map_err(|e| StoreError::Internal(format!("bad Redis Cluster URL: {e}")))?;
            let current = RwLock::new(client.get_async_connection().await?);
            return Ok(Conn::Cluster(Arc::new(Cluster {
                client,
                current,
                probing: AtomicBool::new(false),
                info,
                timeout: options.timeout,
            })));
        }
        let client = resp3_client(&options.url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.timeout))
            .set_connection_timeout(Some(options.timeout))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(2)
            .set_push_sender(move |info: redis::PushInfo| {
                if info.kind == PushKind::Disconnection {
                    checked.store(false, Ordering::SeqCst);
                    connected.store(false, Ordering::SeqCst);
                }
                Ok::<(), ()>(())
            });
        Ok(Conn::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }

    /// Whether this is a cluster (pipelines of several slots are then sent
    /// as concurrent calls instead).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// The cluster's masters, as a node of it says (none on a single
    /// Redis). Asked of a random master through the cluster connection.
    pub(super) async fn masters(&self) -> Result<Vec<Master>, StoreError> {
        let Conn::Cluster(cluster) = self else {
            return Ok(Vec::new());
        };
        let value = cluster
            .connection()
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await
            .inspect_err(|err| cluster.after_error(err))?;
        Ok(parse_masters(&reply::text("CLUSTER NODES", value)?))
    }

    /// A plain connection to each master of the cluster that serves, for
    /// walking every node's keys (`what`: what the walk is, for the error):
    /// a failing master that owns slots stops the walk (its keys cannot be
    /// read), one that owns none is passed over.
    pub(super) async fn live_masters(
        &self,
        what: &str,
    ) -> Result<Vec<MultiplexedConnection>, StoreError> {
        let mut conns = Vec::new();
        for master in self.masters().await? {
            if master.failed {
                if master.owns_slots {
                    return Err(StoreError::Unavailable(format!(
                        "master {master} ({}) is failing: its keys cannot be {what}",
                        master.id
                    )));
                }
                continue;
            }
            conns.push(self.direct(&master).await?);
        }
        Ok(conns)
    }

    /// A plain connection to one node of the cluster, with the first
    /// node's settings and the call timeout.
    pub(super) async fn direct(
        &self,
        master: &Master,
    ) -> Result<MultiplexedConnection, StoreError> {
        let timeout = match self {
            Conn::Cluster(seeds) => seeds.timeout,
            Conn::Single(_) => return Err(StoreError::Internal("not a Redis Cluster".into())),
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        self.direct_with(master, &config).await
    }

    /// A plain connection to one node of the cluster, with the first
    /// node's settings and `config`'s timeouts.
    pub(super) async fn direct_with(
        &self,
        master: &Master,
        config: &redis::AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, StoreError> {
        let Conn::Cluster(seeds) = self else {
            return Err(StoreError::Internal("not a Redis Cluster".into()));
        };
        let info = seeds
            .info
            .clone()
            .set_addr(ConnectionAddr::Tcp(master.host.clone(), master.port));
        Ok(redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(config)
            .await?)
    }
}

/// The masters in CLUSTER NODES' text: one line per node, `<id>
/// <host:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch>
/// <link> <slot>...`. Nodes without an address yet (a handshake in
/// progress) are left out.
pub(super) fn parse_masters(text: &str) -> Vec<Master> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, address, flags, ..] = fields.as_slice() else {
                return None;
            };
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master")
                || flags.contains(&"handshake")
                || flags.contains(&"noaddr")
            {
                return None;
            }
            let address = address.split(',').next()?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
            if host.is_empty() {
                return None;
            }
            // `0-5460`, `5461`, and `[5462->-node]` for a slot in migration
            // (still served here until it moves)
            let slots = fields
                .iter()
                .skip(8)
                .filter(|f| !f.starts_with('['))
                .filter_map(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            Some(Master {
                id: id.to_string(),
                host: host.to_string(),
                port,
                failed: flags.contains(&"fail"),
                owns_slots: fields.len() > 8,
                slots,
            })
        })
        .collect()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move {
                    let mut conn = cluster.connection();
                    conn.req_packed_command(cmd)
                        .await
                        .inspect_err(|err| cluster.after_error(err))
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move {
                    let mut conn = cluster.connection();
                    conn.req_packed_commands(cmd, offset, count)
                        .await
                        .inspect_err(|err| cluster.after_error(err))
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

/// A client of the one Redis at `url` speaking RESP3 (push messages: the
/// invalidations of the user cache, a lost connection).
pub(super) fn resp3_client(url: &str) -> Result<redis::Client, StoreError> {
    Ok(redis::Client::open(resp3_info(url, "Redis URL")?)?)
}

/// The connection settings of `url` speaking RESP3; `what` names the URL
/// in the error when it is not one.
pub(super) fn resp3_info(url: &str, what: &str) -> Result<ConnectionInfo, StoreError> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| StoreError::Internal(format!("bad {what}: {e}")))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    Ok(info.set_redis_settings(settings))
}

/// How a RESP3 connection is made whose push messages (a lost connection
/// among them, as [`PushKind::Disconnection`]) go to `on_push`: `timeout`
/// to connect and for each reply.
pub(super) fn push_config(
    timeout: Duration,
    on_push: impl Fn(redis::PushInfo) + Send + Sync + 'static,
) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(move |info: redis::PushInfo| {
            on_push(info);
            Ok::<(), ()>(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_of_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b master - 0 1 2 connected 5461-10922 [5462->-c3]
c3 127.0.0.1:7002@17002 master - 0 1 3 connected
d4 127.0.0.1:7003@17003 slave a1 0 1 1 connected
e5 127.0.0.1:7004@17004 master,fail - 0 1 4 disconnected 10923-16383
f6 :0@0 master,noaddr - 0 1 5 disconnected
g7 127.0.0.1:7005@17005 master,handshake - 0 1 0 connected
";
        let masters = parse_masters(text);
        let summary: Vec<(&str, String, bool, bool)> = masters
            .iter()
            .map(|m| (m.id.as_str(), m.to_string(), m.failed, m.owns_slots))
            .collect();
        assert_eq!(
            summary,
            [
                ("a1", "127.0.0.1:7000".to_string(), false, true),
                ("b2", "127.0.0.1:7001".to_string(), false, true),
                ("c3", "127.0.0.1:7002".to_string(), false, false),
                ("e5", "127.0.0.1:7004".to_string(), true, true),
            ]
        );
        let slots: Vec<Vec<(u16, u16)>> = masters.iter().map(|m| m.slots.clone()).collect();
        assert_eq!(
            slots,
            [
                vec![(0, 5460)],
                vec![(5461, 10922)],
                vec![],
                vec![(10923, 16383)]
            ]
        );
    }
}
