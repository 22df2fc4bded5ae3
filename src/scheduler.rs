//! The scheduler: instances open and close on their own.
//!
//! An instance's state is a function of the clock: reads report it, and a
//! request on a meeting applies what is due for it first (see
//! `lua/include/instances.lua`). The scheduler applies the same transitions
//! to the instances no request touched, and does the bookkeeping (drains
//! of big instances, missed windows); what a request applied it finds done.
//!
//! A tokio-cron-scheduler job fires on the configured cron expression
//! (every minute at second 0, UTC, by default); the daemon ticks once at
//! start-up; the `TICK` command ticks on demand. All three go through
//! [`Scheduler::tick`]: one tick at a time per daemon (a scheduled tick
//! that finds the previous one still running is skipped and counted; a
//! `TICK` command waits for it), run in a task of its own so that a failure
//! or a panic is logged and counted and the next tick catches up. A tick
//! is the store's tick: bounded Lua steps until nothing is due, each
//! transition idempotent, so several daemons on one Redis need no leader.
//!
//! A scheduled tick that fails (Redis unreachable...) is tried again a
//! second later, then after 2, 4... up to 30 s, until one succeeds: a
//! window that opened, or an end that passed, during an outage is applied
//! within seconds of Redis coming back, not at the next cron firing.
//!
//! tokio-cron-scheduler has known cases of a repeated job that silently
//! stops firing; a watchdog re-creates the job when it has not fired for
//! two intervals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid as JobId;

use crate::clock::Millis;
use crate::stats::Stats;
use crate::store::{Store, StoreError, TickReport};

/// The work of one tick, and the clock it runs by. The store in the
/// daemon; tests may wrap it to inject a fault.
pub trait TickWork: Send + Sync + 'static {
    /// Now, by the work's clock.
    fn now(&self) -> Millis;
    /// Apply everything due at `now`.
    fn tick(&self, now: Millis) -> BoxFuture<'static, Result<TickReport, StoreError>>;
}

impl TickWork for Store {
    fn now(&self) -> Millis {
        Store::now(self)
    }

    fn tick(&self, now: Millis) -> BoxFuture<'static, Result<TickReport, StoreError>> {
        let store = self.clone();
        Box::pin(async move { store.tick(now).await })
    }
}

/// What asked for a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The cron job: skipped when a tick is already running.
    Cron,
    /// Start-up, before the daemon says it is ready.
    Startup,
    /// The TICK command: waits for a running tick, then ticks.
    Command,
    /// A retry after a failed scheduled tick: skipped, like the cron's,
    /// when a tick is running.
    Retry,
}

/// The first wait before a failed tick is tried again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const RETRY_LONGEST: Duration = Duration::from_secs(30);

/// Why a tick did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// A scheduled tick found the previous one still running.
    #[error("a tick is already running")]
    Skipped,
    /// The store failed (Redis down...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tick panicked.
    #[error("the tick panicked: {0}")]
    Panicked(String),
}

/// Runs ticks, one at a time.
pub struct Scheduler {
    work: Arc<dyn TickWork>,
    stats: Arc<Stats>,
    /// Held while a tick runs.
    running: Mutex<()>,
    /// When the cron job last fired (ms by the system clock; 0: not yet).
    last_fired: AtomicI64,
    /// A retry loop runs (one at a time).
    retrying: AtomicBool,
}

