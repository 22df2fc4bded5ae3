//! Attendance: who was in an instance, from when to when, for how long.
//! A pure fold over the instance's events and messages in id order, so
//! REPORT (from Redis) and the archive (from the same entries) give the
//! same numbers.
//!
//! A user's time present is the sum of their join -> leave (or timeout)
//! intervals, each clipped to the instance's window [from, to]; a user
//! still in counts until `until` (now, for a running instance), clipped
//! the same way.

use std::collections::BTreeMap;

use crate::store::{Event, EventKind, Id, Millis};

/// One user's attendance of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    /// The user.
    pub user: Id,
    /// Their first join.
    pub first_join: Millis,
    /// Their last leave or timeout; `None` while they are still in.
    pub last_leave: Option<Millis>,
    /// Milliseconds present, within the window.
    pub present_ms: i64,
    /// How many times they joined.
    pub joins: u64,
    /// How many messages they posted.
    pub messages: u64,
}

impl Attendance {
    /// Seconds present (ms precision).
    pub fn seconds(&self) -> f64 {
        self.present_ms as f64 / 1000.0
    }
}

/// The fold: feed it the events and messages of one instance, oldest
/// first, then [`Tally::finish`].
#[derive(Debug, Clone)]
pub struct Tally {
    from: Millis,
    to: Millis,
    rows: BTreeMap<Id, (Attendance, Option<Millis>)>,
}

impl Tally {
    /// A tally for an instance whose window is [from, to].
    pub fn new(from: Millis, to: Millis) -> Tally {
        Tally {
            from,
            to,
            rows: BTreeMap::new(),
        }
    }

    /// The length of [start, end] within the window.
    fn clipped(&self, start: Millis, end: Millis) -> i64 {
        (end.min(self.to) - start.max(self.from)).max(0)
    }

    /// `user` joined at `at`.
    pub fn join(&mut self, user: Id, at: Millis) {
        let row = self.rows.entry(user).or_insert_with(|| {
            (
                Attendance {
                    user,
                    first_join: at,
                    last_leave: None,
                    present_ms: 0,
                    joins: 0,
                    messages: 0,
                },
                None,
            )
        });
        row.0.joins += 1;
        // a join while in (which the library never writes) keeps the
        // earlier one
        row.1.get_or_insert(at);
    }

    /// `user` left, or timed out, at `at` (ignored if they were not in).
    pub fn leave(&mut self, user: Id, at: Millis) {
        let Some((mut row, Some(since))) = self.rows.remove(&user) else {
            return;
        };
        row.present_ms += self.clipped(since, at);
        row.last_leave = Some(at);
        self.rows.insert(user, (row, None));
    }

    /// An event of the instance (its start and end count for nobody).
    pub fn event(&mut self, event: &Event) {
        let Some(user) = event.user else { return };
        match event.kind {
            EventKind::Join => self.join(user, event.at),
            EventKind::Leave | EventKind::Timeout => self.leave(user, event.at),
            EventKind::Start | EventKind::End => {}
        }
    }

    /// `user` posted a message (counted for users who joined).
    pub fn message(&mut self, user: Id) {
        if let Some((row, _)) = self.rows.get_mut(&user) {
            row.messages += 1;
        }
    }

    /// The users of the tally so far.
    pub fn users(&self) -> impl Iterator<Item = Id> + '_ {
        self.rows.keys().copied()
    }

    /// The rows, by user; those still in count until `until`.
    pub fn finish(self, until: Millis) -> Vec<Attendance> {
        let (from, to) = (self.from, self.to);
        self.rows
            .into_values()
            .map(|(mut row, since)| {
                if let Some(since) = since {
                    row.present_ms += (until.min(to) - since.max(from)).max(0);
                }
                row
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: Millis = 1_000_000;
    const TO: Millis = FROM + 3_600_000;

    fn row(rows: &[Attendance], user: Id) -> &Attendance {
        rows.iter().find(|r| r.user == user).expect("a row")
    }

    #[test]
    fn a_rejoin_adds_both_stays_and_counts_two_joins() {
        let mut t = Tally::new(FROM, TO);
        t.join(1, FROM + 60_000);
        t.message(1);
        t.leave(1, FROM + 120_000);
        t.join(1, FROM + 600_000);
        t.message(1);
        t.leave(1, FROM + 630_500);
        let rows = t.finish(TO + 1);
        let r = row(&rows, 1);
        assert_eq!(r.present_ms, 60_000 + 30_500);
        assert_eq!(r.seconds(), 90.5);
        assert_eq!(r.joins, 2);
        assert_eq!(r.messages, 2);
        assert_eq!(r.first_join, FROM + 60_000);
        assert_eq!(r.last_leave, Some(FROM + 630_500));
    }

    #[test]
    fn a_timeout_ends_a_stay_at_its_time() {
        let mut t = Tally::new(FROM, TO);
        t.join(2, FROM + 10_000);
        t.leave(2, TO);
        let rows = t.finish(TO + 60_000);
        assert_eq!(row(&rows, 2).present_ms, 3_590_000);
        assert_eq!(row(&rows, 2).last_leave, Some(TO));
    }

    #[test]
    fn a_join_in_the_last_second_counts_what_is_left_of_the_window() {
        let mut t = Tally::new(FROM, TO);
        t.join(3, TO - 400);
        // a timeout processed late is still clipped to the window
        t.leave(3, TO + 5_000);
        let rows = t.finish(TO + 10_000);
        assert_eq!(row(&rows, 3).present_ms, 400);
        assert_eq!(row(&rows, 3).seconds(), 0.4);
    }

    #[test]
    fn a_user_who_never_left_counts_until_now_or_the_end() {
        let mut t = Tally::new(FROM, TO);
        t.join(4, FROM + 1_000);
        let running = t.clone().finish(FROM + 31_000);
        assert_eq!(row(&running, 4).present_ms, 30_000);
        assert_eq!(row(&running, 4).last_leave, None);
        let after = t.finish(TO + 99_000);
        assert_eq!(row(&after, 4).present_ms, 3_599_000);
    }

    #[test]
    fn a_stay_before_the_window_and_strays_count_nothing() {
        let mut t = Tally::new(FROM, TO);
        t.leave(5, FROM + 1); // never joined: ignored
        t.message(5);
        t.join(6, FROM - 5_000);
        t.leave(6, FROM + 2_000);
        let rows = t.finish(TO);
        assert_eq!(rows.len(), 1);
        assert_eq!(row(&rows, 6).present_ms, 2_000);
    }
}
