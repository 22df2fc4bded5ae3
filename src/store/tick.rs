//! The scheduler's work in Redis: one tick, partition by partition, step
//! by step (`meet_tick`: a bounded batch of due instances per call).

use super::types::{Millis, TickReport, TickStep};
use super::{Keys, PAGE, Store, StoreError};

impl Store {
    /// One tick step in one partition at `now`: the transitions due of at
    /// most `tick_batch` instances, in one call.
    pub async fn tick_step(&self, partition: u64, now: Millis) -> Result<TickStep, StoreError> {
        let now = now.to_string();
        let budget = self.options.timeout_budget.clamp(1, PAGE).to_string();
        let batch = self.options.tick_batch.clamp(1, PAGE).to_string();
        let retention = self.retention();
        let call = Store::record_call(
            "meet_tick",
            &Keys::due(partition),
            &[&now, &budget, &batch, &retention],
            true,
        );
        let mut f = self.run(call).await?;
        Ok(TickStep {
            activated: f.instances("activated")?,
            ended: f.instances("ended")?,
            missed: f.instances("missed")?,
            timeouts: f.count("timeouts")?,
            handled: f.count("handled")?,
            more: f.int("more")? != 0,
        })
    }

    /// A whole tick at `now`: every partition, step after step, until
    /// nothing is due, however large the backlog.
    pub async fn tick(&self, now: Millis) -> Result<TickReport, StoreError> {
        if self.conn.is_cluster() {
            // a master that joined since is found here, before a slot (and
            // a call) reaches it: every tick looks at the masters again
            if let Err(err) = self.library_on_every_master().await {
                tracing::warn!("cannot check the library on every master: {err}");
            }
        }
        let mut report = TickReport::default();
        for partition in 0..self.keys.partitions() {
            let mut idle_steps = 0;
            loop {
                let step = self.tick_step(partition, now).await?;
                report.steps += 1;
                let progressed = step.handled > 0;
                report.activated.extend(step.activated);
                report.ended.extend(step.ended);
                report.missed.extend(step.missed);
                report.timeouts += step.timeouts;
                if !step.more {
                    break;
                }
                // Due, and nothing looked at (which the library never
                // answers, but a loop must not trust that): give up after a
                // few rounds; the next tick finishes.
                idle_steps = if progressed { 0 } else { idle_steps + 1 };
                if idle_steps >= 3 {
                    tracing::warn!(
                        partition,
                        "tick made no progress in 3 steps; leaving the rest to the next tick"
                    );
                    break;
                }
            }
        }
        if !report.missed.is_empty() {
            let names: Vec<String> = report.missed.iter().map(ToString::to_string).collect();
            tracing::warn!(missed = %names.join(","), "instances whose whole window passed while no tick ran: ended without events");
        }
        Ok(report)
    }
}
