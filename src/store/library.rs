//! The Lua Functions library `meetingd`, assembled from `lua/` at build time.
//!
//! The pieces are concatenated in a fixed order (the includes first, then
//! one file per operation) into one `#!lua name=meetingd` chunk, behind a
//! header the daemon writes: the version and the number of partitions,
//! which the library checks every meeting key against. The version that
//! `meet_version` returns is the crate version, a digest of the Lua and the
//! partition count, so a daemon whose library differs in any of them from
//! the loaded one replaces it.

/// The shared helpers, then the operations, in load order.
const BODY: &str = concat!(
    include_str!("../../lua/include/errors.lua"),
    include_str!("../../lua/include/args.lua"),
    include_str!("../../lua/include/keys.lua"),
    include_str!("../../lua/include/instances.lua"),
    include_str!("../../lua/include/pages.lua"),
    include_str!("../../lua/version.lua"),
    include_str!("../../lua/layout.lua"),
    include_str!("../../lua/user_set.lua"),
    include_str!("../../lua/user_get.lua"),
    include_str!("../../lua/meeting_set.lua"),
    include_str!("../../lua/meeting_get.lua"),
    include_str!("../../lua/audience.lua"),
    include_str!("../../lua/instance_set.lua"),
    include_str!("../../lua/current.lua"),
    include_str!("../../lua/join.lua"),
    include_str!("../../lua/leave.lua"),
    include_str!("../../lua/post.lua"),
    include_str!("../../lua/participants.lua"),
    include_str!("../../lua/active.lua"),
    include_str!("../../lua/attendance.lua"),
    include_str!("../../lua/messages.lua"),
    include_str!("../../lua/events.lua"),
    include_str!("../../lua/feed.lua"),
    include_str!("../../lua/end.lua"),
    include_str!("../../lua/tick.lua"),
    include_str!("../../lua/upgrade.lua"),
);

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
            "{}+{:016x}/p{partitions}",
            env!("CARGO_PKG_VERSION"),
            fnv1a(BODY.as_bytes())
        );
        let source = format!(
            "#!lua name=meetingd\nlocal VERSION = '{version}'\nlocal PARTITIONS = {partitions}\n{BODY}"
        );
        Library { version, source }
    }
}

/// FNV-1a, 64 bits: a stable digest of the Lua (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
