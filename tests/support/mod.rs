//! The test harness shared by the integration tests (`tests/it`), the fault
//! tests (`tests/faults`) and the benchmark (`bench/pipeline.rs`), each of
//! which includes it with `#[path = ".../support/mod.rs"] mod support;`:
//!
//! - [`services`]: the broker's and PostgreSQL's addresses, unique names, a
//!   fresh database per test ([`TestDb`]), settings and their environment;
//! - [`outage`]: database outages (PostgreSQL refusing connections or
//!   writes, SQLite's write lock held by someone else);
//! - [`kafka`]: topics deleted when dropped ([`TestTopics`]), producing
//!   records, the group's committed offsets;
//! - [`store`]: what the consumer stored (rows, dead letters, their sources);
//! - [`assertions`]: committed offsets never pass a record that is not stored;
//! - [`wait`]: polling a condition until it holds;
//! - [`http`] and [`metrics`]: a plain HTTP GET and the Prometheus reader;
//! - [`service`]: the `cronsumer` binary run as a service, or as a command;
//! - [`setup`]: the consumer thread's [`ConsumerSetup`](cronsumer::consume::thread::ConsumerSetup)
//!   and a job's runner;
//! - [`sink`]: a local webhook receiver; [`provider`]: a local market-data
//!   provider; [`model`]: a local model server.

// Each crate that includes the harness uses a part of it.
#![allow(dead_code, unused_imports)]

mod assertions;
mod http;
mod kafka;
mod metrics;
mod model;
mod outage;
mod provider;
mod service;
mod services;
mod setup;
mod sink;
mod store;
mod wait;

pub use crate::both_backends;
pub use assertions::*;
pub use http::*;
pub use kafka::*;
pub use metrics::*;
pub use model::*;
pub use outage::*;
pub use provider::*;
pub use service::*;
pub use services::*;
pub use setup::*;
pub use sink::*;
pub use store::*;
pub use wait::*;

use std::sync::{Mutex, MutexGuard};

/// Takes the lock, also when a holder panicked (the state it guards stays usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs both backends' variants of a test body `fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(cronsumer::db::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name(cronsumer::db::Backend::Postgres)
            }
        }
    };
}
