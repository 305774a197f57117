//! `supervise_consumer` (every 5 s): restarts the consumer thread when it has
//! ended or made no poll for `CONSUMER_STALL_TIMEOUT_MS` (see `supervisor`).

use crate::config::Settings;
use crate::scheduler::{Job, JobContext, JobError, JobReport};

pub struct SuperviseConsumer;

impl Job for SuperviseConsumer {
    fn name(&self) -> &'static str {
        "supervise_consumer"
    }

    fn schedule(&self, _settings: &Settings) -> String {
        "*/5 * * * * *".into()
    }

    /// Each copy supervises its own thread.
    fn exclusive(&self) -> bool {
        false
    }

    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let Some(supervisor) = &ctx.supervisor else {
            return Ok(JobReport::new("no consumer thread in this process"));
        };
        let mut s = supervisor.lock().map_err(|_| JobError::Other("supervisor lock poisoned".into()))?;
        Ok(match s.check() {
            Some(cause) => JobReport::new(format!("restarted consumer ({}): {cause:?}", cause.label())),
            None => JobReport::default(),
        })
    }
}
