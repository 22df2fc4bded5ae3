//! Bulk loading: many records written fast, for benchmarks, tests and
//! operators filling a Redis. The same library functions as one at a time
//! (every rule still applies), pipelined: a round trip carries a chunk.

use redis::Value;

use super::types::{InstanceId, Meeting, Millis, User};
use super::{Keys, Store, StoreError};

/// One record to write.
#[derive(Debug, Clone)]
pub enum Load {
    /// USER SET.
    User(User),
    /// MEETING SET (its own fields).
    Meeting(Meeting),
    /// INSTANCE SET: an instance and its window (its meeting must exist,
    /// in this load or before).
    Instance {
        /// Which.
        id: InstanceId,
        /// Window start.
        from: Millis,
        /// Window end.
        to: Millis,
    },
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records written.
    pub written: u64,
    /// Records the library refused.
    pub refused: u64,
    /// The first refusal's message, if any.
    pub first_refusal: Option<String>,
}

/// Records per round trip.
const CHUNK: usize = 1000;

impl Store {
    /// Write `records` in pipelined chunks, in order.
    pub async fn load(
        &self,
        records: impl IntoIterator<Item = Load>,
    ) -> Result<LoadReport, StoreError> {
        self.ensure_library().await?;
        let mut report = LoadReport::default();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for record in records.by_ref().take(CHUNK) {
                self.add_to(&mut pipe, record);
            }
            let mut conn = self.conn.clone();
            let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
            for reply in replies {
                match reply {
                    Value::ServerError(err) => {
                        report.refused += 1;
                        report.first_refusal.get_or_insert_with(|| {
                            format!("{} {}", err.code(), err.details().unwrap_or_default())
                        });
                    }
                    _ => report.written += 1,
                }
            }
        }
        Ok(report)
    }

    fn add_to(&self, pipe: &mut redis::Pipeline, record: Load) {
        let k = &self.keys;
        match record {
            Load::User(u) => {
                pipe.cmd("FCALL")
                    .arg("meet_user_set")
                    .arg(1)
                    .arg(Keys::user(u.id))
                    .arg(u.id.to_string())
                    .arg(u.name)
                    .arg(u.age.to_string())
                    .arg(u.gender)
                    .arg(u.email);
            }
            Load::Meeting(m) => {
                pipe.cmd("FCALL")
                    .arg("meet_meeting_set")
                    .arg(1)
                    .arg(k.meeting(m.id))
                    .arg(m.id.to_string())
                    .arg(m.title)
                    .arg(m.description)
                    .arg(m.public.to_string());
            }
            Load::Instance { id, from, to } => {
                let m = id.meeting;
                pipe.cmd("FCALL")
                    .arg("meet_instance_set")
                    .arg(4)
                    .arg(k.meeting(m))
                    .arg(k.orders(m))
                    .arg(k.schedule(m))
                    .arg(Keys::due(k.partition(m)))
                    .arg(m.to_string())
                    .arg(id.order.to_string())
                    .arg(from.to_string())
                    .arg(to.to_string());
            }
        }
    }
}
