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
//! here are short and the retries many: the call's timeout bounds them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionAddr, ConnectionInfo, Pipeline, PushKind, RedisFuture, Value};

use super::{StoreError, StoreOptions, reply};

/// One Redis, or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection, Arc<Seeds>),
}

/// What a plain connection to one node of the cluster needs: the first
/// node's settings (user, password, protocol) and the call timeout.
pub(super) struct Seeds {
    info: ConnectionInfo,
    timeout: Duration,
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
}

impl std::fmt::Display for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Retries of a cluster call (MOVED, ASK, TRYAGAIN, CLUSTERDOWN,
/// reconnection): the call's timeout ends them first.
const CLUSTER_RETRIES: u32 = 64;
/// The shortest wait before a retry, ms.
const CLUSTER_MIN_RETRY_WAIT: u64 = 5;
/// The longest wait before a retry, ms (the wait doubles from 10 ms).
const CLUSTER_MAX_RETRY_WAIT: u64 = 100;

impl Conn {
    /// Connect as `options` say. `checked` is cleared when a single Redis
    /// connection drops, so the library is checked again.
    pub(super) async fn open(
        options: &StoreOptions,
        checked: Arc<AtomicBool>,
    ) -> Result<Conn, StoreError> {
        if !options.cluster.is_empty() {
            let client = redis::cluster::ClusterClientBuilder::new(options.cluster.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .connection_timeout(options.timeout)
                .response_timeout(options.timeout)
                .overall_response_timeout(Some(options.timeout))
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(CLUSTER_MIN_RETRY_WAIT)
                .max_retry_wait(CLUSTER_MAX_RETRY_WAIT)
                .retry_wait_formula(10, 2)
                .build()?;
            let first = options.cluster.first().map_or("", String::as_str);
            let info = redis::IntoConnectionInfo::into_connection_info(first)
                .map_err(|e| StoreError::Internal(format!("bad Redis Cluster URL: {e}")))?;
            let seeds = Seeds {
                info,
                timeout: options.timeout,
            };
            return Ok(Conn::Cluster(
                client.get_async_connection().await?,
                Arc::new(seeds),
            ));
        }
        let info = redis::IntoConnectionInfo::into_connection_info(options.url.as_str())
            .map_err(|e| StoreError::Internal(format!("bad Redis URL: {e}")))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.timeout))
            .set_connection_timeout(Some(options.timeout))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(2)
            .set_push_sender(move |info: redis::PushInfo| {
                if info.kind == PushKind::Disconnection {
                    checked.store(false, Ordering::SeqCst);
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
        matches!(self, Conn::Cluster(..))
    }

    /// The cluster's masters, as a node of it says (none on a single
    /// Redis). Asked of a random master through the cluster connection.
    pub(super) async fn masters(&self) -> Result<Vec<Master>, StoreError> {
        let Conn::Cluster(cluster, _) = self else {
            return Ok(Vec::new());
        };
        let mut cluster = cluster.clone();
        let value = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        Ok(parse_masters(&reply::text("CLUSTER NODES", value)?))
    }

    /// A plain connection to one node of the cluster, with the first
    /// node's settings and the call timeout.
    pub(super) async fn direct(
        &self,
        master: &Master,
    ) -> Result<MultiplexedConnection, StoreError> {
        let Conn::Cluster(_, seeds) = self else {
            return Err(StoreError::Internal("not a Redis Cluster".into()));
        };
        let info = seeds
            .info
            .clone()
            .set_addr(ConnectionAddr::Tcp(master.host.clone(), master.port));
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(seeds.timeout))
            .set_response_timeout(Some(seeds.timeout));
        Ok(redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

/// The masters in CLUSTER NODES' text: one line per node, `<id>
/// <host:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch>
/// <link> <slot>...`. Nodes without an address yet (a handshake in
/// progress) are left out.
fn parse_masters(text: &str) -> Vec<Master> {
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
            Some(Master {
                id: id.to_string(),
                host: host.to_string(),
                port,
                failed: flags.contains(&"fail"),
                owns_slots: fields.len() > 8,
            })
        })
        .collect()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, _) => c.req_packed_command(cmd),
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
            Conn::Cluster(c, _) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c, _) => c.get_db(),
        }
    }
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
    }
}
