//! The daemon's life: connect to Redis (waiting for it if need be), tick
//! once, start the scheduler, bind the socket, serve.

use std::sync::Arc;
use std::time::Duration;

use crate::cmd::{Context, Limits};
use crate::scheduler::{self, Scheduler, SchedulerError, Trigger};
use crate::server::{self, ServerConfig};
use crate::stats::Stats;
use crate::store::{Store, StoreError, StoreOptions};

/// Everything `meetingd serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Redis and the key layout.
    pub store: StoreOptions,
    /// The socket.
    pub server: ServerConfig,
    /// Page and text limits.
    pub limits: Limits,
    /// When the scheduler ticks (six fields, with seconds; UTC).
    pub cron: String,
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket could not be set up.
    #[error(transparent)]
    Bind(#[from] server::BindError),
    /// Redis said something that is not a matter of waiting.
    #[error("cannot use Redis: {0}")]
    Store(StoreError),
    /// The cron job could not start.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}

/// Connect to Redis, retrying while it is unreachable.
pub async fn connect(options: StoreOptions) -> Result<Store, StoreError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match Store::connect(options.clone()).await {
            Ok(store) => return Ok(store),
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(url = %options.url, %why, "Redis is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Run the daemon until the process ends: connect, tick once, start the
/// cron job, serve.
pub async fn serve(options: ServeOptions) -> Result<(), DaemonError> {
    // a bad cron expression stops start-up before anything else
    scheduler::cron_interval(&options.cron)?;
    let store = connect(options.store.clone())
        .await
        .map_err(DaemonError::Store)?;
    let stats = Arc::new(Stats::default());
    let scheduler = Scheduler::new(Arc::new(store.clone()), stats.clone());
    // the start-up tick catches up whatever fell due while nothing ran;
    // if it fails, the cron job's next tick does
    let _ = scheduler.tick(Trigger::Startup).await;
    let _cron = scheduler.start(&options.cron).await?;
    let listener = server::bind(&options.server)?;
    tracing::info!(socket = %options.server.socket.display(), cron = %options.cron, "ready");
    let ctx = Context {
        store,
        limits: options.limits,
        stats,
        scheduler,
    };
    server::run(listener, Arc::new(options.server), ctx).await;
    Ok(())
}
