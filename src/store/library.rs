//! The Lua Functions library `meetingd`, assembled from `lua/` at build time.
//!
//! The pieces are concatenated in a fixed order (the includes first, then
//! one file per operation) into one `#!lua name=meetingd` chunk, behind a
//! header the daemon writes: the version and the number of partitions,
//! which the library checks every meeting key against. The version that
//! `meet_version` returns is the crate version, a digest of the Lua, the
//! partition count and the API level: `0.4.1+<digest>/p16/api5`.
//!
//! The API level names what the daemon may call: the functions, their
//! arguments, their replies and the data layout. It changes when any of
//! them changes in a way an older daemon could not use; a release that only
//! fixes or speeds up the Lua keeps it. So during a rolling upgrade a
//! daemon finding a newer library of its own API level serves with it, and
//! only loads its own over an older one (see [`Loaded::verdict`]).

/// The shared helpers, then the operations, in load order.
const BODY: &str = concat!(
    include_str!("../../lua/include/errors.lua"),
    include_str!("../../lua/include/args.lua"),
    include_str!("../../lua/include/keys.lua"),
    include_str!("../../lua/include/watch.lua"),
    include_str!("../../lua/include/instances.lua"),
    include_str!("../../lua/include/pages.lua"),
    include_str!("../../lua/version.lua"),
    include_str!("../../lua/layout.lua"),
    include_str!("../../lua/user_set.lua"),
    include_str!("../../lua/user_get.lua"),
    include_str!("../../lua/user_index.lua"),
    include_str!("../../lua/meeting_set.lua"),
    include_str!("../../lua/meeting_get.lua"),
    include_str!("../../lua/ids.lua"),
    include_str!("../../lua/meetings.lua"),
    include_str!("../../lua/audience.lua"),
    include_str!("../../lua/instance_set.lua"),
    include_str!("../../lua/current.lua"),
    include_str!("../../lua/instance_get.lua"),
    include_str!("../../lua/join.lua"),
    include_str!("../../lua/leave.lua"),
    include_str!("../../lua/post.lua"),
    include_str!("../../lua/participants.lua"),
    include_str!("../../lua/active.lua"),
    include_str!("../../lua/attendance.lua"),
    include_str!("../../lua/messages.lua"),
    include_str!("../../lua/events.lua"),
    include_str!("../../lua/feed.lua"),
    include_str!("../../lua/transitions.lua"),
    include_str!("../../lua/end.lua"),
    include_str!("../../lua/tick.lua"),
    include_str!("../../lua/upgrade.lua"),
    include_str!("../../lua/archive.lua"),
);

/// What the daemon may call, in the library's terms: changed when a
/// function, its arguments or replies, or the data layout change in a way
/// an older daemon could not use.
///
/// Level 3: the listings' indexes (MEETINGS, USERS). `meet_meeting_set`
/// keeps the meeting index itself, but the user index is the daemon's to
/// keep (`meet_user_index` before each `meet_user_set`, another tag): a
/// daemon of level 2 serving with this library would write users no
/// listing shows, so it must stop rather than serve with it.
///
/// Level 4: `meet_user_index` takes the user's values too and queues them
/// in the partition's outbox (`k=user`) for the archive; a daemon of level
/// 3 would archive no user it writes, and its archiver would skip (and
/// drop) the entries of the others.
///
/// Level 5: an instance's event log opens with a start entry (t=4) and
/// closes with an end entry (t=5, also for a missed window), which a
/// daemon of level 4 cannot read (EVENTS, WATCH, the archive); starts and
/// ends go to the partition's log of transitions (`meet_transitions`,
/// WATCH ACTIVE); `meet_active` and `meet_attendance` answer how long
/// their answer holds and what they read (the daemon's cache of them),
/// and `meet_attendance` and `meet_participants` page by join position.
pub const API_LEVEL: u32 = 5;

/// The assembled library for one partition count, and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// What `meet_version` answers: `<crate version>+<digest>/p<partitions>`.
    pub version: String,
    /// The whole source, ready for `FUNCTION LOAD REPLACE`.
    pub source: String,
}

impl Library {
    /// The library for data laid out over `partitions` partitions.
    pub fn new(partitions: u64) -> Library {
        let version = format!(
            "{}+{:016x}/p{partitions}/api{API_LEVEL}",
            env!("CARGO_PKG_VERSION"),
            fnv1a(BODY.as_bytes())
        );
        let source = format!(
            "#!lua name=meetingd\nlocal VERSION = '{version}'\nlocal PARTITIONS = {partitions}\n{BODY}"
        );
        Library { version, source }
    }
}

/// A library version as `meet_version` answers it, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The whole version string.
    pub version: String,
    /// The crate version (`0.4.1`) as numbers.
    release: Vec<u64>,
    /// The API level (1 for versions before levels were named).
    api: u32,
    /// The partition count it was built for, when the version names it.
    partitions: Option<u64>,
}

/// What a daemon does about the library it finds loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ours: nothing to do.
    Same,
    /// Older, or the same release built otherwise: load ours over it.
    Replace,
    /// Newer, of our API level: serve with it.
    Newer,
    /// Newer, of another API level or partition count: this daemon
    /// cannot serve with it.
    Incompatible,
}

impl Loaded {
    /// A version string as `meet_version` answers it (any form).
    pub fn parse(version: &str) -> Loaded {
        let (release, rest) = version.split_once('+').unwrap_or((version, ""));
        let api = rest
            .rsplit('/')
            .find_map(|part| part.strip_prefix("api"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let partitions = rest
            .split('/')
            .find_map(|part| part.strip_prefix('p'))
            .and_then(|n| n.parse().ok());
        Loaded {
            version: version.to_string(),
            release: release.split('.').map(|n| n.parse().unwrap_or(0)).collect(),
            api,
            partitions,
        }
    }

    /// What a daemon carrying `ours` does about this loaded library.
    pub fn verdict(&self, ours: &Library) -> Verdict {
        if self.version == ours.version {
            return Verdict::Same;
        }
        let ours = Loaded::parse(&ours.version);
        if self.release <= ours.release {
            return Verdict::Replace;
        }
        if self.api == ours.api && self.partitions == ours.partitions {
            Verdict::Newer
        } else {
            Verdict::Incompatible
        }
    }
}

/// FNV-1a, 64 bits: a stable digest of the Lua (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_loads_only_over_an_older_library() {
        let ours = Library::new(16);
        let verdict = |version: &str| Loaded::parse(version).verdict(&ours);
        assert_eq!(verdict(&ours.version), Verdict::Same);
        // 0.1 named no API level; an older release, or ours built otherwise
        assert_eq!(verdict("0.1.0+8df38f33de95be1b"), Verdict::Replace);
        assert_eq!(verdict("0.1.9+00/p16/api2"), Verdict::Replace);
        let same_release = format!(
            "{}+0000000000000000/p16/api{API_LEVEL}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(verdict(&same_release), Verdict::Replace);
        // newer: served with when it speaks our API level
        assert_eq!(
            verdict(&format!("99.0.0+ab/p16/api{API_LEVEL}")),
            Verdict::Newer
        );
        assert_eq!(
            verdict(&format!("99.1.0+ab/p16/api{}", API_LEVEL + 1)),
            Verdict::Incompatible
        );
        // newer, but built for another partition count: not ours to serve
        assert_eq!(
            verdict(&format!("99.0.0+ab/p64/api{API_LEVEL}")),
            Verdict::Incompatible
        );
        assert_eq!(verdict("0.1.9+00/p64/api2"), Verdict::Replace);
    }
}
