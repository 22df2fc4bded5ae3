//! What an administrator writes and reads: users, meetings, audiences,
//! instances, and END.

use super::reply::{self, Fields};
use super::types::{
    Audience, Ended, Id, Instance, InstanceId, InstanceRef, Meeting, MeetingDetail, Millis, User,
};
use super::{Call, Keys, PAGE, Store, StoreError};
use crate::error::Code;

impl Store {
    /// Create or update a user. The user is entered in its partition's
    /// user index first (USERS; another tag than the user's, so another
    /// call; that call also queues the values for the archive), then
    /// written: a failure in between leaves an index entry
    /// that listings skip until this is sent again. The daemon's cache
    /// forgets them (Redis tells it too, but this request's client may
    /// JOIN next).
    pub async fn user_set(&self, user: &User) -> Result<User, StoreError> {
        self.run(self.user_index_call(user)).await?;
        let age = user.age.to_string();
        let call = Store::record_call(
            "meet_user_set",
            &Keys::user(user.id),
            &[&user.name, &age, &user.gender, &user.email],
            true,
        );
        let result = self.run(call).await;
        self.users.forget(user.id);
        decode_user(result?)
    }

    /// Read a user.
    pub async fn user_get(&self, user: Id) -> Result<User, StoreError> {
        let f = self
            .run(Store::record_call(
                "meet_user_get",
                &Keys::user(user),
                &[],
                false,
            ))
            .await?;
        decode_user(f)
    }

    /// One instance (`M` alone: the running one): its window and state,
    /// and when it ended, once it has.
    pub async fn instance_get(
        &self,
        target: InstanceRef,
    ) -> Result<(Instance, Option<Millis>), StoreError> {
        const F: &str = "meet_instance_get";
        let meeting = target.meeting();
        let call = Store::record_call(
            F,
            &self.keys.meeting(meeting),
            &[&Store::order_arg(target)],
            false,
        );
        let mut f = self.run(call).await?;
        let order = f.id("order")?;
        let from = f.int("from")?;
        let to = f.int("to")?;
        let state = f.string("state")?.parse().map_err(StoreError::Internal)?;
        let ended_at = f
            .optional("ended_at")?
            .map(|v| reply::int(F, v))
            .transpose()?;
        Ok((
            Instance {
                id: InstanceId::new(meeting, order),
                from,
                to,
                state,
            },
            ended_at,
        ))
    }

    /// Create or update a meeting's own fields.
    pub async fn meeting_set(&self, meeting: &Meeting) -> Result<Meeting, StoreError> {
        let public = meeting.public.to_string();
        let call = Store::record_call(
            "meet_meeting_set",
            &self.keys.meeting(meeting.id),
            &[&meeting.title, &meeting.description, &public],
            true,
        );
        decode_meeting(self.run(call).await?)
    }

