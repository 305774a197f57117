//! cronsumer: a batch Kafka consumer and an embedded cron scheduler in one
//! service.
//!
//! - [`config`]: settings from `.env` and the environment, validated once.
//! - [`db`]: the diesel pool (SQLite or PostgreSQL), migrations, one model per table.
//! - [`kafka`]: client configuration, broker wait, topic checks; [`producer`].
//! - [`pipeline`]: the consumer state machine ([`batcher`] → [`router`] →
//!   [`handler`], the consumer-module contract → [`offsets`] commit), which
//!   reaches Kafka only through the [`broker`] seam and time only through a
//!   [`clock`]; [`consumer`] runs it on rdkafka in a thread watched by the
//!   [`supervisor`] through its [`heartbeat`].
//! - [`payload`]: validation helpers the consumer modules share.
//! - [`consumers`] and [`jobs`]: the user's extension points, one file per
//!   topic and per periodic job.
//! - [`app`]: `cronsumer run`, wiring it all together under one [`shutdown`] signal.
//! - [`metrics`]: every exported metric, in one place.

pub mod app;
pub mod applied;
pub mod backoff;
pub mod batcher;
pub mod breaker;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod db;
pub mod env_file;
pub mod handler;
pub mod handlers;
pub mod heartbeat;
pub mod http;
pub mod kafka;
pub mod lease;
pub mod metrics;
pub mod notifier;
pub mod offsets;
pub mod payload;
pub mod pipeline;
pub mod poison;
pub mod producer;
pub mod record;
pub mod redact;
pub mod router;
pub mod scheduler;
pub mod shutdown;
pub mod sink;
pub mod supervisor;
pub mod topic_ids;

#[path = "../consumers/mod.rs"]
pub mod consumers;
#[path = "../jobs/mod.rs"]
pub mod jobs;
