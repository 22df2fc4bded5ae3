//! Bulk loading: many records written fast, for benchmarks, tests and
//! operators filling a Redis. The same library functions as one at a time
//! (every rule still applies), pipelined: a round trip carries a chunk.

use super::types::{InstanceId, Meeting, Millis, User};
use super::{Call, Keys, Store, StoreError};

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
    /// Users written so are forgotten by the cache as Redis tells it.
    pub async fn load(
        &self,
        records: impl IntoIterator<Item = Load>,
    ) -> Result<LoadReport, StoreError> {
        self.ensure_library().await?;
        let mut report = LoadReport::default();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            // a user is entered in its user index (and queued for the
            // archive) first, see USER SET: that call is no record of its
            // own (`false`), and a user it refuses the next one refuses too
            let mut calls = Vec::with_capacity(CHUNK);
            let mut is_record = Vec::with_capacity(CHUNK);
            for record in records.by_ref().take(CHUNK) {
                if let Load::User(user) = &record {
                    calls.push(self.user_index_call(user).map(|()| false));
                    is_record.push(false);
                }
                calls.push(self.load_call(record).map(|()| true));
                is_record.push(true);
            }
            for (reply, record) in self.run_all(calls).await.into_iter().zip(is_record) {
                match reply {
                    Err(StoreError::Rule { .. }) if !record => {}
                    Err(err @ StoreError::Rule { .. }) => {
                        report.refused += 1;
                        report.first_refusal.get_or_insert_with(|| err.to_string());
                    }
                    Err(err) => return Err(err),
                    Ok(record) => report.written += u64::from(record),
                }
            }
        }
        Ok(report)
    }

    /// The library call that writes a record.
    fn load_call(&self, record: Load) -> Call<()> {
        let k = &self.keys;
        let retention = self.retention();
        let call = |function: &str, key: String, args: &[&str]| {
            Call::new(function, &key, args, true, |_| Ok(()))
        };
        match record {
            Load::User(u) => call(
                "meet_user_set",
                Keys::user(u.id),
                &[&u.name, &u.age.to_string(), &u.gender, &u.email],
            ),
            Load::Meeting(m) => call(
                "meet_meeting_set",
                k.meeting(m.id),
                &[&m.title, &m.description, &m.public.to_string()],
            ),
            Load::Instance { id, from, to } => call(
                "meet_instance_set",
                k.meeting(id.meeting),
                &[&id.order.to_string(), &from.to_string(), &to.to_string()],
            ),
            Load::Join {
                user,
                email,
                instance,
                at,
            } => call(
                "meet_join",
                k.meeting(instance.meeting),
                &[
                    &instance.order.to_string(),
                    &user.to_string(),
                    &email,
                    &at.to_string(),
                    &retention,
                ],
            ),
            Load::Leave { user, instance, at } => call(
                "meet_leave",
                k.meeting(instance.meeting),
                &[
                    &instance.order.to_string(),
                    &user.to_string(),
                    &at.to_string(),
                    &retention,
                ],
            ),
            Load::Post {
                user,
                instance,
                text,
                at,
            } => call(
                "meet_post",
                k.meeting(instance.meeting),
                &[
                    &instance.order.to_string(),
                    &user.to_string(),
                    &text,
                    &at.to_string(),
                    &retention,
                ],
            ),
        }
    }
}