    /// A meeting with its audience and instances.
    pub async fn meeting_get(&self, meeting: Id) -> Result<MeetingDetail, StoreError> {
        const F: &str = "meet_meeting_get";
        let now = self.now().to_string();
        let call = Store::record_call(F, &self.keys.meeting(meeting), &[&now], false);
        let mut f = self.run(call).await?;
        let audience = strings(F, f.array("audience")?)?;
        let audience_total = f.count("audience_total")?;
        let instances_total = f.count("instances_total")?;
        let instances = f
            .array("instances")?
            .into_iter()
            .map(|row| {
                let mut row = reply::array(F, row)?.into_iter();
                let mut next = || row.next().unwrap_or_default();
                let order = reply::id(F, next())?;
                let from = reply::int(F, next())?;
                let to = reply::int(F, next())?;
                let state = reply::text(F, next())?
                    .parse()
                    .map_err(StoreError::Internal)?;
                Ok(Instance {
                    id: InstanceId::new(meeting, order),
                    from,
                    to,
                    state,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(MeetingDetail {
            meeting: decode_meeting(f)?,
            audience,
            audience_total,
            instances,
            instances_total,
        })
    }

    /// One instance as its meeting's schedule has it.
    pub async fn instance(&self, instance: InstanceId) -> Result<Instance, StoreError> {
        self.meeting_get(instance.meeting)
            .await?
            .instances
            .into_iter()
            .find(|i| i.id == instance)
            .ok_or_else(|| StoreError::Rule {
                code: Code::NotFound,
                message: format!("instance {instance} does not exist"),
            })
    }

    /// Add e-mails to a meeting's audience.
    pub async fn audience_add(
        &self,
        meeting: Id,
        emails: &[String],
    ) -> Result<Audience, StoreError> {
        self.audience_change("meet_audience_add", meeting, emails)
            .await
    }

    /// Remove e-mails from a meeting's audience.
    pub async fn audience_del(
        &self,
        meeting: Id,
        emails: &[String],
    ) -> Result<Audience, StoreError> {
        self.audience_change("meet_audience_del", meeting, emails)
            .await
    }

    async fn audience_change(
        &self,
        function: &'static str,
        meeting: Id,
        emails: &[String],
    ) -> Result<Audience, StoreError> {
        let args: Vec<&str> = emails.iter().map(String::as_str).collect();
        let call = Store::record_call(function, &self.keys.meeting(meeting), &args, true);
        let mut f = self.run(call).await?;
        Ok(Audience {
            changed: f.count("changed")?,
            total: f.count("audience_total")?,
            emails: strings(function, f.array("audience")?)?,
        })
    }

    /// Create an instance or move its window. A running instance whose end
    /// moves to now or before ends now.
    pub async fn instance_set(
        &self,
        instance: InstanceId,
        from: Millis,
        to: Millis,
    ) -> Result<Instance, StoreError> {
        self.instance_set_with(instance, from, to, false).await
    }

    /// [`Store::instance_set`], or with `future` only what is still to
    /// come: a started instance keeps its `from`, a running one's `to` may
    /// only move to a later time than now, an ended one stays (an equal
    /// window is accepted as is); anything else is refused (`bad_request`).
    pub async fn instance_set_with(
        &self,
        instance: InstanceId,
        from: Millis,
        to: Millis,
        future: bool,
    ) -> Result<Instance, StoreError> {
        let mut args = vec![
            instance.order.to_string(),
            from.to_string(),
            to.to_string(),
            self.now().to_string(),
            self.options.timeout_budget.clamp(1, PAGE).to_string(),
        ];
        if !self.options.retention.is_zero() || future {
            args.push(self.retention());
        }
        if future {
            args.push("FUTURE".to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let call = Store::record_call(
            "meet_instance_set",
            &self.keys.meeting(instance.meeting),
            &args,
            true,
        );
        let mut f = self.run(call).await?;
        Ok(Instance {
            id: InstanceId::new(f.id("meeting")?, f.id("order")?),
            from: f.int("from")?,
            to: f.int("to")?,
            state: f.string("state")?.parse().map_err(StoreError::Internal)?,
        })
    }

    /// Which instance an `M` or `M/O` names: `M` is the meeting's running
    /// instance by the store's clock (`inactive` when it has none).
    pub async fn resolve(&self, target: InstanceRef) -> Result<InstanceId, StoreError> {
        match target {
            InstanceRef::Exact(instance) => Ok(instance),
            InstanceRef::Current(meeting) => {
                let call = Call::new(
                    "meet_current",
                    &self.keys.meeting(meeting),
                    &[&self.now().to_string()],
                    false,
                    move |value| Ok(InstanceId::new(meeting, reply::id("meet_current", value)?)),
                );
                self.run(call).await
            }
        }
    }

    /// End a running instance by hand: everybody in it times out. Big
    /// instances are drained `timeout_budget` participants per call.
    pub async fn end(&self, target: InstanceRef) -> Result<Ended, StoreError> {
        let key = self.keys.meeting(target.meeting());
        let now = self.now().to_string();
        let budget = self.options.timeout_budget.clamp(1, PAGE).to_string();
        let retention = self.retention();
        // the first call resolves `M`; the rest name the instance it ended
        let mut order = Store::order_arg(target);
        let mut ended: Option<Ended> = None;
        loop {
            let call =
                Store::record_call("meet_end", &key, &[&order, &now, &budget, &retention], true);
            let mut f = match self.run(call).await {
                // a tick drained the rest meanwhile
                Err(StoreError::Rule {
                    code: Code::Inactive,
                    ..
                }) if ended.is_some() => break,
                result => result?,
            };
            let instance = InstanceId::new(f.id("meeting")?, f.id("order")?);
            order = instance.order.to_string();
            let users = f
                .array("timed_out")?
                .into_iter()
                .map(|u| reply::id("meet_end", u))
                .collect::<Result<Vec<_>, _>>()?;
            let ended_at = f.int("ended_at")?;
            let remaining = f.count("remaining")?;
            let row = ended.get_or_insert_with(|| Ended {
                instance,
                ended_at,
                timed_out: Vec::new(),
            });
            row.timed_out.extend(users);
            if remaining == 0 {
                break;
            }
        }
        ended.ok_or_else(|| StoreError::Internal("meet_end returned nothing".into()))
    }
}

fn strings(function: &'static str, values: Vec<redis::Value>) -> Result<Vec<String>, StoreError> {
    values
        .into_iter()
        .map(|v| reply::text(function, v))
        .collect()
}

pub(super) fn decode_user(mut f: Fields) -> Result<User, StoreError> {
    let age = f.int("age")?;
    Ok(User {
        id: f.id("id")?,
        name: f.string("name")?,
        age: u8::try_from(age).map_err(|_| StoreError::Internal(format!("age {age}")))?,
        gender: f.string("gender")?,
        email: f.string("email")?,
    })
}

fn decode_meeting(mut f: Fields) -> Result<Meeting, StoreError> {
    Ok(Meeting {
        id: f.id("id")?,
        title: f.string("title")?,
        description: f.string("description")?,
        public: f.flag("public")?,
    })
}
