//! What the Redis under the store does with writes: `CONFIG GET appendonly
//! appendfsync` of the one Redis, or of every live master of a cluster
//! (each over a connection of its own, as `cluster.rs` reaches them), for
//! the daemon to compare with `redis.durability` at start-up. Read only.

use redis::Value;
use redis::aio::ConnectionLike;

use super::{Store, reply};
use crate::durability::Persistence;

/// One node's answer.
#[derive(Debug, Clone)]
pub struct NodePersistence {
    /// The master (`host:port`) of a cluster; `None`: the one Redis.
    pub node: Option<String>,
    /// What it keeps, or why it could not be asked (CONFIG renamed or
    /// disabled, no connection).
    pub found: Result<Persistence, String>,
}

impl Store {
    /// What each node keeps: the one Redis, or every master of the
    /// cluster not flagged failed (when the masters cannot be listed, one
    /// answer saying why).
    pub async fn persistence(&self) -> Vec<NodePersistence> {
        if !self.conn.is_cluster() {
            let mut conn = self.conn.clone();
            return vec![NodePersistence {
                node: None,
                found: config_get(&mut conn).await,
            }];
        }
        let masters = match self.conn.masters().await {
            Ok(masters) => masters,
            Err(err) => {
                return vec![NodePersistence {
                    node: Some("every master".into()),
                    found: Err(format!("cannot list the masters: {err}")),
                }];
            }
        };
        let live: Vec<_> = masters.into_iter().filter(|m| !m.failed).collect();
        let answers = futures_util::future::join_all(live.iter().map(|master| async move {
            match self.conn.direct(master).await {
                Ok(mut conn) => config_get(&mut conn).await,
                Err(err) => Err(format!("cannot connect: {err}")),
            }
        }))
        .await;
        live.iter()
            .zip(answers)
            .map(|(master, found)| NodePersistence {
                node: Some(master.to_string()),
                found,
            })
            .collect()
    }
}

/// `CONFIG GET appendonly appendfsync` on `conn`.
async fn config_get(conn: &mut impl ConnectionLike) -> Result<Persistence, String> {
    let value: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .arg("appendfsync")
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    let pairs: Vec<(Value, Value)> = match value {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => {
            let mut items = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                pairs.push((name, value));
            }
            pairs
        }
        Value::ServerError(err) => return Err(redis::RedisError::from(err).to_string()),
        other => return Err(format!("unexpected reply {other:?}")),
    };
    let mut appendonly = None;
    let mut appendfsync = None;
    for (name, value) in pairs {
        let name = reply::text("CONFIG GET", name).map_err(|e| e.to_string())?;
        let value = reply::text("CONFIG GET", value).map_err(|e| e.to_string())?;
        match name.to_ascii_lowercase().as_str() {
            "appendonly" => appendonly = Some(value),
            "appendfsync" => appendfsync = Some(value),
            _ => {}
        }
    }
    match (appendonly, appendfsync) {
        (Some(appendonly), Some(appendfsync)) => Ok(Persistence::new(&appendonly, &appendfsync)),
        _ => Err("CONFIG GET did not return appendonly and appendfsync".into()),
    }
}
