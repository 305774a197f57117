//! cronsumer: a batch Kafka consumer and an embedded cron scheduler in one
//! service.
//!
//! - [`config`]: every setting, declared once, read from `.env` and the
//!   environment and validated at start; [`cron`] schedules.
//! - [`db`]: the diesel pool (SQLite or PostgreSQL), migrations, one model per table.
//! - [`kafka`]: client configuration, broker wait, topic checks; [`producer`].
//! - [`pipeline`]: the consumer state machine (batcher → router → the
//!   [`handler`] contract → offsets commit), which reaches Kafka only through
//!   the [`broker`] seam and time only through a [`clock`]; [`consumer`] runs
//!   it on rdkafka in a thread watched by the [`supervisor`] through its
//!   [`heartbeat`].
//! - [`scheduler`]: runs the jobs on their schedules.
//! - [`market`]: the market-data producer (provider client, fetch, stored
//!   answers), and the [`outbox`] publisher that takes events to Kafka.
//! - [`registry`]: the user's code the runtime runs: [`consumers`] (one
//!   file per topic) and [`jobs`] (one file per periodic job).
//! - [`app`]: `cronsumer run`, wiring it all together under one [`shutdown`]
//!   signal; [`cli`]: every command.
//! - [`metrics`] are exported and counted through one module of events,
//!   which also logs each with fixed keys.

pub mod app;
pub mod applied;
mod backoff;
mod batcher;
mod breaker;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod cron;
pub mod db;
mod env_file;
mod events;
#[cfg(feature = "fault-injection")]
pub mod fault_injection;
pub mod handler;
mod handlers;
pub mod heartbeat;
mod http;
pub mod kafka;
mod lease;
pub mod market;
pub mod metrics;
pub mod notifier;
mod offsets;
pub mod outbox;
mod panics;
mod payload;
pub mod pipeline;
pub mod poison;
pub mod producer;
pub mod record;
mod redact;
pub mod registry;
mod router;
pub mod scheduler;
pub mod shutdown;
pub mod sink;
pub mod supervisor;
mod topic_ids;

#[path = "../consumers/mod.rs"]
pub mod consumers;
#[path = "../jobs/mod.rs"]
pub mod jobs;

/// The consumer modules under `consumers/` and the jobs under `jobs/`, for
/// the binary (and the tests) to hand to the runtime.
pub fn registry() -> registry::Registry {
    registry::Registry { consumers: consumers::registry, jobs: jobs::registry }
}
