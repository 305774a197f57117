//! The user's code that the runtime runs: consumer modules (one per topic)
//! and scheduled jobs. The binary passes it in (`consumers::registry`,
//! `jobs::registry`); the runtime never names a user module. (The one job it
//! wakes, the outbox publisher, takes its name from `outbox::JOB`.)

use std::sync::Arc;

use crate::config::Settings;
use crate::consume::handler::Handler;
use crate::schedule::Job;

#[derive(Clone, Copy)]
pub struct Registry {
    /// Makes the consumer modules; called at each consumer-thread (re)start
    /// for fresh instances.
    pub consumers: fn() -> Vec<Box<dyn Handler>>,
    pub jobs: fn() -> Vec<Arc<dyn Job>>,
}

impl Registry {
    /// The topics the consumer modules need, with `KAFKA_TOPIC_PREFIX`.
    pub fn topics(&self, settings: &Settings) -> Vec<String> {
        (self.consumers)().iter().map(|m| settings.topic(m.topic())).collect()
    }
}
