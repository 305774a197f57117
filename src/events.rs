//! Operational events. Each one logs a single line, `event=<name>` then
//! fixed keys (free text last, quoted), and counts its metric, here and
//! nowhere else: an operator filters every copy's logs on the same keys, and
//! a metric never drifts from its log line. Labels are typed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::metrics;

/// Every event's way out.
pub trait Event {
    fn emit(self);
}

/// A batch went through; its offsets are marked for commit.
pub struct BatchHandled {
    pub records: usize,
}

impl Event for BatchHandled {
    fn emit(self) {
        let m = metrics::get();
        m.batches.inc();
        m.batch_size.observe(self.records as f64);
    }
}

/// A batch's records were handed to their modules in one transaction.
pub struct RecordsHandled<'a> {
    pub by_topic: &'a BTreeMap<String, usize>,
    /// Records of topics no module handles (committed, not stored).
    pub unrouted: BTreeMap<&'a str, u64>,
}

impl Event for RecordsHandled<'_> {
    fn emit(self) {
        let m = metrics::get();
        for (topic, n) in self.by_topic {
            m.records_consumed.with_label_values(&[topic]).inc_by(*n as u64);
        }
        for (topic, n) in self.unrouted {
            m.unrouted_records.with_label_values(&[topic]).inc_by(n);
        }
    }
}

/// A module failed a batch: an error it returned, or a panic.
pub struct HandlerFailed<'a> {
    pub topic: &'a str,
    pub panicked: bool,
}

impl Event for HandlerFailed<'_> {
    fn emit(self) {
        let m = metrics::get();
        let counter = if self.panicked { &m.handler_panics } else { &m.handler_errors };
        counter.with_label_values(&[self.topic]).inc();
    }
}

/// The batch in hand failed (again) and waits for a retry, uncommitted.
pub struct BatchRetrying<'a> {
    pub first: &'a str,
    pub records: usize,
    pub attempt: u32,
    pub retry_in: Duration,
    pub error: &'a str,
}

impl Event for BatchRetrying<'_> {
    fn emit(self) {
        log::warn!(
            "event=batch_retrying first={} records={} attempt={} retry_in_ms={} error={:?}",
            self.first,
            self.records,
            self.attempt,
            self.retry_in.as_millis(),
            self.error
        );
    }
}

/// The batch in hand went through after retries.
pub struct BatchRecovered {
    pub records: usize,
    pub attempts: u32,
}

impl Event for BatchRecovered {
    fn emit(self) {
        log::info!("event=batch_recovered records={} attempts={}", self.records, self.attempts);
    }
}

/// A batch failed in a way one record may cause: it is handled one record at a time.
pub struct BatchIsolated<'a> {
    pub first: &'a str,
    pub kind: &'a str,
    pub error: &'a str,
}

impl Event for BatchIsolated<'_> {
    fn emit(self) {
        log::warn!("event=batch_isolated first={} kind={} error={:?}", self.first, self.kind, self.error);
    }
}

/// A record was stored in `dead_letters` (with its batch's transaction).
pub struct RecordDeadLettered<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
}

impl Event for RecordDeadLettered<'_> {
    fn emit(self) {
        metrics::get().dead_letters.with_label_values(&[self.topic]).inc();
        log::warn!(
            "event=record_dead_lettered topic={} partition={} offset={} reason={:?}",
            self.topic,
            self.partition,
            self.offset,
            self.reason
        );
    }
}

/// A record came at a source position that already held a different record
/// (the topic was deleted and recreated): it is dead-lettered, not skipped.
pub struct PositionReused<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// What already held the position: a stored record or a dead letter.
    pub held_by: &'static str,
}

impl Event for PositionReused<'_> {
    fn emit(self) {
        metrics::get().reused_positions.with_label_values(&[self.topic]).inc();
        log::warn!(
            "event=position_reused topic={} partition={} offset={} held_by={}",
            self.topic,
            self.partition,
            self.offset,
            self.held_by
        );
    }
}

/// A partition's log changed under the stored offset, or the database asks
/// for it again: it is read from `from`.
pub struct OffsetReset<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub from: i64,
    pub why: &'a str,
}

