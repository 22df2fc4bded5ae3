//! meetingd's integration tests: one binary, a real redis-server per test
//! (see `harness`), never a mock.

mod active;
mod archive;
mod calls;
mod check;
mod clock;
mod cluster;
mod connections;
mod ctl;
mod dbs;
mod docs;
mod durability;
mod faults;
mod fuzz;
mod hardening;
mod harness;
mod invariant;
mod lifecycle;
mod listings;
mod lua;
mod newcomer;
mod readme;
mod repartition;
mod scheduler;
mod socket;
mod store;
mod tick;
mod upgrade;
mod watch;
mod web;
mod web_archive;
