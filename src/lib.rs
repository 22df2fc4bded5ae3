//! meetingd: meeting presence on Redis.
//!
//! Every domain rule runs inside Redis as one call of a Lua function (the
//! Functions library in `lua/`), so each operation is atomic and `redis-cli`
//! can call it too. The daemon serves local clients on a Unix socket with a
//! line protocol, and ticks a scheduler that opens and closes the instances
//! no request touched (an instance runs exactly while its window holds the
//! clock: a request that meets a start or an end applies it itself).
//!
//! # Layout
//!
//! - `lua/`: the library. `lua/include/` holds what every function shares
//!   (errors, argument checks, the key layout, instance state, pages), then
//!   one file per operation, each opening with its KEYS, ARGV, reply and
//!   errors.
//! - [`store`]: the only module that talks to Redis. `mod.rs` holds the
//!   store, its options and `Call` (one library call, sent alone or
//!   pipelined); one file per family of calls: `admin.rs` (users, meetings,
//!   audiences, instances), `listings.rs` (MEETINGS and USERS, their
//!   indexes, the start-up backfill), `presence.rs` (join, leave,
//!   participants), `running.rs` (ACTIVE and ATTENDANCE from each
//!   partition's answer, kept while Redis says it holds), `chat.rs` (post,
//!   messages, events), `tick.rs`, `watch.rs` (WATCH's reads and subscriber
//!   connections, an instance's feed or a partition's starts and ends);
//!   around them `keys.rs` (the key layout),
//!   `library.rs` (the assembled Lua, its version and API level),
//!   `reply.rs` and `types.rs` (replies, records or packed lists, into
//!   typed results), `tracking.rs` (the tracked connections Redis tells of
//!   changes), `users.rs` (the user cache Redis invalidates),
//!   `conn.rs` and `cluster.rs` (one Redis or a cluster), `load.rs` (bulk
//!   loading), `check.rs` (`meetingd check`) and `repartition.rs`
//!   (`meetingd repartition`).
//! - [`protocol`]: a request line into a typed request, a result into a
//!   reply line. Pure, property-tested.
//! - [`cmd`]: requests applied to the store, one file per command family,
//!   and the plan that lets a connection pipeline its requests.
//! - [`server`]: the socket: listener, connection limits (in all, per
//!   uid, the admins' reserve, out of file descriptors), per-connection
//!   handler (pipelining, limits, peer credentials, watching), drain.
//! - [`watch`]: WATCH's fan-out: a subscriber connection per Redis (per
//!   master), deliveries from what the library publishes, gaps filled from
//!   the streams, a ring per instance (or per partition's log of starts and
//!   ends, for WATCH ACTIVE) to its watchers, replay after an id; the same
//!   connections hold the archiver's wake-up channels.
//! - [`scheduler`]: the cron job, the start-up tick and TICK, one tick at a
//!   time, retried after a failure.
//! - [`daemon`]: the lifecycle: embedded Redis, signals, systemd, reload,
//!   drain. [`embedded_redis`] supervises the redis-server of the embedded
//!   default; [`logging`] sets up tracing (and holds back storms of
//!   warnings).
//! - [`config`]: settings as read (file, environment, flags) into a
//!   validated configuration. [`durability`]: what an acknowledgement
//!   promises (`redis.durability`) and whether a Redis keeps it.
//! - [`archive`]: the copy of history in a SQL database (PostgreSQL,
//!   MySQL/MariaDB, SQLite): the archiver reads the partitions' outboxes
//!   (through the store; woken by their announcements, which the daemon
//!   routes from the watch hub) and writes idempotent rows; `attendance.rs`
//!   computes attendance, `db.rs` holds the schema (`migrations/`) and the
//!   writes, `read.rs` reads it back for the web view (read-only).
//! - [`web`]: the HTTP listener (`http.listen`, axum): `/metrics` and the
//!   operator's read-only web view (live meetings, an instance's
//!   participants, events, chat and attendance timeline, live by
//!   server-sent events from WATCH's hub; an ended instance the archive
//!   holds is read from there); `timeline.rs` draws the SVG timeline
//!   `meetingctl report --svg` writes too.
//! - [`stats`]: the counters STATS shows; [`metrics`] renders them as
//!   Prometheus text. [`error`]: the protocol's error codes. [`clock`]:
//!   where "now" comes from.
//! - `src/main.rs`: `meetingd` (serve, check, check-config, repartition,
//!   library); `src/bin/meetingctl.rs`: the client; [`stdout`]: their
//!   output, which a closed pipe ends quietly;
//!   `src/bin/meetingd-bench/`: measurements (BENCHMARKS.md).
//!
//! Arrows run one way: main -> daemon -> server -> cmd -> (watch ->) store
//! -> lua; the scheduler and the archiver call the store; protocol, config,
//! error and clock depend on nothing of ours but the error codes and
//! [`durability`], which depends on nothing.

#![deny(missing_docs)]

pub mod archive;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod durability;
pub mod embedded_redis;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod scheduler;
pub mod server;
pub mod stats;
pub mod stdout;
pub mod store;
pub mod watch;
pub mod web;
