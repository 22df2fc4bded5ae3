//! Bulk loading: many records written fast, for benchmarks, tests and
//! operators filling a Redis. The same library functions as one at a time
//! (every rule still applies), pipelined: a round trip carries a chunk.

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
    /// JOIN of an active instance (the caller gives the user's e-mail).
    Join {
        /// Who.
        user: u64,
        /// Their e-mail.
        email: String,
        /// Where.
        instance: InstanceId,
        /// When.
        at: Millis,
    },
    /// LEAVE.
    Leave {
        /// Who.
        user: u64,
        /// Where.
        instance: InstanceId,
        /// When.
        at: Millis,
    },
    /// POST by a participant.
    Post {
        /// Who.
        user: u64,
        /// Where.
        instance: InstanceId,
        /// What.
        text: String,
        /// When.
        at: Millis,
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
    /// Write `records` in pipelined chunks, in order (on a cluster one call
    /// after the other: slower, but records may depend on earlier ones).
    pub async fn load(
        &self,
        records: impl IntoIterator<Item = Load>,
    ) -> Result<LoadReport, StoreError> {
        self.ensure_library().await?;
        let mut report = LoadReport::default();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let mut pipe = redis::pipe();
            for record in records.by_ref().take(CHUNK) {
                self.add_to(&mut pipe, record);
            }
            for reply in self.run_all(&pipe, true).await? {
                match reply {
                    Err(err) if err.code().is_some() => {
                        report.refused += 1;
                        report.first_refusal.get_or_insert_with(|| err.to_string());
                    }
                    Err(err) => return Err(err.into()),
                    Ok(_) => report.written += 1,
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
            Load::Join {
                user,
                email,
                instance,
                at,
            } => {
                let m = instance.meeting;
                pipe.cmd("FCALL")
                    .arg("meet_join")
                    .arg(5)
                    .arg(k.meeting(m))
                    .arg(k.audience(m))
                    .arg(k.schedule(m))
                    .arg(k.present(instance))
                    .arg(k.events(instance))
                    .arg(m.to_string())
                    .arg(instance.order.to_string())
                    .arg(user.to_string())
                    .arg(email)
                    .arg(at.to_string())
                    .arg(self.retention());
            }
            Load::Leave { user, instance, at } => {
                pipe.cmd("FCALL")
                    .arg("meet_leave")
                    .arg(3)
                    .arg(k.schedule(instance.meeting))
                    .arg(k.present(instance))
                    .arg(k.events(instance))
                    .arg(instance.meeting.to_string())
                    .arg(instance.order.to_string())
                    .arg(user.to_string())
                    .arg(at.to_string())
                    .arg(self.retention());
            }
            Load::Post {
                user,
                instance,
                text,
                at,
            } => {
                pipe.cmd("FCALL")
                    .arg("meet_post")
                    .arg(4)
                    .arg(k.schedule(instance.meeting))
                    .arg(k.present(instance))
                    .arg(k.chat(instance))
                    .arg(k.chat_by(instance, user))
                    .arg(instance.meeting.to_string())
                    .arg(instance.order.to_string())
                    .arg(user.to_string())
                    .arg(text)
                    .arg(at.to_string())
                    .arg(self.retention());
            }
        }
    }
}
