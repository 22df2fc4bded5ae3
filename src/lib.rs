//! meetingd: meeting presence on Redis.
//!
//! Every domain rule runs inside Redis as one call of a Lua function (the
//! Functions library in `lua/`), so each operation is atomic and `redis-cli`
//! can call it too. The daemon serves local clients on a Unix socket with a
//! line protocol, and ticks a scheduler that opens and closes instances.
//!
//! # Layout
//!
//! - `lua/`: the library: `helpers.lua` first, then one file per operation,
//!   each opening with its KEYS, ARGV, reply and errors.
//! - [`store`]: the only module that talks to Redis: the key layout
//!   (`store/keys.rs`), the assembled library (`store/library.rs`), reply
//!   decoding (`store/reply.rs`), typed results (`store/types.rs`), one
//!   method per operation (`store/mod.rs`), bulk loading
//!   (`store/load.rs`), the consistency check of `meetingd check`
//!   (`store/check.rs`), the connection (`store/conn.rs`) and, on a Redis
//!   Cluster, the library on every master (`store/cluster.rs`).
//! - [`protocol`]: a request line into a typed request, a result into a
//!   reply line. Pure, property-tested.
//! - [`cmd`]: requests applied to the store, one file per command family.
//! - [`server`]: the socket: listener, connection limit, per-connection
//!   handler (pipelining, limits, peer credentials, watching), drain.
//! - [`watch`]: WATCH's fan-out: one reader per watched instance, a ring
//!   to its watchers, replay after an id (`store/watch.rs` reads the feed).
//! - [`scheduler`]: the cron job, the start-up tick and TICK, one tick at a
//!   time.
//! - [`daemon`]: the lifecycle: embedded Redis, signals, systemd, reload,
//!   drain. [`embedded_redis`] supervises the redis-server of the embedded
//!   default; [`logging`] sets up tracing.
//! - [`config`]: settings as read (file, environment, flags) into a
//!   validated configuration.
//! - [`stats`]: the counters STATS shows; [`metrics`] serves them as
//!   Prometheus text. [`error`]: the protocol's error codes. [`clock`]:
//!   where "now" comes from.
//! - `src/main.rs`: `meetingd` (serve, check, check-config, library);
//!   `src/bin/meetingctl.rs`: the client; `src/bin/meetingd-bench/`:
//!   measurements.
//!
//! Arrows run one way: main -> daemon -> server -> cmd -> (watch ->) store
//! -> lua; the scheduler calls the store; protocol, config, error and clock
//! depend on nothing of ours but the error codes.

#![deny(missing_docs)]

pub mod clock;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod embedded_redis;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod scheduler;
pub mod server;
pub mod stats;
pub mod store;
pub mod watch;
