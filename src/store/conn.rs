//! The connection under the store: one Redis (a multiplexed connection that
//! reconnects by itself) or a Redis Cluster (redis-rs' async cluster
//! client: every call goes to the node of its keys' slot, MOVED and ASK are
//! followed, TRYAGAIN is retried). Both pipeline concurrent calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushKind, RedisFuture, Value};

use super::{StoreError, StoreOptions};

/// One Redis, or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

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
                .retries(6)
                .build()?;
            return Ok(Conn::Cluster(client.get_async_connection().await?));
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
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
