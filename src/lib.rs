//! meetingd: meeting presence on Redis.
//!
//! Every domain rule runs inside Redis as one call of a Lua function (the
//! Functions library in `lua/`), so each operation is atomic and `redis-cli`
//! can call it too. This crate loads and calls that library.
//!
//! # Layout
//!
//! - [`store`]: the only module that talks to Redis: the key layout
//!   (`store/keys.rs`), the assembled Lua library (`store/library.rs`),
//!   reply decoding (`store/reply.rs`), the typed results
//!   (`store/types.rs`) and one method per operation (`store/mod.rs`).
//! - [`error`]: the error codes of the protocol, shared by every layer.
//! - [`clock`]: where "now" comes from (the system clock, or a hand-set one
//!   in tests).
//! - `main.rs`: the `meetingd` binary (its subcommands).
//! - `lua/`: the library itself: `helpers.lua` first, then one file per
//!   operation, each opening with its KEYS, ARGV, reply and errors.
//!
//! Arrows run one way: main -> store -> lua; `error` and `clock` depend on
//! nothing of ours.

#![deny(missing_docs)]

pub mod clock;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod embedded_redis;
pub mod error;
pub mod logging;
pub mod protocol;
pub mod scheduler;
pub mod server;
pub mod stats;
pub mod store;
