//! What the store's typed methods take and return.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::clock::Millis;

/// A user, meeting or order id: a positive integer up to 2^53-1.
pub type Id = u64;

/// The largest id: 2^53-1, the largest integer a double (a Lua number, a
/// JSON number in most clients) holds exactly.
pub const MAX_ID: Id = (1 << 53) - 1;

/// The latest time the library stores (ms since the epoch): the last
/// millisecond of year 9999, the last one RFC 3339 replies can write.
pub const MAX_TIME: i64 = 253_402_300_799_999;

/// An instance's address, `M/O`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    /// The meeting.
    pub meeting: Id,
    /// The order id within the meeting.
    pub order: Id,
}

impl InstanceId {
    /// `meeting/order`.
    pub fn new(meeting: Id, order: Id) -> Self {
        InstanceId { meeting, order }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.meeting, self.order)
    }
}

impl FromStr for InstanceId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (meeting, order) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not M/O"))?;
        let id = |part: &str| {
            part.parse::<Id>()
                .ok()
                .filter(|id| (1..=MAX_ID).contains(id))
                .ok_or_else(|| format!("{s:?} is not M/O"))
        };
        Ok(InstanceId::new(id(meeting)?, id(order)?))
    }
}

/// What a command names: one instance, or a meeting's active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceRef {
    /// `M`: the meeting's active instance, whichever it is.
    Current(Id),
    /// `M/O`.
    Exact(InstanceId),
}

impl InstanceRef {
    /// The meeting it is an instance of.
    pub fn meeting(self) -> Id {
        match self {
            InstanceRef::Current(meeting) => meeting,
            InstanceRef::Exact(instance) => instance.meeting,
        }
    }
}

impl From<InstanceId> for InstanceRef {
    fn from(instance: InstanceId) -> Self {
        InstanceRef::Exact(instance)
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: Id,
    /// Display name.
    pub name: String,
    /// Age in years, 0..=150.
    pub age: u8,
    /// As the user gives it.
    pub gender: String,
    /// Lower-cased; decides admission to private meetings.
    pub email: String,
}

/// A meeting's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meeting {
    /// The meeting's id.
    pub id: Id,
    /// Title.
    pub title: String,
    /// Description (may be empty).
    pub description: String,
    /// Public: anybody may join. Private: only the audience.
    pub public: bool,
}

/// The state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Waiting for its window.
    Scheduled,
    /// Open: users may join, leave and post.
    Active,
    /// Over; its chat and events are kept.
    Ended,
}

impl InstanceState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Scheduled => "scheduled",
            InstanceState::Active => "active",
            InstanceState::Ended => "ended",
        }
    }
}

impl FromStr for InstanceState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scheduled" => Ok(InstanceState::Scheduled),
            "active" => Ok(InstanceState::Active),
            "ended" => Ok(InstanceState::Ended),
            _ => Err(format!("unknown instance state {s:?}")),
        }
    }
}

/// An instance and its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `M/O`.
    pub id: InstanceId,
    /// Start of the window (inclusive).
    pub from: Millis,
    /// End of the window (exclusive).
    pub to: Millis,
    /// Where it is in its life.
    pub state: InstanceState,
}

/// A meeting with its audience and instances (MEETING GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingDetail {
    /// The meeting's fields.
    pub meeting: Meeting,
    /// The first 1000 e-mails of the audience, in order.
    pub audience: Vec<String>,
    /// How many e-mails the audience has in all.
    pub audience_total: u64,
    /// The first 1000 instances, by order.
    pub instances: Vec<Instance>,
    /// How many instances the meeting has in all.
    pub instances_total: u64,
}

/// A meeting's audience after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// How many e-mails the call added or removed.
    pub changed: u64,
    /// The first 1000 e-mails, in order.
    pub emails: Vec<String>,
    /// How many there are in all.
    pub total: u64,
}

/// A join that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Where.
    pub instance: InstanceId,
    /// Who.
    pub user: Id,
    /// When.
    pub joined_at: Millis,
    /// The join event's id.
    pub event_id: String,
    /// A repeated key (JOIN `ID`): nothing was written, this is the first.
    pub duplicate: bool,
}

/// A leave that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// Where.
    pub instance: InstanceId,
    /// Who.
    pub user: Id,
    /// When the user left.
    pub left_at: Millis,
    /// The leave event's id.
    pub event_id: String,
    /// A repeated key (LEAVE `ID`): nothing was written, this is the first.
    pub duplicate: bool,
}

/// A chat message that was posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The message's id (shared sequence with the instance's events).
    pub id: String,
    /// Where.
    pub instance: InstanceId,
    /// Who.
    pub user: Id,
    /// When.
    pub at: Millis,
    /// A repeat of a key posted before: nothing was stored, and this is
    /// the first message.
    pub duplicate: bool,
}

