//! Operational events. Each one counts its metric and, when an operator
//! should see it, logs a single line, `event=<name>` then fixed keys (free
//! text last, quoted), here and nowhere else: an operator filters every
//! copy's logs on the same keys, and a metric never drifts from its log line. Labels are typed. The consumer's
//! events are here, the jobs' and notifications' in [`scheduled`], the
//! market-data producer's in [`market`].

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

mod market;
mod scheduled;

pub use market::*;
pub use scheduled::*;
