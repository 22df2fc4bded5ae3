//! The Lua Functions library `meetingd`, assembled from `lua/` at build time.
//!
//! The pieces are concatenated in a fixed order (helpers first, then one file
//! per operation) into one `#!lua name=meetingd` chunk. The version that
//! `meet_version` returns is the crate version plus a digest of the Lua, so a
//! daemon whose Lua differs from the loaded library replaces it even when the
//! crate version did not change.

use std::sync::LazyLock;

/// The operation files, in load order. Helpers come first: every operation
/// uses them.
const BODY: &str = concat!(
    include_str!("../../lua/helpers.lua"),
    include_str!("../../lua/version.lua"),
    include_str!("../../lua/layout.lua"),
    include_str!("../../lua/user_set.lua"),
    include_str!("../../lua/user_get.lua"),
    include_str!("../../lua/meeting_set.lua"),
    include_str!("../../lua/meeting_get.lua"),
    include_str!("../../lua/audience_add.lua"),
    include_str!("../../lua/audience_del.lua"),
    include_str!("../../lua/instance_set.lua"),
    include_str!("../../lua/current.lua"),
    include_str!("../../lua/join.lua"),
    include_str!("../../lua/leave.lua"),
    include_str!("../../lua/post.lua"),
    include_str!("../../lua/participants.lua"),
    include_str!("../../lua/active.lua"),
    include_str!("../../lua/instance.lua"),
    include_str!("../../lua/attendance.lua"),
    include_str!("../../lua/messages.lua"),
    include_str!("../../lua/events.lua"),
    include_str!("../../lua/feed.lua"),
    include_str!("../../lua/end.lua"),
    include_str!("../../lua/due.lua"),
    include_str!("../../lua/tick.lua"),
);

/// The assembled library and its version.
pub struct Library {
    /// What `meet_version` answers: `<crate version>+<digest>`.
    pub version: String,
    /// The whole source, ready for `FUNCTION LOAD REPLACE`.
    pub source: String,
}

static LIBRARY: LazyLock<Library> = LazyLock::new(|| {
    let version = format!(
        "{}+{:016x}",
        env!("CARGO_PKG_VERSION"),
        fnv1a(BODY.as_bytes())
    );
    let source = format!("#!lua name=meetingd\nlocal VERSION = '{version}'\n{BODY}");
    Library { version, source }
});

/// The library this binary carries.
pub fn library() -> &'static Library {
    &LIBRARY
}

/// FNV-1a, 64 bits: a stable digest of the Lua (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
