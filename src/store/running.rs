//! ACTIVE and ATTENDANCE: what runs, a page at a time, from each
//! partition's answer, kept while it holds.
//!
//! A partition's answer (`meet_active`, `meet_attendance`) depends on the
//! keys the call read and on the clock. The call says until when the
//! clock cannot change it (`until`: the first transition due after `now`,
//! or the earliest end of what it lists) and which meetings it looked at;
//! a read that declares every key it reads (the partition's active and
//! due indexes and log of transitions; each meeting's hash, schedule and
//! upcoming index; each listed instance's participants) is tracked on a
//! link (`tracking.rs`), and Redis tells the link when any of them
//! changes. Such an answer is kept, and serves any `now` from the one it
//! was read at to its `until`, until a key of its partition changes or
//! its link is lost.
//!
//! A page first makes the cache as fresh as Redis ([`Tracking::barrier`]:
//! every change made before the request, by any client, has reached it),
//! then takes each partition's answer from the cache or reads it. With
//! nothing changing, a page costs Redis one PING per link; a partition
//! that changed costs one call; one with nothing running and nothing due
//! costs nothing once its (empty) answer is kept. The proof that a kept
//! answer is the one a read would give is in `docs/internals.md`, "How
//! ACTIVE and ATTENDANCE read".
//!
//! The keys a read must declare are known only once it ran (the meetings
//! it found). A read declares those the previous read of the partition
//! found; one that found others is served but not kept, and the next read
//! declares them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use redis::Value;

use super::keys::Keys;
use super::reply::{self, Fields};
use super::tracking::{Sink, cached};
use super::types::{ActiveInstance, Attendance, Id, Instance, InstanceId, Millis, Participant};
use super::{InstanceState, PAGE, Store, StoreError, StreamId};

/// The partitions' answers, and what makes them stale.
#[derive(Default)]
pub(super) struct Running {
    parts: Mutex<HashMap<u64, Part>>,
}

/// What is kept of one partition.
#[derive(Default)]
struct Part {
    /// Moves on when a key of the partition changes or a link is lost: an
    /// answer read across a move is not kept.
    epoch: u64,
    active: Option<Kept<ActiveRead>>,
    attendance: Option<Kept<Vec<Attendance>>>,
    /// The meetings and instances the last read looked at: the keys the
    /// next read declares.
    meetings: Vec<Id>,
    instances: Vec<InstanceId>,
}

/// An answer kept, and for which clock and link.
struct Kept<T> {
    value: Arc<T>,
    /// The `now` it was read at.
    read_at: Millis,
    /// It holds while the clock is before this (`None`: for ever).
    until: Option<Millis>,
    /// The link whose tracking keeps it right.
    link: u64,
}

impl<T> Kept<T> {
    fn holds_at(&self, now: Millis) -> bool {
        self.read_at <= now && self.until.is_none_or(|until| now < until)
    }
}

/// One partition's running instances, as `meet_active` read them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActiveRead {
    /// The rows, by meeting id.
    pub rows: Vec<ActiveInstance>,
    /// The last id of the partition's log of transitions when they were
    /// read: WATCH ACTIVE follows the log after it.
    pub seen: StreamId,
}

/// A read of one partition begun: the partition's epoch then, and the
/// meetings and instances it declares.
struct Begun {
    epoch: u64,
    meetings: Vec<Id>,
    instances: Vec<InstanceId>,
}

/// What a read of one partition found, besides its answer.
struct Read {
    until: Option<Millis>,
    meetings: Vec<Id>,
    instances: Vec<InstanceId>,
    /// Tracked on this link: it may be kept if it declared everything it
    /// read.
    link: Option<u64>,
}