impl Event for OffsetReset<'_> {
    fn emit(self) {
        metrics::get().offset_resets.with_label_values(&[self.topic]).inc();
        log::warn!(
            "event=offset_reset topic={} partition={} from={} why={:?}",
            self.topic,
            self.partition,
            self.from,
            self.why
        );
    }
}

/// The broker took (or, for an asynchronous commit, was sent) a commit.
pub struct Committed;

impl Event for Committed {
    fn emit(self) {
        metrics::get().commits.inc();
    }
}

/// A commit failed; the offsets stay due and are committed again.
pub struct CommitFailed<'a> {
    pub error: &'a str,
}

impl Event for CommitFailed<'_> {
    fn emit(self) {
        metrics::get().commit_errors.inc();
        log::warn!("event=commit_failed error={:?}", self.error);
    }
}

/// The supervisor restarts the consumer thread.
pub struct ConsumerRestarted<'a> {
    pub cause: &'static str,
    pub detail: &'a str,
    pub restarts: u64,
    pub not_before: Duration,
}

impl Event for ConsumerRestarted<'_> {
    fn emit(self) {
        metrics::get().consumer_restarts.with_label_values(&[self.cause]).inc();
        log::warn!(
            "event=consumer_restarted cause={} restarts={} next_restart_not_before_ms={} detail={:?}",
            self.cause,
            self.restarts,
            self.not_before.as_millis(),
            self.detail
        );
    }
}

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

/// Why the HTTP endpoint closed a connection at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The oldest connection without a request made room for a newcomer.
    Evicted,
    /// Every connection was serving a request: the newcomer was refused.
    Refused,
}

pub struct ConnectionDropped {
    pub reason: DropReason,
}

impl Event for ConnectionDropped {
    fn emit(self) {
        let reason = match self.reason {
            DropReason::Evicted => "evicted",
            DropReason::Refused => "refused",
        };
        metrics::get().http_connections_dropped.with_label_values(&[reason]).inc();
    }
}

/// A provider fetch ended: with a price (`failure: None`), or with the kind
/// of non-answer and why. Either way its answer is stored.
pub struct PriceFetched<'a> {
    pub symbol: &'a str,
    pub failure: Option<(&'static str, &'a str)>,
}

impl Event for PriceFetched<'_> {
    fn emit(self) {
        let result = self.failure.map_or("ok", |(kind, _)| kind);
        metrics::get().price_fetches.with_label_values(&[result]).inc();
        match self.failure {
            None => log::debug!("event=price_fetched symbol={} result=ok", self.symbol),
            Some((kind, why)) => {
                log::warn!("event=price_fetched symbol={} result={kind} error={why:?}", self.symbol)
            }
        }
    }
}

/// Outbox rows the broker confirmed, now marked published.
pub struct OutboxPublished {
    pub rows: usize,
}

impl Event for OutboxPublished {
    fn emit(self) {
        metrics::get().outbox_published.inc_by(self.rows as u64);
        log::debug!("event=outbox_published rows={}", self.rows);
    }
}

/// Outbox rows not delivered this time; they stay and are sent again.
pub struct OutboxFailed<'a> {
    pub rows: usize,
    pub retry_in: Duration,
    pub error: &'a str,
}

impl Event for OutboxFailed<'_> {
    fn emit(self) {
        metrics::get().outbox_publish_errors.inc_by(self.rows as u64);
        log::warn!(
            "event=outbox_failed rows={} retry_in_ms={} error={:?}",
            self.rows,
            self.retry_in.as_millis(),
            self.error
        );
    }
}

/// Records whose event identity was stored already (a re-published outbox
/// row): dead-lettered as repeats, so the event counts once.
pub struct DuplicatesRejected<'a> {
    pub topic: &'a str,
    pub records: usize,
}

impl Event for DuplicatesRejected<'_> {
    fn emit(self) {
        metrics::get().duplicate_records.with_label_values(&[self.topic]).inc_by(self.records as u64);
        log::info!("event=duplicates_rejected topic={} records={}", self.topic, self.records);
    }
}
