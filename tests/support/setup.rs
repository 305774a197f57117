//! What the tests hand the library: the consumer thread's setup, built
//! with the defaults most tests want, and a job's runner.

use std::sync::Arc;

use cronsumer::common::shutdown::Shutdown;
use cronsumer::config::Settings;
use cronsumer::consume::handler::Handler;
use cronsumer::consume::thread::ConsumerSetup;
use cronsumer::db::Pool;
use cronsumer::schedule::{Job, JobContext, JobRunner, Wakers};

/// The modules a consumer thread runs (a fresh set at each start).
pub type Modules = fn() -> Vec<Box<dyn Handler>>;

/// A [`ConsumerSetup`] with the registry's modules, no extra topics, no
/// wakers and a fresh panics ledger, until told otherwise.
pub struct SetupBuilder(ConsumerSetup);

/// The setup of a consumer thread on `s` and `pool`; see [`SetupBuilder`].
pub fn setup(s: &Settings, pool: &Pool) -> SetupBuilder {
    SetupBuilder(ConsumerSetup {
        settings: Arc::new(s.clone()),
        pool: pool.clone(),
        modules: cronsumer::consumers::registry,
        extra_topics: vec![],
        wakers: Wakers::default(),
        poison: Default::default(),
        operator_pauses: Default::default(),
    })
}

impl SetupBuilder {
    pub fn modules(mut self, modules: Modules) -> SetupBuilder {
        self.0.modules = modules;
        self
    }

    /// Topics subscribed beyond those of the modules.
    pub fn extra_topics(mut self, topics: Vec<String>) -> SetupBuilder {
        self.0.extra_topics = topics;
        self
    }

    pub fn wakers(mut self, wakers: Wakers) -> SetupBuilder {
        self.0.wakers = wakers;
        self
    }

    pub fn build(self) -> ConsumerSetup {
        self.0
    }
}

/// The context of a job run in this process, without a consumer thread.
pub fn job_context(s: &Settings, pool: &Pool) -> Arc<JobContext> {
    Arc::new(JobContext::new(Arc::new(s.clone()), pool.clone(), Shutdown::new()))
}

/// A runner for a job whose schedule parses.
pub fn runner(job: Arc<dyn Job>, ctx: Arc<JobContext>) -> JobRunner {
    JobRunner::new(job, ctx).expect("the job's schedule parses")
}
