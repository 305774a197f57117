//! Fault tests: the real `cronsumer` binary (`cronsumer run`, started as
//! child processes) against the real broker and real databases, while a fault
//! is injected from outside, one scenario a file: SIGKILL mid-stream
//! ([`kill_9`]), a broker restart ([`broker_restart`]), a PostgreSQL outage
//! ([`postgres_outage`]), a handler panic on a poison record
//! ([`handler_panic`]), SIGTERM mid-batch ([`sigterm`]), one of two copies
//! killed ([`two_copies`]), a webhook outage ([`webhook_down`]), a SQLite
//! file locked by another process ([`sqlite_locked`]), and malformed input of
//! every kind ([`fuzz`]); a topic deleted and recreated ([`topics`]); the
//! market-data producer with the broker away and its publisher killed
//! between a delivery and its marking ([`market`]); and (in
//! [`group`]) faults combined with group changes: rebalances during an
//! outage, a handler slower than `max.poll.interval.ms`, bounded shutdown,
//! the broker away past the session timeout, rolling restarts under load;
//! (in [`exactly_once`]) a handler that is not idempotent counting exactly
//! under kill -9, rebalances, outages and a PostgreSQL crash; and (in
//! [`delivery`]) notifications sent by copies killed or whose clocks
//! disagree; and (in [`predictions`]) model calls through kill -9.
//!
//! [`fixture`] holds what the scenarios share (the [`fixture::Fixture`] of
//! one scenario, the broker's controller, the serial lock); `tests/support`
//! the harness shared with the integration tests (the one `Service`, topics,
//! databases, assertions, metrics).
//!
//! Each scenario produces a known set of records, injects its fault, lets the
//! service recover by itself (no test code repairs anything but the fault it
//! injected), and then proves with exact counts that:
//!
//! - every produced record ended up exactly once in its table or in
//!   `dead_letters` (rows + dead letters == produced);
//! - no source `(partition, offset)` was stored twice;
//! - the group's committed offsets sum to the records produced and never pass
//!   a record that is not stored;
//! - while the scenario ran, the [`monitor`] saw no commit pass an unstored
//!   record and none move backwards.
//!
//! Each scenario prints one line:
//! `SCENARIO <name> <backend>: produced=N stored=N dead_lettered=N duplicates=N`.
//!
//! Some scenarios stop the shared broker, so every test takes the process-wide
//! [`fixture::SERIAL`] lock first. Run with `scripts/test.sh --test faults` (which starts
//! the broker and PostgreSQL and sets `CRONSUMER_SERVICES`); a failing test
//! prints the tail of each service's log and keeps its files.

#[path = "../support/mod.rs"]
mod support;

mod fixture;
mod monitor;

mod broker_restart;
mod delivery;
mod exactly_once;
mod fuzz;
mod group;
mod handler_panic;
mod kill_9;
mod market;
mod postgres_outage;
mod predictions;
mod sigterm;
mod sqlite_locked;
mod topics;
mod two_copies;
mod webhook_down;
