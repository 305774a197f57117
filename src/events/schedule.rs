//! The scheduler's events: jobs, their leases and ledger.

use std::time::Duration;

use super::Event;
use crate::common::metrics;

/// How a job's run (or its tick) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Ok,
    Failed,
    /// The previous run was still going.
    SkippedOverlap,
    /// Another copy holds the lease for this tick.
    SkippedLease,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Ok => "ok",
            JobOutcome::Failed => "failed",
            JobOutcome::SkippedOverlap => "skipped_overlap",
            JobOutcome::SkippedLease => "skipped_lease",
        }
    }
}

/// A job's run ended, or its tick was skipped.
pub struct JobFinished<'a> {
    pub job: &'a str,
    /// `tick`, `wake` or `manual`.
    pub trigger: &'static str,
    pub outcome: JobOutcome,
    /// How long it ran (`None`: it did not run).
    pub elapsed: Option<Duration>,
    /// The run's report, or why it failed or was skipped.
    pub detail: &'a str,
}

impl Event for JobFinished<'_> {
    fn emit(self) {
        let m = metrics::get();
        m.job_runs.with_label_values(&[self.job, self.outcome.as_str()]).inc();
        if let Some(d) = self.elapsed {
            m.job_duration.with_label_values(&[self.job]).observe(d.as_secs_f64());
        }
        let level = match self.outcome {
            JobOutcome::Failed => log::Level::Error,
            // Wake-ups find a run going all the time under load; a tick that does is late.
            JobOutcome::SkippedOverlap if self.trigger == "tick" => log::Level::Warn,
            JobOutcome::Ok if !self.detail.is_empty() => log::Level::Info,
            _ => log::Level::Debug,
        };
        log::log!(
            level,
            "event=job_finished job_name={} trigger={} outcome={} duration_ms={} detail={:?}",
            self.job,
            self.trigger,
            self.outcome.as_str(),
            self.elapsed.map_or(0, |d| d.as_millis()),
            self.detail
        );
    }
}

/// A job was scheduled on its cron expression, or left off (and why).
pub struct JobRegistered<'a> {
    pub job: &'a str,
    pub cron: &'a str,
    pub off: Option<&'a str>,
}

impl Event for JobRegistered<'_> {
    fn emit(self) {
        match self.off {
            Some(why) => log::info!("event=job_off job_name={} why={why:?}", self.job),
            None => log::info!("event=job_scheduled job_name={} cron={:?}", self.job, self.cron),
        }
    }
}

/// At shutdown: the scheduler would not stop cleanly, or a job still ran at the deadline.
pub struct SchedulerStopped<'a> {
    pub error: Option<&'a str>,
    pub still_running: &'a [&'a str],
}

impl Event for SchedulerStopped<'_> {
    fn emit(self) {
        if let Some(e) = self.error {
            log::warn!("event=scheduler_stop_failed error={e:?}");
        }
        for job in self.still_running {
            log::warn!("event=job_still_running job_name={job} why=\"the shutdown deadline came\"");
        }
    }
}

/// What became of a run's lease: lost (its writes are refused from now
/// on), not renewed this time, or not given up (it expires by itself).
pub struct LeaseTrouble<'a> {
    pub job: &'a str,
    pub token: i64,
    pub what: &'static str,
    pub error: Option<&'a str>,
}

impl Event for LeaseTrouble<'_> {
    fn emit(self) {
        let level = if self.what == "lost" { log::Level::Error } else { log::Level::Warn };
        let error = self.error.unwrap_or("-");
        log::log!(level, "event=lease_{} job_name={} token={} error={error:?}", self.what, self.job, self.token);
    }
}

/// A run (or its outcome) could not be written to `job_runs`.
pub struct RunNotRecorded<'a> {
    pub job: &'a str,
    pub error: &'a str,
}

impl Event for RunNotRecorded<'_> {
    fn emit(self) {
        log::warn!("event=run_not_recorded job_name={} error={:?}", self.job, self.error);
    }
}

/// A partition's lag, as maintenance reports it.
pub struct LagReported<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub committed: Option<i64>,
    pub high: i64,
    pub lag: i64,
}

impl Event for LagReported<'_> {
    fn emit(self) {
        let committed = self.committed.map_or("-".to_string(), |c| c.to_string());
        log::info!(
            "event=lag topic={} partition={} committed={committed} high={} lag={}",
            self.topic,
            self.partition,
            self.high,
            self.lag
        );
    }
}
