//! The library on every master of a Redis Cluster.
//!
//! `FUNCTION LOAD` through the cluster client reaches the masters of its
//! slot map only, and a master joined by a bare `CLUSTER MEET` owns no slot
//! and gets no functions from the others: once a slot moves to it (or a
//! call is sent there by ASK in the middle of a migration) it answers
//! `Function not found`. So the library is looked after master by master:
//! the masters as CLUSTER NODES lists them now, each over a plain
//! connection, its `meet_version` compared with ours, the library loaded
//! where it is missing or another version. The store does this at connect,
//! at every tick (so a master that joined is found within a tick) and
//! whenever any node answers `Function not found`, which is how a change of
//! topology shows between ticks. It never writes data.

use super::conn::Master;
use super::{Store, StoreError, load_library_into, loaded_library};

impl Store {
    /// Make sure every live master holds our library (a failed master is
    /// left out: it serves nothing, and gets the library when it is back
    /// and a call finds it missing).
    pub(super) async fn library_on_every_master(&self) -> Result<(), StoreError> {
        let masters = self.conn.masters().await?;
        let live = masters.iter().filter(|m| !m.failed);
        let results = futures_util::future::join_all(live.map(|m| self.library_on(m))).await;
        for result in results {
            result?;
        }
        Ok(())
    }

    /// One master: its version of the library, and ours loaded when it
    /// differs or is missing.
    async fn library_on(&self, master: &Master) -> Result<(), StoreError> {
        let mut conn = self.conn.direct(master).await?;
        let loaded = loaded_library(&mut conn).await?;
        if !self.act_on(loaded, &format!("master {master}"))? {
            return Ok(());
        }
        load_library_into(&mut conn, &self.library).await?;
        tracing::info!(
            version = %self.library.version,
            master = %master,
            "loaded the Lua library into a master of the cluster"
        );
        Ok(())
    }
}