impl Scheduler {
    /// A scheduler ticking with `work`, counting in `stats`.
    pub fn new(work: Arc<dyn TickWork>, stats: Arc<Stats>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            work,
            stats,
            running: Mutex::new(()),
            last_fired: AtomicI64::new(0),
            retrying: AtomicBool::new(false),
        })
    }

    /// The one code path of every tick.
    pub async fn tick(&self, trigger: Trigger) -> Result<TickReport, TickError> {
        let _running = match trigger {
            Trigger::Cron | Trigger::Retry => match self.running.try_lock() {
                Ok(guard) => guard,
                Err(_) => {
                    self.stats.tick_skipped();
                    tracing::warn!("the previous tick is still running; skipping this one");
                    return Err(TickError::Skipped);
                }
            },
            Trigger::Startup | Trigger::Command => self.running.lock().await,
        };
        let now = self.work.now();
        // A task of its own: a panic in the tick becomes an error here.
        let outcome = tokio::spawn(self.work.tick(now)).await;
        let result = match outcome {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(err)) => Err(TickError::Store(err)),
            Err(join) => Err(TickError::Panicked(panic_message(join))),
        };
        match &result {
            Ok(report) => {
                self.stats.tick_succeeded(now);
                if !(report.activated.is_empty()
                    && report.ended.is_empty()
                    && report.missed.is_empty())
                {
                    tracing::info!(
                        ?trigger,
                        activated = report.activated.len(),
                        ended = report.ended.len(),
                        missed = report.missed.len(),
                        timeouts = report.timeouts,
                        "tick"
                    );
                }
            }
            Err(err) => {
                self.stats.tick_failed();
                tracing::error!(?trigger, "tick failed ({err}); tried again within seconds");
            }
        }
        result
    }

    /// A tick, and after a failure (not a skip) the retries of
    /// [`Scheduler::retry_until_good`]: how the cron job ticks.
    pub async fn tick_or_retry(
        self: &Arc<Self>,
        trigger: Trigger,
    ) -> Result<TickReport, TickError> {
        let result = self.tick(trigger).await;
        if let Err(TickError::Store(_) | TickError::Panicked(_)) = &result {
            self.retry_until_good();
        }
        result
    }

    /// After a failed tick: try again after a short wait, doubling it up
    /// to 30 s, until a tick succeeds (a cron tick that succeeds meanwhile
    /// ends the retries too). One loop at a time; each try is counted.
    pub fn retry_until_good(self: &Arc<Self>) {
        if self.retrying.swap(true, Ordering::SeqCst) {
            return;
        }
        let scheduler = self.clone();
        tokio::spawn(async move {
            let failed_at = scheduler.stats.last_good_tick();
            let mut wait = RETRY_FIRST;
            loop {
                tokio::time::sleep(wait).await;
                if scheduler.stats.last_good_tick() != failed_at {
                    break;
                }
                scheduler.stats.tick_retried();
                match scheduler.tick(Trigger::Retry).await {
                    Ok(_) => break,
                    Err(TickError::Skipped) => {}
                    Err(_) => wait = (wait * 2).min(RETRY_LONGEST),
                }
            }
            scheduler.retrying.store(false, Ordering::SeqCst);
        });
    }

    /// Wait until no tick is running.
    pub async fn wait_idle(&self) {
        let _idle = self.running.lock().await;
    }

    /// Start the cron job (and its watchdog). The handle stops them.
    pub async fn start(self: &Arc<Self>, cron: &str) -> Result<CronHandle, SchedulerError> {
        let interval = cron_interval(cron)?;
        let jobs = JobScheduler::new().await.map_err(SchedulerError::Cron)?;
        let job = self.add_job(&jobs, cron).await?;
        jobs.start().await.map_err(SchedulerError::Cron)?;
        self.last_fired.store(system_now(), Ordering::SeqCst);
        let job = Arc::new(Mutex::new(job));
        let watchdog = tokio::spawn(watchdog(
            self.clone(),
            jobs.clone(),
            job.clone(),
            cron.to_string(),
            interval,
        ));
        Ok(CronHandle {
            jobs,
            job,
            watchdog: Some(watchdog),
        })
    }

    async fn add_job(
        self: &Arc<Self>,
        jobs: &JobScheduler,
        cron: &str,
    ) -> Result<JobId, SchedulerError> {
        let scheduler = self.clone();
        let job = Job::new_async(cron, move |_, _| {
            let scheduler = scheduler.clone();
            Box::pin(async move {
                scheduler.last_fired.store(system_now(), Ordering::SeqCst);
                let _ = scheduler.tick_or_retry(Trigger::Cron).await;
            })
        })
        .map_err(|_| SchedulerError::BadCron(cron.to_string()))?;
        jobs.add(job).await.map_err(SchedulerError::Cron)
    }
}

/// The running cron job; stops it when dropped or stopped.
pub struct CronHandle {
    jobs: JobScheduler,
    job: Arc<Mutex<JobId>>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl CronHandle {
    /// Stop the job and its watchdog (a tick in progress finishes).
    pub async fn stop(mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        let _ = self.jobs.shutdown().await;
    }

    /// Remove the job behind the watchdog's back, as the known bug of
    /// tokio-cron-scheduler does: for tests of the recovery.
    #[doc(hidden)]
    pub async fn drop_job_for_test(&self) {
        let job = *self.job.lock().await;
        let _ = self.jobs.remove(&job).await;
    }
}

impl Drop for CronHandle {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
    }
}

/// Why the cron job could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The expression does not parse.
    #[error(
        "invalid cron expression {0:?}: expected six fields with seconds, e.g. \"0 * * * * *\""
    )]
    BadCron(String),
    /// tokio-cron-scheduler failed.
    #[error("the cron scheduler failed: {0}")]
    Cron(tokio_cron_scheduler::JobSchedulerError),
}

/// The time between two firings of `cron` (from the next two).
pub fn cron_interval(cron: &str) -> Result<Duration, SchedulerError> {
    let bad = || SchedulerError::BadCron(cron.to_string());
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron)
        .map_err(|_| bad())?;
    // the shortest gap between the next few firings
    let mut at = parsed
        .find_next_occurrence(&chrono::Utc::now(), false)
        .map_err(|_| bad())?;
    let mut shortest: Option<chrono::TimeDelta> = None;
    for _ in 0..4 {
        let next = parsed.find_next_occurrence(&at, false).map_err(|_| bad())?;
        let gap = next - at;
        shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
        at = next;
    }
    shortest.and_then(|gap| gap.to_std().ok()).ok_or_else(bad)
}

/// Every half interval: if the job has not fired for two intervals, log it
/// and re-create the job.
async fn watchdog(
    scheduler: Arc<Scheduler>,
    jobs: JobScheduler,
    job: Arc<Mutex<JobId>>,
    cron: String,
    interval: Duration,
) {
    let period = (interval / 2).max(Duration::from_millis(200));
    let limit = 2 * interval.as_millis() as i64 + 500;
    loop {
        tokio::time::sleep(period).await;
        let silent_for = system_now() - scheduler.last_fired.load(Ordering::SeqCst);
        if silent_for <= limit {
            continue;
        }
        tracing::error!(
            silent_ms = silent_for,
            %cron,
            "the cron job has not fired for two intervals; re-creating it"
        );
        let mut current = job.lock().await;
        let _ = jobs.remove(&current).await;
        match scheduler.add_job(&jobs, &cron).await {
            Ok(new) => {
                *current = new;
                scheduler.stats.scheduler_recovered();
                scheduler.last_fired.store(system_now(), Ordering::SeqCst);
            }
            Err(err) => tracing::error!("cannot re-create the cron job: {err}"),
        }
    }
}

fn system_now() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string()),
        Err(join) => join.to_string(),
    }
}
