//! Maintenance: `maintenance_5m` reports consumer lag per partition;
//! `maintenance_15m` purges sent notifications, replayed dead letters, job
//! runs, published outbox rows and provider answers older than
//! `RETENTION_DAYS`, and lets SQLite refresh its query statistics.

use diesel::connection::SimpleConnection;

use crate::config::cron::{CronError, Schedule};
use crate::config::Settings;
use crate::db::{self, dead_letters, job_runs, notifications, outbox, raw_responses, DbConnection};
use crate::events::{Event as _, LagReported};
use crate::kafka;
use crate::schedule::{Job, JobContext, JobError, JobReport};

pub struct Maintenance5m;
pub struct Maintenance15m;

impl Job for Maintenance5m {
    fn name(&self) -> &'static str {
        "maintenance_5m"
    }

    fn schedule(&self, _settings: &Settings) -> Result<Schedule, CronError> {
        "0 */5 * * * *".parse()
    }

    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let mut details = String::new();
        if ctx.settings.kafka_enabled {
            match kafka::lag(&ctx.settings, &ctx.topics) {
                Ok(parts) => {
                    let total: i64 = parts.iter().map(|p| p.lag).sum();
                    for p in &parts {
                        let (topic, partition, committed, high, lag) =
                            (&p.topic, p.partition, p.committed, p.high, p.lag);
                        LagReported { topic, partition, committed, high, lag }.emit();
                    }
                    details.push_str(&format!("lag={total}"));
                }
                Err(e) => details.push_str(&format!("lag=unknown ({e})")),
            }
        }
        Ok(JobReport::new(details))
    }
}

impl Job for Maintenance15m {
    fn name(&self) -> &'static str {
        "maintenance_15m"
    }

    fn schedule(&self, _settings: &Settings) -> Result<Schedule, CronError> {
        "0 */15 * * * *".parse()
    }

    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let before = db::now() - chrono::Duration::days(ctx.settings.retention_days as i64);
        let mut conn = ctx.db()?;
        let (sent, dead, runs, published, answers) = ctx.fenced(self.name(), &mut conn, |c| {
            Ok((
                notifications::purge_sent_before(c, before)?,
                dead_letters::purge_before(c, before, true)?,
                job_runs::prune_before(c, before)?,
                outbox::purge_published_before(c, before)?,
                raw_responses::purge_before(c, before)?,
            ))
        })?;
        if let DbConnection::Sqlite(c) = &mut *conn {
            c.batch_execute("PRAGMA optimize;").map_err(db::DbError::Query)?;
        }
        Ok(JobReport::new(format!(
            "purged notifications={sent} dead_letters={dead} job_runs={runs} outbox={published} \
             raw_responses={answers}"
        )))
    }
}
