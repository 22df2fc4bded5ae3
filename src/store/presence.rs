//! Who is where: JOIN, LEAVE, PARTICIPANTS (ACTIVE and ATTENDANCE are in
//! `running.rs`).

use std::sync::Arc;

use super::reply::{self, Fields};
use super::types::{Id, InstanceId, InstanceRef, Joined, Left, Millis, Participant};
use super::users::Known;
use super::{Call, PAGE, Store, StoreError};

impl Store {
    /// The order argument of a meeting call: the instance's, or '' for the
    /// meeting's running one.
    pub(super) fn order_arg(target: InstanceRef) -> String {
        match target {
            InstanceRef::Exact(instance) => instance.order.to_string(),
            InstanceRef::Current(_) => String::new(),
        }
    }

    /// The now and retention arguments of a write: retention is left out
    /// when history is kept for ever.
    /// `now`, the retention (when there is one, or a key follows) and the
    /// write's key (JOIN and LEAVE `ID`), the arguments that end a write.
    fn write_args(&self, args: &mut Vec<String>, key: Option<&str>) {
        args.push(self.now().to_string());
        if !self.options.retention.is_zero() || key.is_some() {
            args.push(self.retention());
        }
        args.extend(key.map(str::to_string));
    }

    /// A user as the cache holds them, read (and from then on tracked)
    /// when it does not; `not_found` when there is no such user.
    pub async fn user_known(&self, user: Id) -> Result<Arc<Known>, StoreError> {
        self.users
            .get(&[user])
            .await?
            .pop()
            .flatten()
            .ok_or_else(|| StoreError::Rule {
                code: crate::error::Code::NotFound,
                message: format!("user {user} does not exist"),
            })
    }

    /// A user if the cache holds them (no Redis).
    pub fn user_cached(&self, user: Id) -> Option<Arc<Known>> {
        self.users.cached(user)
    }

    /// Users the cache holds (no Redis; `None` where it does not).
    pub fn users_cached(&self, users: &[Id]) -> Vec<Option<Arc<Known>>> {
        self.users.cached_many(users)
    }

    /// Users by id, from the cache or read in one round trip; `None` where
    /// a user does not exist.
    pub async fn users_known(&self, users: &[Id]) -> Result<Vec<Option<Arc<Known>>>, StoreError> {
        self.users.get(users).await
    }

    /// The call of a JOIN by a user the daemon knows; with `key`, a repeat
    /// of the same user's key in the instance writes nothing and answers
    /// the first join (`duplicate`).
    pub fn join_call(
        &self,
        user: Id,
        target: InstanceRef,
        known: &Known,
        key: Option<&str>,
    ) -> Call<Joined> {
        let meeting = target.meeting();
        let mut args = vec![
            Store::order_arg(target),
            user.to_string(),
            known.email.clone(),
        ];
        self.write_args(&mut args, key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Call::new(
            "meet_join",
            &self.keys.meeting(meeting),
            &args,
            true,
            move |value| {
                let placed = reply::placed("meet_join", value)?;
                Ok(Joined {
                    instance: InstanceId::new(meeting, placed.order),
                    user,
                    joined_at: placed.at,
                    event_id: placed.id,
                    duplicate: placed.duplicate,
                })
            },
        )
    }

    /// A user joins a running instance.
    pub async fn join(&self, user: Id, target: InstanceRef) -> Result<Joined, StoreError> {
        let known = self.user_known(user).await?;
        self.run(self.join_call(user, target, &known, None)).await
    }

    /// The call of a LEAVE; with `key`, as [`Store::join_call`]'s.
    pub fn leave_call(&self, user: Id, target: InstanceRef, key: Option<&str>) -> Call<Left> {
        let meeting = target.meeting();
        let mut args = vec![Store::order_arg(target), user.to_string()];
        self.write_args(&mut args, key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Call::new(
            "meet_leave",
            &self.keys.meeting(meeting),
            &args,
            true,
            move |value| {
                let placed = reply::placed("meet_leave", value)?;
                Ok(Left {
                    instance: InstanceId::new(meeting, placed.order),
                    user,
                    left_at: placed.at,
                    event_id: placed.id,
                    duplicate: placed.duplicate,
                })
            },
        )
    }

    /// A user leaves a running instance.
    pub async fn leave(&self, user: Id, target: InstanceRef) -> Result<Left, StoreError> {
        self.run(self.leave_call(user, target, None)).await
    }

    /// The call of a page of an instance's current participants, in join
    /// order, after `after`: the join position (user, joined at), or with
    /// no time the user where they are (`not_joined` once they left);
    /// `limit` at most 1000.
    pub fn participants_call(
        &self,
        target: InstanceRef,
        after: Option<(Id, Option<Millis>)>,
        limit: usize,
    ) -> Call<(InstanceId, Vec<Participant>)> {
        let meeting = target.meeting();
        let args = [
            Store::order_arg(target),
            after.map(|(u, _)| u.to_string()).unwrap_or_default(),
            limit.clamp(1, PAGE).to_string(),
            "packed".to_string(),
            self.now().to_string(),
            after
                .and_then(|(_, at)| at)
                .map(|at| at.to_string())
                .unwrap_or_default(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Call::new(
            "meet_participants",
            &self.keys.meeting(meeting),
            &args,
            false,
            move |value| {
                let mut f = Fields::new("meet_participants", value)?;
                let order = f.id("order")?;
                let list = reply::pairs("meet_participants", f.take("participants")?)?
                    .into_iter()
                    .map(|(user, joined_at)| Participant { user, joined_at })
                    .collect();
                Ok((InstanceId::new(meeting, order), list))
            },
        )
    }

    /// A page of an instance's current participants (see
    /// [`Store::participants_call`]).
    pub async fn participants(
        &self,
        target: InstanceRef,
        after: Option<(Id, Option<Millis>)>,
        limit: usize,
    ) -> Result<(InstanceId, Vec<Participant>), StoreError> {
        self.run(self.participants_call(target, after, limit)).await
    }
}