impl Running {
    fn parts(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Part>> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kept ACTIVE answer of `partition` at `now`, if it holds.
    fn active(&self, partition: u64, now: Millis) -> Option<Arc<ActiveRead>> {
        let parts = self.parts();
        let kept = parts.get(&partition)?.active.as_ref()?;
        kept.holds_at(now).then(|| kept.value.clone())
    }

    /// The kept ATTENDANCE answer of `partition` at `now`, if it holds.
    fn attendance(&self, partition: u64, now: Millis) -> Option<Arc<Vec<Attendance>>> {
        let parts = self.parts();
        let kept = parts.get(&partition)?.attendance.as_ref()?;
        kept.holds_at(now).then(|| kept.value.clone())
    }

    /// Before a read of `partition`: its epoch, and the meetings and
    /// instances to declare.
    fn before_read(&self, partition: u64) -> Begun {
        let mut parts = self.parts();
        let part = parts.entry(partition).or_default();
        Begun {
            epoch: part.epoch,
            meetings: part.meetings.clone(),
            instances: part.instances.clone(),
        }
    }

    /// After the read `begun`: remember what it found, and keep its answer
    /// (`store`) when it was tracked, declared every key it read and
    /// nothing changed meanwhile. Returns whether it was tracked but found
    /// keys it had not declared (read once more, it may be kept).
    fn after_read<T>(
        &self,
        partition: u64,
        begun: &Begun,
        now: Millis,
        read: &Read,
        value: Arc<T>,
        store: fn(&mut Part, Kept<T>),
    ) -> bool {
        let covered = covers(
            &begun.meetings,
            &begun.instances,
            &read.meetings,
            &read.instances,
        );
        let mut parts = self.parts();
        let part = parts.entry(partition).or_default();
        part.meetings.clone_from(&read.meetings);
        part.instances.clone_from(&read.instances);
        let link = read.link.filter(|_| covered);
        if let (Some(link), true) = (link, part.epoch == begun.epoch) {
            store(
                part,
                Kept {
                    value,
                    read_at: now,
                    until: read.until,
                    link,
                },
            );
        }
        read.link.is_some() && !covered
    }

    /// The partitions something is kept of, each with a key of theirs and
    /// the link that read it.
    fn kept(&self) -> Vec<(u64, String, u64)> {
        let parts = self.parts();
        let mut kept = Vec::new();
        for (p, part) in parts.iter() {
            let link = part.active.as_ref().map(|k| k.link);
            let link = link.or(part.attendance.as_ref().map(|k| k.link));
            if let Some(link) = link {
                kept.push((*p, Keys::active(*p), link));
            }
            if let (Some(a), Some(b)) = (&part.active, &part.attendance) {
                if a.link != b.link {
                    kept.push((*p, Keys::active(*p), b.link));
                }
            }
        }
        kept
    }

    /// Forget what is kept of `partition`.
    fn changed(&self, partition: u64) {
        let mut parts = self.parts();
        let part = parts.entry(partition).or_default();
        part.epoch += 1;
        part.active = None;
        part.attendance = None;
    }
}

impl Sink for Running {
    fn invalidated(&self, link: u64, keys: Option<&[String]>) {
        match keys {
            Some(keys) => {
                let partitions: BTreeSet<u64> =
                    keys.iter().filter_map(|k| Keys::partition_of(k)).collect();
                for p in partitions {
                    self.changed(p);
                }
            }
            None => self.lost(link),
        }
    }

    fn lost(&self, link: u64) {
        for part in self.parts().values_mut() {
            // a read under way on that link is not kept either
            part.epoch += 1;
            if part.active.as_ref().is_some_and(|k| k.link == link) {
                part.active = None;
            }
            if part.attendance.as_ref().is_some_and(|k| k.link == link) {
                part.attendance = None;
            }
        }
    }
}

/// A page of ACTIVE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePage {
    /// The rows: by partition (meeting id modulo the partition count),
    /// then meeting id.
    pub rows: Vec<ActiveInstance>,
    /// The meeting to go on after; `None` at the end.
    pub next: Option<Id>,
}

/// Where ATTENDANCE goes on: after meeting `meeting`'s row, or (`within`)
/// inside its instance `order` after the participant `user` who joined at
/// `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttendanceAfter {
    /// The meeting.
    pub meeting: Id,
    /// `(order, user, joined_at)`.
    pub within: Option<(Id, Id, Millis)>,
}

/// A page of ATTENDANCE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttendancePage {
    /// The rows, in ACTIVE's order; an instance cut by the page goes on in
    /// the next one.
    pub rows: Vec<Attendance>,
    /// Where to go on; `None` at the end.
    pub next: Option<AttendanceAfter>,
}

/// Whether participant `p` comes after the join position (`at`, `user`):
/// join time, then user id as a sorted set orders members (as strings).
pub fn after_position(p: &Participant, at: Millis, user: Id) -> bool {
    (p.joined_at, p.user.to_string()) > (at, user.to_string())
}

