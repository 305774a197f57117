//! `publish_outbox` (every 5 s, and woken whenever outbox rows are written;
//! off with `KAFKA_ENABLED=false`): publishes the outbox to Kafka through
//! [`crate::market::outbox::Publisher`]. Its lease is taken on every run, woken runs
//! too, so one copy at a time publishes and each key's order holds.

use crate::config::cron::{CronError, Schedule};
use crate::config::Settings;
use crate::market::outbox::{Fence, PublishError, Publisher};
use crate::schedule::{Job, JobContext, JobError, JobReport};

#[derive(Default)]
pub struct PublishOutbox {
    publisher: Publisher,
}

impl Job for PublishOutbox {
    fn name(&self) -> &'static str {
        crate::market::outbox::JOB
    }

    fn schedule(&self, _settings: &Settings) -> Result<Schedule, CronError> {
        "*/5 * * * * *".parse()
    }

    fn off(&self, settings: &Settings) -> Option<String> {
        (!settings.kafka_enabled).then(|| "KAFKA_ENABLED=false: nothing may be published".to_string())
    }

    fn wakeable(&self) -> bool {
        true
    }

    fn lease_every_run(&self) -> bool {
        true
    }

    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let mut conn = ctx.db()?;
        let fence: Fence<'_> = &|c, write| Ok(ctx.fenced_write(self.name(), c, write)?.is_some());
        match self.publisher.run(&ctx.settings, &mut conn, fence, || ctx.shutdown.is_triggered()) {
            Ok(p) => {
                let mut details = Vec::new();
                if p.rows > 0 {
                    details.push(format!("published={}", p.rows));
                }
                if let Some(wait) = p.waiting {
                    details.push(format!("rows of keys that failed wait {} ms", wait.as_millis()));
                }
                Ok(JobReport::new(details.join(" ")))
            }
            Err(PublishError::Db(e)) => Err(e.into()),
            Err(PublishError::LeaseLost) => Err(JobError::LeaseLost(self.name().into())),
            Err(e) => Err(JobError::Other(e.to_string())),
        }
    }
}
