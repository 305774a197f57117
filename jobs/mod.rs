//! Your scheduled jobs, one per file: the list below registers each job the
//! embedded scheduler runs besides the service's own (the sender,
//! maintenance, supervision, the market-data producer), which their parts
//! register themselves. To add a periodic task, add a file next to this one
//! implementing `cronsumer::schedule::Job` and one line to `registry()`:
//!
//! ```no_run
//! // jobs/report.rs: `report` (every hour) logs how many notifications wait.
//! // (In jobs/, the paths start with `crate::` instead of `cronsumer::`.)
//! use cronsumer::config::{cron::Schedule, cron::CronError, Settings};
//! use cronsumer::db::notifications;
//! use cronsumer::schedule::{Job, JobContext, JobError, JobReport};
//!
//! pub struct Report;
//!
//! impl Job for Report {
//!     fn name(&self) -> &'static str {
//!         "report"
//!     }
//!     fn schedule(&self, _settings: &Settings) -> Result<Schedule, CronError> {
//!         "0 0 * * * *".parse() // sec min hour day month weekday, UTC
//!     }
//!     fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
//!         let mut conn = ctx.db()?;
//!         let counts = notifications::count_by_status(&mut conn)?;
//!         Ok(JobReport::new(format!("{counts:?}")))
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! and here `pub mod report;` and `Arc::new(report::Report),` in the list.

use std::sync::Arc;

use crate::schedule::Job;

/// Your jobs; each brings its own cron expression.
pub fn registry() -> Vec<Arc<dyn Job>> {
    vec![]
}