/// Partitions read at once when a page needs them.
const READ_AHEAD: usize = 16;

impl Store {
    /// Make what is kept as fresh as a read of Redis: after this, every
    /// change made before it was called has reached the cache, and an
    /// answer read on a link that no longer serves its partition is
    /// dropped.
    async fn fresh(&self) -> Result<(), StoreError> {
        let kept = self.running.kept();
        let keys: Vec<(String, u64)> = kept.iter().map(|(_, k, l)| (k.clone(), *l)).collect();
        let served = self.tracking.barrier(&keys).await?;
        for ((p, _, _), served) in kept.iter().zip(served) {
            if !served {
                self.running.changed(*p);
            }
        }
        Ok(())
    }

    /// The keys the read `begun` of `partition` declares: the partition's
    /// own, and those of the meetings and instances it names.
    fn declared(&self, partition: u64, begun: &Begun) -> Vec<String> {
        let mut keys = vec![
            Keys::active(partition),
            Keys::due(partition),
            Keys::transitions(partition),
        ];
        for m in &begun.meetings {
            keys.push(self.keys.meeting(*m));
            keys.push(self.keys.schedule(*m));
            keys.push(self.keys.upcoming(*m));
        }
        for i in &begun.instances {
            keys.push(self.keys.present(*i));
        }
        keys
    }

