//! The user's code that the runtime runs: consumer modules (one per topic)
//! and scheduled jobs. The binary passes it in (`consumers::registry`,
//! `jobs::registry`); the runtime never names a user module. (The one job it
//! wakes, the outbox publisher, takes its name from `outbox::JOB`.)

use std::sync::Arc;

use crate::config::{module_key, ConfigError, Problem, Settings};
use crate::consume::handler::{topic_of, Handler};
use crate::schedule::Job;

#[derive(Clone, Copy)]
pub struct Registry {
    /// Makes the consumer modules; called at each consumer-thread (re)start
    /// for fresh instances.
    pub consumers: fn() -> Vec<Box<dyn Handler>>,
    pub jobs: fn() -> Vec<Arc<dyn Job>>,
}

/// A consumer module as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub name: &'static str,
    /// Its topic's full name (what it would read while off).
    pub topic: String,
    /// Why it is off (its topic is not subscribed).
    pub off: Option<String>,
}

impl Registry {
    /// The topics the consumer modules that are on need, with `KAFKA_TOPIC_PREFIX`.
    pub fn topics(&self, settings: &Settings) -> Vec<String> {
        (self.consumers)().iter().filter_map(|m| topic_of(m.as_ref(), settings)).collect()
    }

    /// Refuses per-module settings (`CONSUMER_BATCH_SIZE_<MODULE>`,
    /// `CONSUMER_BATCH_TIMEOUT_MS_<MODULE>`) that name no module: a typo
    /// must not pass for the default.
    pub fn check(&self, settings: &Settings) -> Result<(), ConfigError> {
        let names: Vec<String> = (self.consumers)().iter().map(|m| module_key(m.name())).collect();
        let mut problems = Vec::new();
        for (module, batch) in settings.module_batches.iter().filter(|(m, _)| !names.contains(m)) {
            let expected = format!("a module's name after the prefix: one of {}", names.join(", "));
            let mut unknown = |var: &str, value: String| {
                problems.push(Problem { var: format!("{var}_{module}"), value, expected: expected.clone() })
            };
            if let Some(size) = batch.size {
                unknown("CONSUMER_BATCH_SIZE", size.to_string());
            }
            if let Some(timeout) = batch.timeout {
                unknown("CONSUMER_BATCH_TIMEOUT_MS", timeout.as_millis().to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Every consumer module, on or off.
    pub fn modules(&self, settings: &Settings) -> Vec<ModuleInfo> {
        let module = |m: &dyn Handler| ModuleInfo {
            name: m.name(),
            topic: settings.module_topic(m.name(), m.topic()),
            off: m.off(settings),
        };
        (self.consumers)().iter().map(|m| module(m.as_ref())).collect()
    }
}
