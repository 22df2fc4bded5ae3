//! The key layout: every Redis key meetingd uses, and the hash tag that
//! puts it in its Redis Cluster slot.
//!
//! A meeting belongs to partition `meeting mod P`; all of its keys, and the
//! partition's indexes, share the tag `{p<partition>}`, so one Lua call can
//! touch a meeting and the indexes atomically, on one node. A user has a tag
//! of its own, `{u<user>}`. docs/internals.md's key layout table describes each key.
//! The Lua library checks the names it is given against the same layout.

use super::types::{Id, InstanceId};

/// The number of partitions of new data when none is configured: spread
/// within 1.25× of even over up to 6 masters, for under half a millisecond
/// more per ACTIVE than 16 (BENCHMARKS.md, "Partitions").
pub const DEFAULT_PARTITIONS: u64 = 64;

/// The consumer group of every outbox ([`Keys::outbox`]).
pub const OUTBOX_GROUP: &str = "archive";

/// Builds key names for a given number of partitions.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    /// P: how many partitions meetings are spread over. Fixed for the life
    /// of the data: a meeting's keys are named after its partition.
    partitions: u64,
}

impl Keys {
    /// A layout with `partitions` partitions (at least 1).
    pub fn new(partitions: u64) -> Self {
        Keys {
            partitions: partitions.max(1),
        }
    }

    /// How many partitions there are.
    pub fn partitions(&self) -> u64 {
        self.partitions
    }

    /// The partition of a meeting.
    pub fn partition(&self, meeting: Id) -> u64 {
        meeting % self.partitions
    }

    fn tag(&self, meeting: Id) -> String {
        format!("meetingd:{{p{}}}", self.partition(meeting))
    }

    /// The number of partitions the data was laid out with (a string).
    pub fn layout() -> String {
        "meetingd:{layout}:partitions".to_string()
    }

    /// The user's hash: name, age, gender, email.
    pub fn user(user: Id) -> String {
        format!("meetingd:{{u{user}}}:user")
    }

    /// The user a user key belongs to (`None` for any other key).
    pub fn user_of(key: &str) -> Option<Id> {
        key.strip_prefix("meetingd:{u")?
            .strip_suffix("}:user")?
            .parse()
            .ok()
    }

    /// The partition's sorted set of instances by due time.
    pub fn due(partition: u64) -> String {
        format!("meetingd:{{p{partition}}}:due")
    }

    /// The partition's wake stream: an entry wakes the daemon's WATCH
    /// reader of the partition (a few entries kept).
    pub fn wake(partition: u64) -> String {
        format!("meetingd:{{p{partition}}}:wake")
    }

    /// The partition's meetings (MEETINGS' index), each scored by its id.
    pub fn meetings(partition: u64) -> String {
        format!("meetingd:{{p{partition}}}:meetings")
    }

    /// The users `U` with `U mod P` = `partition` (USERS' index), each
    /// scored by its id. Written by the daemon before the user's hash.
    pub fn users(partition: u64) -> String {
        format!("meetingd:{{p{partition}}}:users")
    }

    /// The user index of a user's partition.
    pub fn user_index(&self, user: Id) -> String {
        Keys::users(user % self.partitions)
    }

    /// Set once the listings' indexes hold everything stored before them
    /// (the start-up backfill of older data, or a repartition, is done).
    pub fn indexed() -> String {
        "meetingd:{layout}:indexed".to_string()
    }

    /// The partition's sorted set of active instances, scored by meeting.
    pub fn active(partition: u64) -> String {
        format!("meetingd:{{p{partition}}}:active")
    }

    /// The partition's log of transitions: every start and end of its
    /// instances (a stream; WATCH ACTIVE fills gaps from it).
    pub fn transitions(partition: u64) -> String {
        format!("meetingd:{{p{partition}}}:transitions")
    }

    /// The partition a partition-tagged key (`meetingd:{p<P>}:...`)
    /// belongs to (`None` for any other key).
    pub fn partition_of(key: &str) -> Option<u64> {
        key.strip_prefix("meetingd:{p")?
            .split_once('}')?
            .0
            .parse()
            .ok()
    }

    /// The partition's outbox: what the archiver is to copy into the
    /// database, read through the consumer group [`OUTBOX_GROUP`]. Its
    /// existence turns archiving on for the partition (the library writes
    /// to it only then).
    pub fn outbox(partition: u64) -> String {
        format!("meetingd:{{p{partition}}}:outbox")
    }

    /// The meeting's hash: title, description, public, and `live` while
    /// one of its instances runs. The one key every meeting function of
    /// the library gets: it builds the others from its tag.
    pub fn meeting(&self, meeting: Id) -> String {
        format!("{}:meeting:{meeting}", self.tag(meeting))
    }

    /// The meeting's audience: a sorted set of lower-cased e-mails.
    pub fn audience(&self, meeting: Id) -> String {
        format!("{}:audience:{meeting}", self.tag(meeting))
    }

    /// The meeting's order ids, sorted.
    pub fn orders(&self, meeting: Id) -> String {
        format!("{}:orders:{meeting}", self.tag(meeting))
    }

    /// The meeting's instances: window, state and id sequence per order.
    pub fn schedule(&self, meeting: Id) -> String {
        format!("{}:schedule:{meeting}", self.tag(meeting))
    }

    /// The meeting's scheduled instances: order -> from (a sorted set), so
    /// a call finds the windows that opened since the last tick.
    pub fn upcoming(&self, meeting: Id) -> String {
        format!("{}:upcoming:{meeting}", self.tag(meeting))
    }

    /// The instance's participants: user -> join time.
    pub fn present(&self, instance: InstanceId) -> String {
        format!("{}:present:{instance}", self.tag(instance.meeting))
    }

    /// The instance's event log (a stream).
    pub fn events(&self, instance: InstanceId) -> String {
        format!("{}:events:{instance}", self.tag(instance.meeting))
    }

    /// The instance's chat (a stream).
    pub fn chat(&self, instance: InstanceId) -> String {
        format!("{}:chat:{instance}", self.tag(instance.meeting))
    }

    /// The ids of the instance's messages posted with a key (`POST ... ID`),
    /// by `<user>:<key>` (a hash).
    pub fn posted(&self, instance: InstanceId) -> String {
        format!("{}:posted:{instance}", self.tag(instance.meeting))
    }

    /// One user's messages in the instance's chat, by id (a stream).
    pub fn chat_by(&self, instance: InstanceId, user: Id) -> String {
        format!("{}:chat:{instance}:by:{user}", self.tag(instance.meeting))
    }
}
