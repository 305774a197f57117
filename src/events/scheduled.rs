//! The scheduled jobs' events, and the notification sender's.

use std::time::Duration;

use super::Event;
use crate::metrics;
use crate::scheduler::Trigger;

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
    pub trigger: Trigger,
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
            JobOutcome::SkippedOverlap if self.trigger == Trigger::Tick => log::Level::Warn,
            JobOutcome::Ok if !self.detail.is_empty() => log::Level::Info,
            _ => log::Level::Debug,
        };
        log::log!(
            level,
            "event=job_finished job_name={} trigger={} outcome={} duration_ms={} detail={:?}",
            self.job,
            self.trigger.as_str(),
            self.outcome.as_str(),
            self.elapsed.map_or(0, |d| d.as_millis()),
            self.detail
        );
    }
}

/// What became of notification deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationResult {
    Sent,
    /// Failed; another attempt is scheduled.
    Retried,
    /// Not attempted: the webhook's breaker is open.
    Deferred,
    /// Failed for good.
    Failed,
}

impl NotificationResult {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationResult::Sent => "sent",
            NotificationResult::Retried => "retried",
            NotificationResult::Deferred => "deferred",
            NotificationResult::Failed => "failed",
        }
    }
}

/// Notifications delivered (marked `sent`) or deferred, counted by the group.
pub struct NotificationsDone {
    pub result: NotificationResult,
    pub count: usize,
}

impl Event for NotificationsDone {
    fn emit(self) {
        metrics::get().notifications.with_label_values(&[self.result.as_str()]).inc_by(self.count as u64);
    }
}

/// One delivery attempt failed: retried at `retry_at`, or failed for good.
pub struct NotificationAttemptFailed<'a> {
    pub id: i64,
    pub attempt: i32,
    pub retry_at: Option<String>,
    pub error: &'a str,
}

impl Event for NotificationAttemptFailed<'_> {
    fn emit(self) {
        let result = if self.retry_at.is_some() { NotificationResult::Retried } else { NotificationResult::Failed };
        NotificationsDone { result, count: 1 }.emit();
        let level = if self.retry_at.is_some() { log::Level::Warn } else { log::Level::Error };
        log::log!(
            level,
            "event=notification_attempt_failed id={} attempt={} result={} retry_at={} error={:?}",
            self.id,
            self.attempt,
            result.as_str(),
            self.retry_at.as_deref().unwrap_or("-"),
            self.error
        );
    }
}
