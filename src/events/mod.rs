//! Operational events, one file per part of the service (as Vector's
//! `internal_events`). Each event counts its metric and, when an operator
//! should see it, logs a single line, `event=<name>` then fixed keys (free
//! text last, quoted), here and nowhere else: an operator filters every
//! copy's logs on the same keys, and a metric never drifts from its log
//! line. Labels are typed.
//!
//! - [`consume`]: the consumer's pipeline (batches, records, partitions,
//!   commits); [`consumer_thread`]: its client, its thread and the supervisor;
//! - [`schedule`]: jobs, their leases and ledger;
//! - [`deliver`]: notifications and the webhook;
//! - [`market`]: the market-data producer and the outbox;
//! - [`predict`]: model calls and predictions;
//! - [`http`]: the HTTP endpoint's connections and actions;
//! - [`process`]: the service's start and stop.
//!
//! It may use `common` only.

/// Every event's way out.
pub trait Event {
    fn emit(self);
}

mod consume;
mod consumer_thread;
mod deliver;
mod http;
mod market;
mod predict;
mod process;
mod schedule;

pub use consume::*;
pub use consumer_thread::*;
pub use deliver::*;
pub use http::*;
pub use market::*;
pub use predict::*;
pub use process::*;
pub use schedule::*;