    /// One call of `function` on `partition`, tracked, declaring `keys`:
    /// its reply and the link that tracks it (`None`: not tracked). A
    /// failure of the tracked read is sent again as a plain call (which
    /// loads a lost library).
    async fn tracked_call(
        &self,
        function: &'static str,
        partition: u64,
        keys: &[String],
        args: &[&str],
    ) -> Result<(Fields, Option<u64>), StoreError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(function).arg(keys.len()).arg(keys).arg(args);
        let mut pipe = redis::pipe();
        cached(&mut pipe, cmd.clone());
        let mut untracked = redis::pipe();
        untracked.add_command(cmd);
        match self.tracking.query(&keys[0], &pipe, &untracked).await {
            Ok((mut values, link)) => {
                let value = values.pop().unwrap_or(Value::Nil);
                if let Value::ServerError(err) = value {
                    return Err(redis::RedisError::from(err).into());
                }
                Ok((Fields::new(function, value)?, link))
            }
            Err(StoreError::Unavailable(_)) | Err(StoreError::Internal(_)) => {
                let call = Store::record_call(function, &Keys::active(partition), args, false);
                Ok((self.run(call).await?, None))
            }
            Err(err) => Err(err),
        }
    }

    /// Read `partition`'s running instances at `now` (every page of
    /// them), kept when the read may be.
    async fn read_active(
        &self,
        partition: u64,
        now: Millis,
    ) -> Result<Arc<ActiveRead>, StoreError> {
        twice_if_undeclared(|| self.read_active_once(partition, now)).await
    }

    /// One read of `partition`'s running instances; whether it found keys
    /// it had not declared (it was then not kept).
    async fn read_active_once(
        &self,
        partition: u64,
        now: Millis,
    ) -> Result<(Arc<ActiveRead>, bool), StoreError> {
        const F: &str = "meet_active";
        let begun = self.running.before_read(partition);
        let declared = self.declared(partition, &begun);
        let now_arg = now.to_string();
        let limit = PAGE.to_string();
        let (mut f, mut link) = self
            .tracked_call(F, partition, &declared, &["", &limit, &now_arg])
            .await?;
        let mut value = ActiveRead::default();
        let mut until = None;
        let mut looked = Vec::new();
        loop {
            for row in f.array("rows")? {
                value.rows.push(active_row(row)?);
            }
            for m in f.array("meetings")? {
                looked.push(reply::id(F, m)?);
            }
            let page_until = f.optional("until")?.map(|v| reply::int(F, v)).transpose()?;
            until = earliest(until, page_until);
            if value.seen == StreamId::default() {
                value.seen = reply::text(F, f.take("seen")?)?
                    .parse()
                    .map_err(|e| StoreError::Internal(format!("unexpected reply from {F}: {e}")))?;
            }
            let Some(after) = f.optional("next")? else {
                break;
            };
            // more than one call holds: served, not kept
            link = None;
            let after = reply::text(F, after)?;
            f = self
                .run(Store::record_call(
                    F,
                    &Keys::active(partition),
                    &[&after, &limit, &now_arg],
                    false,
                ))
                .await?;
        }
        let read = Read {
            link,
            until,
            meetings: looked,
            instances: value.rows.iter().map(|r| r.instance.id).collect(),
        };
        let value = Arc::new(value);
        let undeclared = self.running.after_read(
            partition,
            &begun,
            now,
            &read,
            value.clone(),
            |part, kept| {
                part.active = Some(kept);
            },
        );
        Ok((value, undeclared))
    }

    /// Read `partition`'s attendance at `now` from the start, kept when the
    /// read may be; `None` when it takes more than one call (it is then
    /// read a page at a time, not kept).
    async fn read_attendance(
        &self,
        partition: u64,
        now: Millis,
    ) -> Result<Option<Arc<Vec<Attendance>>>, StoreError> {
        twice_if_undeclared(|| self.read_attendance_once(partition, now)).await
    }

    /// One read of `partition`'s attendance; whether it found keys it had
    /// not declared.
    async fn read_attendance_once(
        &self,
        partition: u64,
        now: Millis,
    ) -> Result<(Option<Arc<Vec<Attendance>>>, bool), StoreError> {
        const F: &str = "meet_attendance";
        let begun = self.running.before_read(partition);
        let declared = self.declared(partition, &begun);
        let now_arg = now.to_string();
        let budget = PAGE.to_string();
        let (mut f, link) = self
            .tracked_call(
                F,
                partition,
                &declared,
                &["", "", "", "", &budget, "packed", &now_arg],
            )
            .await?;
        if f.optional("next")?.is_some() {
            return Ok((None, false));
        }
        let rows = f
            .array("rows")?
            .into_iter()
            .map(attendance_row)
            .collect::<Result<Vec<_>, _>>()?;
        let looked = f
            .array("meetings")?
            .into_iter()
            .map(|m| reply::id(F, m))
            .collect::<Result<Vec<_>, _>>()?;
        let until = f.optional("until")?.map(|v| reply::int(F, v)).transpose()?;
        let read = Read {
            link,
            until,
            meetings: looked,
            instances: rows.iter().map(|r| r.instance).collect(),
        };
        let rows = Arc::new(rows);
        let undeclared =
            self.running
                .after_read(partition, &begun, now, &read, rows.clone(), |part, kept| {
                    part.attendance = Some(kept);
                });
        Ok((Some(rows), undeclared))
    }

    /// Each partition's running instances at `now`, from `from` on, at
    /// most `want` rows' worth: kept answers where they hold, the others
    /// read (`READ_AHEAD` at once). Stops once `enough` says the rows so
    /// far make a page.
    async fn active_parts(
        &self,
        from: u64,
        now: Millis,
        mut enough: impl FnMut(u64, &ActiveRead) -> bool,
    ) -> Result<(), StoreError> {
        let n = self.keys.partitions();
        let mut read: HashMap<u64, Arc<ActiveRead>> = HashMap::new();
        for p in from..n {
            let value = match read.remove(&p).or_else(|| self.running.active(p, now)) {
                Some(value) => value,
                None => {
                    let ahead: Vec<u64> = (p..n)
                        .filter(|q| self.running.active(*q, now).is_none())
                        .take(READ_AHEAD)
                        .collect();
                    let reads = ahead.iter().map(|q| self.read_active(*q, now));
                    for (q, value) in ahead
                        .iter()
                        .zip(futures_util::future::join_all(reads).await)
                    {
                        read.insert(*q, value?);
                    }
                    read.remove(&p).unwrap_or_default()
                }
            };
            if enough(p, &value) {
                break;
            }
        }
        Ok(())
    }

    /// A page of the running instances at the store's now, by partition
    /// then meeting id, after meeting `after`: at most `limit` rows.
    pub async fn active_page(
        &self,
        after: Option<Id>,
        limit: usize,
    ) -> Result<ActivePage, StoreError> {
        let now = self.now();
        self.fresh().await?;
        let limit = limit.max(1);
        let from = after.map_or(0, |m| self.keys.partition(m));
        let mut rows: Vec<ActiveInstance> = Vec::new();
        self.active_parts(from, now, |p, value| {
            rows.extend(
                value
                    .rows
                    .iter()
                    .filter(|r| p != from || after.is_none_or(|a| r.instance.id.meeting > a))
                    .take(limit + 1 - rows.len())
                    .cloned(),
            );
            rows.len() > limit
        })
        .await?;
        let next = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            rows[limit - 1].instance.id.meeting
        });
        Ok(ActivePage { rows, next })
    }

    /// Every running instance, by partition then meeting id (every page).
    pub async fn active(&self) -> Result<Vec<ActiveInstance>, StoreError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.active_page(after, PAGE).await?;
            all.extend(page.rows);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// What runs now in each partition, with where its log of transitions
    /// stood (WATCH ACTIVE's start), as fresh as a read of Redis.
    pub async fn running_now(&self) -> Result<Vec<(u64, Arc<ActiveRead>)>, StoreError> {
        let now = self.now();
        self.fresh().await?;
        let mut all = Vec::new();
        self.active_parts(0, now, |p, value| {
            all.push((p, Arc::new(value.clone())));
            false
        })
        .await?;
        Ok(all)
    }

    /// A page of ATTENDANCE at the store's now, after `after`: at most
    /// `limit` participants (an instance with nobody in it counts as one).
    pub async fn attendance_page(
        &self,
        after: Option<AttendanceAfter>,
        limit: usize,
    ) -> Result<AttendancePage, StoreError> {
        let now = self.now();
        self.fresh().await?;
        let limit = limit.max(1);
        let n = self.keys.partitions();
        let from = after.map_or(0, |a| self.keys.partition(a.meeting));
        let mut page = AttendancePage {
            rows: Vec::new(),
            next: None,
        };
        let mut room = limit;
        for p in from..n {
            // a partition's answer from the cache, read whole, or (too big
            // to keep) read a page at a time after the cursor
            let rows = match self.running.attendance(p, now) {
                Some(rows) => rows,
                None => match self.read_attendance(p, now).await? {
                    Some(rows) => rows,
                    None => {
                        // too big to keep: a call after the cursor, of
                        // at most the room left
                        let cursor = after.filter(|a| self.keys.partition(a.meeting) == p);
                        let (rows, next) = self.attendance_call(p, cursor, room, now).await?;
                        for row in rows {
                            room = room.saturating_sub(row.participants.len().max(1));
                            page.rows.push(row);
                        }
                        if next.is_some() {
                            page.next = next;
                            return Ok(page);
                        }
                        if room == 0 {
                            return self.attendance_end(page, p + 1, now).await;
                        }
                        continue;
                    }
                },
            };
            let cursor = after.filter(|a| self.keys.partition(a.meeting) == p);
            room = take_attendance(&mut page, &rows, cursor, room);
            if page.next.is_some() {
                return Ok(page);
            }
            if room == 0 {
                return self.attendance_end(page, p + 1, now).await;
            }
        }
        Ok(page)
    }

    /// A full page of ATTENDANCE ended at a row's end: `next` after its
    /// last meeting, unless no partition from `from` on runs anything.
    async fn attendance_end(
        &self,
        mut page: AttendancePage,
        from: u64,
        now: Millis,
    ) -> Result<AttendancePage, StoreError> {
        let mut more = false;
        self.active_parts(from, now, |_, value| {
            more = !value.rows.is_empty();
            more
        })
        .await?;
        if more {
            page.next = page.rows.last().map(|row| AttendanceAfter {
                meeting: row.instance.meeting,
                within: None,
            });
        }
        Ok(page)
    }

    /// One call of `meet_attendance` on `partition` after `cursor`, at
    /// most `budget` participants, not kept: its rows and where the
    /// partition goes on (`None`: its end).
    async fn attendance_call(
        &self,
        partition: u64,
        cursor: Option<AttendanceAfter>,
        budget: usize,
        now: Millis,
    ) -> Result<(Vec<Attendance>, Option<AttendanceAfter>), StoreError> {
        const F: &str = "meet_attendance";
        let (meeting, order, user, at) = match cursor {
            None => Default::default(),
            Some(AttendanceAfter {
                meeting,
                within: None,
            }) => (
                meeting.to_string(),
                String::new(),
                String::new(),
                String::new(),
            ),
            Some(AttendanceAfter {
                meeting,
                within: Some((order, user, at)),
            }) => (
                meeting.to_string(),
                order.to_string(),
                user.to_string(),
                at.to_string(),
            ),
        };
        let budget = budget.clamp(1, PAGE).to_string();
        let now = now.to_string();
        let mut f = self
            .run(Store::record_call(
                F,
                &Keys::active(partition),
                &[&meeting, &order, &user, &at, &budget, "packed", &now],
                false,
            ))
            .await?;
        let rows = f
            .array("rows")?
            .into_iter()
            .map(attendance_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match f.optional("next")? {
            None => None,
            Some(cursor) => {
                let parts = reply::array(F, cursor)?
                    .into_iter()
                    .map(|v| reply::text(F, v))
                    .collect::<Result<Vec<_>, _>>()?;
                let number = |s: &str| s.parse::<u64>().ok();
                match parts.as_slice() {
                    [m, o, u, t] if o.is_empty() => number(m).map(|meeting| AttendanceAfter {
                        meeting,
                        within: None,
                    }),
                    [m, o, u, t] => match (number(m), number(o), number(u), t.parse().ok()) {
                        (Some(meeting), Some(order), Some(user), Some(at)) => {
                            Some(AttendanceAfter {
                                meeting,
                                within: Some((order, user, at)),
                            })
                        }
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| {
                    StoreError::Internal(format!("unexpected reply from {F}: next {parts:?}"))
                })
                .map(Some)?
            }
        };
        Ok((rows, next))
    }

    /// For each running instance, when each current participant joined
    /// (every page).
    pub async fn attendance(&self) -> Result<Vec<Attendance>, StoreError> {
        let mut all: Vec<Attendance> = Vec::new();
        let mut after = None;
        loop {
            let page = self.attendance_page(after, PAGE).await?;
            for row in page.rows {
                // an instance split over two pages: the second goes on
                match all.last_mut() {
                    Some(last) if last.instance == row.instance => {
                        last.participants.extend(row.participants);
                    }
                    _ => all.push(row),
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }
}

/// A read by `once`, and once more when it found keys it had not declared
/// (`once` answers that too): the second declares them, so that the answer
/// is kept from this request on.
async fn twice_if_undeclared<T, R>(once: impl Fn() -> R) -> Result<T, StoreError>
where
    R: Future<Output = Result<(T, bool), StoreError>>,
{
    let (value, undeclared) = once().await?;
    if !undeclared {
        return Ok(value);
    }
    Ok(once().await?.0)
}

/// Whether a read that declared `meetings` and `instances` declared every
/// key it read (it looked at `looked` and listed `found`).
fn covers(meetings: &[Id], instances: &[InstanceId], looked: &[Id], found: &[InstanceId]) -> bool {
    looked.iter().all(|m| meetings.contains(m)) && found.iter().all(|i| instances.contains(i))
}

fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Add to `page` the rows of a partition after `cursor` (when it is in
/// that partition), up to `room` participants; an instance with nobody
/// counts as one. Sets `next` when the room ran out before the rows did.
/// Returns the room left.
fn take_attendance(
    page: &mut AttendancePage,
    rows: &[Attendance],
    cursor: Option<AttendanceAfter>,
    mut room: usize,
) -> usize {
    for row in rows {
        let mut participants: &[Participant] = &row.participants;
        if let Some(cursor) = cursor {
            if row.instance.meeting < cursor.meeting {
                continue;
            }
            if row.instance.meeting == cursor.meeting {
                match cursor.within {
                    None => continue,
                    Some((order, user, at)) if order == row.instance.order => {
                        let skip = participants
                            .iter()
                            .take_while(|p| !after_position(p, at, user))
                            .count();
                        participants = &participants[skip..];
                        if participants.is_empty() {
                            continue;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if room == 0 {
            // more rows than room: go on after the last row taken
            page.next = page.rows.last().map(|last| AttendanceAfter {
                meeting: last.instance.meeting,
                within: None,
            });
            return 0;
        }
        let taken = participants.len().min(room);
        page.rows.push(Attendance {
            instance: row.instance,
            title: row.title.clone(),
            participants: participants[..taken].to_vec(),
        });
        room -= taken.max(1);
        if taken < participants.len() {
            let last = participants[taken - 1];
            page.next = Some(AttendanceAfter {
                meeting: row.instance.meeting,
                within: Some((row.instance.order, last.user, last.joined_at)),
            });
            return 0;
        }
    }
    room
}

/// A row of meet_active: `{meeting, order, title, description, public,
/// from, to, participants}`.
fn active_row(row: Value) -> Result<ActiveInstance, StoreError> {
    const F: &str = "meet_active";
    let mut row = reply::array(F, row)?.into_iter();
    let mut next = || row.next().unwrap_or_default();
    let meeting = reply::id(F, next())?;
    let order = reply::id(F, next())?;
    let title = reply::text(F, next())?;
    let description = reply::text(F, next())?;
    let public = reply::text(F, next())? == "true";
    let from = reply::int(F, next())?;
    let to = reply::int(F, next())?;
    let participants = u64::try_from(reply::int(F, next())?).unwrap_or(0);
    Ok(ActiveInstance {
        instance: Instance {
            id: InstanceId::new(meeting, order),
            from,
            to,
            state: InstanceState::Active,
        },
        title,
        description,
        public,
        participants,
    })
}

/// A row of meet_attendance: `{meeting, order, title, {user, joined_at...}}`.
fn attendance_row(row: Value) -> Result<Attendance, StoreError> {
    const F: &str = "meet_attendance";
    let mut row = reply::array(F, row)?.into_iter();
    let mut next = || row.next().unwrap_or_default();
    let meeting = reply::id(F, next())?;
    let order = reply::id(F, next())?;
    let title = reply::text(F, next())?;
    let participants = reply::pairs(F, next())?
        .into_iter()
        .map(|(user, joined_at)| Participant { user, joined_at })
        .collect();
    Ok(Attendance {
        instance: InstanceId::new(meeting, order),
        title,
        participants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(meeting: Id, order: Id, users: &[(Id, Millis)]) -> Attendance {
        Attendance {
            instance: InstanceId::new(meeting, order),
            title: format!("m{meeting}"),
            participants: users
                .iter()
                .map(|(user, joined_at)| Participant {
                    user: *user,
                    joined_at: *joined_at,
                })
                .collect(),
        }
    }

    #[test]
    fn join_positions_order_as_the_set_does() {
        let p = |user, joined_at| Participant { user, joined_at };
        assert!(after_position(&p(2, 11), 10, 9));
        assert!(!after_position(&p(9, 10), 10, 9));
        // one millisecond: "10" sorts before "9"
        assert!(after_position(&p(9, 10), 10, 10));
        assert!(!after_position(&p(10, 10), 10, 9));
    }

    #[test]
    fn attendance_pages_cut_inside_a_row_and_go_on_by_position() {
        let rows = [
            row(1, 1, &[(5, 10), (6, 11), (7, 12)]),
            row(3, 2, &[]),
            row(5, 1, &[(1, 20)]),
        ];
        let mut page = AttendancePage {
            rows: Vec::new(),
            next: None,
        };
        assert_eq!(take_attendance(&mut page, &rows, None, 2), 0);
        let next = page.next.expect("cut");
        assert_eq!(next.within, Some((1, 6, 11)));
        assert_eq!(page.rows[0].participants.len(), 2);
        // user 6 left before the next page: the position still holds
        let after_leave = [
            row(1, 1, &[(5, 10), (7, 12)]),
            row(3, 2, &[]),
            row(5, 1, &[(1, 20)]),
        ];
        let mut second = AttendancePage {
            rows: Vec::new(),
            next: None,
        };
        let left = take_attendance(&mut second, &after_leave, Some(next), 10);
        let shown: Vec<(InstanceId, Vec<Id>)> = second
            .rows
            .iter()
            .map(|r| (r.instance, r.participants.iter().map(|p| p.user).collect()))
            .collect();
        assert_eq!(
            shown,
            [
                (InstanceId::new(1, 1), vec![7]),
                (InstanceId::new(3, 2), vec![]),
                (InstanceId::new(5, 1), vec![1]),
            ]
        );
        assert_eq!(left, 7);
        assert_eq!(second.next, None);
    }

    #[test]
    fn a_cursor_into_an_instance_that_ended_starts_the_new_one_from_its_start() {
        let rows = [row(1, 2, &[(5, 10)])];
        let mut page = AttendancePage {
            rows: Vec::new(),
            next: None,
        };
        let cursor = AttendanceAfter {
            meeting: 1,
            within: Some((1, 9, 50)),
        };
        take_attendance(&mut page, &rows, Some(cursor), 10);
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.rows[0].participants.len(), 1);
    }
}
