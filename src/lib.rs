//! cronsumer: a batch Kafka consumer and an embedded cron scheduler in one
//! service.
//!
//! The service's parts, each a folder whose `mod.rs` maps what is inside:
//!
//! - [`common`]: time, shutdown, backoff, locks, metrics, the record; and
//!   [`events`]: every operational event's log line and metric, one file per part.
//! - [`config`]: every setting, declared once, read from `.env` and the
//!   environment and validated at start (with cron schedules and redaction).
//! - [`db`]: the diesel pool (SQLite or PostgreSQL), migrations, one model per table.
//! - [`kafka`]: client configuration, broker wait, topic checks, the producer.
//! - [`schedule`]: jobs on their cron schedules, their leases and ledger,
//!   and the store's maintenance.
//! - [`consume`]: the consumer: the pipeline behind the broker seam, the
//!   handlers' contract and the database sink, the rdkafka side, the thread
//!   and its supervisor.
//! - [`deliver`]: notifications to their receivers: the notifiers and the sender.
//! - [`market`]: the market-data producer and the outbox publisher.
//! - [`predict`]: model calls for the predictions module (wire formats, client).
//! - [`http`]: the probes, the metrics, the console and the price API.
//! - [`app`]: `cronsumer run`, wiring it all together under one shutdown;
//!   [`registry`]: the user's code as the runtime receives it; [`cli`]: every command.
//!
//! Dependencies run one way, each part using only those before it:
//! `common` and `events` ← `config` (← `predict`) ← `db` ← `kafka` ← `schedule` ←
//! (`consume`, `deliver`, `market`, which do not use each other) ← `http` ←
//! `app` and `registry` ← `cli`. The runtime never names the user's modules
//! (`consumers/`, one file per topic) or jobs (`jobs/`): the binary hands
//! them over through [`registry`]. The tests in `layering.rs` hold these
//! rules, and that no module imports another in a circle.

pub mod app;
pub mod cli;
pub mod common;
pub mod config;
pub mod consume;
pub mod db;
pub mod deliver;
mod events;
mod http;
pub mod kafka;
pub mod market;
pub mod predict;
pub mod registry;
pub mod schedule;

#[path = "../consumers/mod.rs"]
pub mod consumers;
#[path = "../jobs/mod.rs"]
pub mod jobs;

/// The consumer modules under `consumers/` and the jobs under `jobs/`, for
/// the binary (and the tests) to hand to the runtime.
pub fn registry() -> registry::Registry {
    registry::Registry { consumers: consumers::registry, jobs: jobs::registry }
}

#[cfg(test)]
mod layering;
