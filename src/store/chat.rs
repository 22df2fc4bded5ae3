//! The chat and the event log: POST, MESSAGES, EVENTS.

use super::reply::{self, Fields};
use super::types::{Event, Id, InstanceId, InstanceRef, Message, Page, Posted};
use super::{Call, PAGE, Store, StoreError};

impl Store {
    /// The call of a POST; with `key`, a repeat of the same user's key in
    /// the instance stores nothing and answers the first message.
    pub fn post_call(
        &self,
        user: Id,
        target: InstanceRef,
        text: &str,
        key: Option<&str>,
    ) -> Call<Posted> {
        let meeting = target.meeting();
        let mut args = vec![
            Store::order_arg(target),
            user.to_string(),
            text.to_string(),
            self.now().to_string(),
        ];
        if !self.options.retention.is_zero() || key.is_some() {
            args.push(self.retention());
        }
        args.extend(key.map(str::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Call::new(
            "meet_post",
            &self.keys.meeting(meeting),
            &args,
            true,
            move |value| {
                let placed = reply::placed("meet_post", value)?;
                Ok(Posted {
                    instance: InstanceId::new(meeting, placed.order),
                    user,
                    at: placed.at,
                    id: placed.id,
                    duplicate: placed.duplicate,
                })
            },
        )
    }

    /// A participant posts a message (see [`Store::post_call`]).
    pub async fn post(
        &self,
        user: Id,
        target: InstanceRef,
        text: &str,
        key: Option<&str>,
    ) -> Result<Posted, StoreError> {
        self.run(self.post_call(user, target, text, key)).await
    }

    /// The call of a page of an instance's chat (one user's only, with
    /// `user`), oldest first, after the message id `after`: at most `limit`
    /// messages that fit in `budget` bytes of a reply (at least one).
    pub fn messages_call(
        &self,
        target: InstanceRef,
        user: Option<Id>,
        after: Option<&str>,
        limit: usize,
        budget: Option<usize>,
    ) -> Call<(InstanceId, Page<Message>)> {
        let meeting = target.meeting();
        let args = [
            Store::order_arg(target),
            user.map(|u| u.to_string()).unwrap_or_default(),
            after.unwrap_or_default().to_string(),
            limit.clamp(1, PAGE).to_string(),
            budget.map(|b| b.to_string()).unwrap_or_default(),
            "packed".to_string(),
            self.now().to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Call::new(
            "meet_messages",
            &self.keys.meeting(meeting),
            &args,
            false,
            move |value| {
                const F: &str = "meet_messages";
                let mut f = Fields::new(F, value)?;
                let instance = InstanceId::new(meeting, f.id("order")?);
                let next = f.optional("next")?.map(|v| reply::text(F, v)).transpose()?;
                let items = reply::packed_messages(F, f.take("messages")?)?;
                Ok((instance, Page { items, next }))
            },
        )
    }

    /// A page of an instance's chat (see [`Store::messages_call`]).
    pub async fn messages(
        &self,
        target: InstanceRef,
        user: Option<Id>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(InstanceId, Page<Message>), StoreError> {
        self.run(self.messages_call(target, user, after, limit, None))
            .await
    }

    /// The call of a page of an instance's event log, oldest first, after
    /// the event id `after`: at most `limit` events that fit in `budget`
    /// bytes of a reply (at least one).
    pub fn events_call(
        &self,
        target: InstanceRef,
        after: Option<&str>,
        limit: usize,
        budget: Option<usize>,
    ) -> Call<(InstanceId, Page<Event>)> {
        let meeting = target.meeting();
        let args = [
            Store::order_arg(target),
            after.unwrap_or_default().to_string(),
            limit.clamp(1, PAGE).to_string(),
            budget.map(|b| b.to_string()).unwrap_or_default(),
            self.now().to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Call::new(
            "meet_events",
            &self.keys.meeting(meeting),
            &args,
            false,
            move |value| {
                let mut f = Fields::new("meet_events", value)?;
                let instance = InstanceId::new(meeting, f.id("order")?);
                Ok((instance, reply::page(f, "events", reply::event)?))
            },
        )
    }

    /// A page of an instance's event log (see [`Store::events_call`]).
    pub async fn events(
        &self,
        target: InstanceRef,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(InstanceId, Page<Event>), StoreError> {
        self.run(self.events_call(target, after, limit, None)).await
    }
}