/// A current participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Participant {
    /// Who.
    pub user: Id,
    /// Since when.
    pub joined_at: Millis,
}

/// A row of ACTIVE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveInstance {
    /// The instance and its window.
    pub instance: Instance,
    /// The meeting's title.
    pub title: String,
    /// The meeting's description.
    pub description: String,
    /// Whether the meeting is public.
    pub public: bool,
    /// How many are in it now.
    pub participants: u64,
}

/// A row of ATTENDANCE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    /// Which instance.
    pub instance: InstanceId,
    /// The meeting's title.
    pub title: String,
    /// Everybody in it, in join order.
    pub participants: Vec<Participant>,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: String,
    /// Who posted it.
    pub user: Id,
    /// What they said.
    pub text: String,
    /// When.
    pub at: Millis,
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The user joined (code 1).
    Join,
    /// The user left (code 2).
    Leave,
    /// The instance ended with the user in it (code 3).
    Timeout,
    /// The instance started (code 4): the first entry of its log.
    Start,
    /// The instance ended (code 5), before the timeouts of those still in.
    End,
}

impl EventKind {
    /// The numeric code of the spec: 1 to 5.
    pub fn code(self) -> u8 {
        match self {
            EventKind::Join => 1,
            EventKind::Leave => 2,
            EventKind::Timeout => 3,
            EventKind::Start => 4,
            EventKind::End => 5,
        }
    }

    /// `join`, `leave`, `timeout`, `start`, `end`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::Timeout => "timeout",
            EventKind::Start => "start",
            EventKind::End => "end",
        }
    }

    /// The kind of a numeric code.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(EventKind::Join),
            2 => Some(EventKind::Leave),
            3 => Some(EventKind::Timeout),
            4 => Some(EventKind::Start),
            5 => Some(EventKind::End),
            _ => None,
        }
    }

    /// Whether the event is the instance's (a start or an end), not a
    /// user's.
    pub fn is_transition(self) -> bool {
        matches!(self, EventKind::Start | EventKind::End)
    }
}

/// Why an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its `to` came.
    Scheduled,
    /// A window of a higher order of its meeting opened.
    Preempted,
    /// By hand: END, or its `to` moved to now or before.
    Ended,
    /// Its window passed with nothing to start it: it never ran in the
    /// store (no start entry).
    Missed,
}

impl EndReason {
    /// As stored and shown: `scheduled`, `preempted`, `ended`, `missed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Scheduled => "scheduled",
            EndReason::Preempted => "preempted",
            EndReason::Ended => "ended",
            EndReason::Missed => "missed",
        }
    }

    /// The reason a stored word names.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "scheduled" => Some(EndReason::Scheduled),
            "preempted" => Some(EndReason::Preempted),
            "ended" => Some(EndReason::Ended),
            "missed" => Some(EndReason::Missed),
            _ => None,
        }
    }
}

/// An entry of an instance's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its id: chronological within the instance.
    pub id: String,
    /// Whose event (`None` for a start or an end).
    pub user: Option<Id>,
    /// Join, leave, timeout, start or end.
    pub kind: EventKind,
    /// When it happened; for a timeout or an end, when the instance
    /// ended; for a start, when it started by the clock.
    pub at: Millis,
    /// A timeout's or an end's instance's scheduled end.
    pub scheduled_end: Option<Millis>,
    /// When a timeout, a start or an end was applied (by a request or a
    /// tick): its id's time.
    pub processed_at: Option<Millis>,
    /// Why an end ended.
    pub reason: Option<EndReason>,
}

/// A page of a chronological list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries, oldest first.
    pub items: Vec<T>,
    /// What to pass as `after` for the next page; `None` at the end.
    pub next: Option<String>,
}

/// An instance ended by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Which.
    pub instance: InstanceId,
    /// When it ended.
    pub ended_at: Millis,
    /// Who was in it, each now with a timeout event.
    pub timed_out: Vec<Id>,
}

/// What one tick step (one meet_tick call) did in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickStep {
    /// Instances that became active.
    pub activated: Vec<InstanceId>,
    /// Instances that ended (at their scheduled end or pre-empted).
    pub ended: Vec<InstanceId>,
    /// Instances whose whole window passed while nothing ran: ended
    /// without events.
    pub missed: Vec<InstanceId>,
    /// Timeout events written.
    pub timeouts: u64,
    /// Due instances looked at.
    pub handled: u64,
    /// Whether transitions are still due in the partition.
    pub more: bool,
}

/// What a whole tick did, over every partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Instances that became active.
    pub activated: Vec<InstanceId>,
    /// Instances that ended.
    pub ended: Vec<InstanceId>,
    /// Instances ended without events (their window passed unseen).
    pub missed: Vec<InstanceId>,
    /// Timeout events written.
    pub timeouts: u64,
    /// meet_tick calls made.
    pub steps: u64,
}
