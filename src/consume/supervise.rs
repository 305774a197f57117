//! `supervise_consumer` (every 5 s): restarts the consumer thread when it has
//! ended, stops it when it made no poll for `CONSUMER_STALL_TIMEOUT_MS`, and
//! ends the process when a stalled thread would not stop (see
//! [`super::supervisor`]). The service registers it with the thread's
//! supervisor; without one (`KAFKA_ENABLED=false`, `jobs run`) it reports so.

use crate::common::locks::lock;
use crate::config::cron::{CronError, Schedule};
use crate::config::Settings;
use crate::schedule::{Job, JobContext, JobError, JobReport};
use std::sync::{Arc, Mutex};

use super::supervisor::{Supervisor, Verdict};

pub struct SuperviseConsumer {
    supervisor: Option<Arc<Mutex<Supervisor>>>,
}

impl SuperviseConsumer {
    pub fn new(supervisor: Option<Arc<Mutex<Supervisor>>>) -> Self {
        SuperviseConsumer { supervisor }
    }
}

impl Job for SuperviseConsumer {
    fn name(&self) -> &'static str {
        "supervise_consumer"
    }

    fn schedule(&self, _settings: &Settings) -> Result<Schedule, CronError> {
        "*/5 * * * * *".parse()
    }

    /// Each copy supervises its own thread.
    fn exclusive(&self) -> bool {
        false
    }

    /// Supervision matters most while the database is away: it never waits for it.
    fn recorded(&self) -> bool {
        false
    }

    fn run(&self, _ctx: &JobContext) -> Result<JobReport, JobError> {
        let Some(supervisor) = &self.supervisor else {
            return Ok(JobReport::new("no consumer thread in this process"));
        };
        let mut s = lock(supervisor);
        Ok(match s.check() {
            Some(Verdict::Restarted(cause)) => {
                JobReport::new(format!("restarted consumer ({}): {cause:?}", cause.label()))
            }
            Some(Verdict::Stopping(cause)) => {
                JobReport::new(format!("stopping the consumer for a restart ({}): {cause:?}", cause.label()))
            }
            // Its thread still holds the group membership: a second member in this process
            // would stall every rebalance, so the service manager restarts the whole process.
            Some(Verdict::Wedged(_)) => std::process::exit(1),
            None => JobReport::default(),
        })
    }
}
