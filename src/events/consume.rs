//! The consumer pipeline's events: batches, records, partitions, commits.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Event;
use crate::common::metrics;
use crate::common::record::TopicPartition;

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

/// A lane's batch in hand failed (again) and waits for a retry, uncommitted.
pub struct BatchRetrying<'a> {
    pub lane: usize,
    pub first: &'a str,
    pub records: usize,
    pub attempt: u32,
    pub retry_in: Duration,
    pub error: &'a str,
}

impl Event for BatchRetrying<'_> {
    fn emit(self) {
        log::warn!(
            "event=batch_retrying lane={} first={} records={} attempt={} retry_in_ms={} error={:?}",
            self.lane,
            self.first,
            self.records,
            self.attempt,
            self.retry_in.as_millis(),
            self.error
        );
    }
}

/// The pipeline applied an operator's pause or resume of a partition;
/// `read_again_from`: where it reads again from (its first record dropped).
pub struct OperatorPaused<'a> {
    pub partition: &'a crate::common::record::TopicPartition,
    pub paused: bool,
    pub read_again_from: Option<i64>,
}

impl Event for OperatorPaused<'_> {
    fn emit(self) {
        let what = if self.paused { "partition_paused" } else { "partition_resumed" };
        let from = self.read_again_from.map_or("-".to_string(), |o| o.to_string());
        log::info!("event={what} by=operator partition={} read_again_from={from}", self.partition);
    }
}

/// What a lane holds now: waiting, in hand and in flight.
pub struct LaneHolds {
    pub lane: usize,
    pub records: usize,
}

impl Event for LaneHolds {
    fn emit(self) {
        metrics::get().lane_in_hand.with_label_values(&[&self.lane.to_string()]).set(self.records as i64);
    }
}

/// A lane's batch came back, after `busy`.
pub struct LaneFinished {
    pub lane: usize,
    pub records: usize,
    pub busy: Duration,
}

impl Event for LaneFinished {
    fn emit(self) {
        let m = metrics::get();
        let lane = self.lane.to_string();
        m.lane_busy_seconds.with_label_values(&[&lane]).inc_by(self.busy.as_secs_f64());
        m.lane_batches.with_label_values(&[&lane]).inc();
        m.lane_records.with_label_values(&[&lane]).inc_by(self.records as u64);
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
    pub kind: &'static str,
    pub error: &'a str,
}

impl Event for CommitFailed<'_> {
    fn emit(self) {
        metrics::get().commit_errors.inc();
        log::warn!("event=commit_failed kind={} error={:?}", self.kind, self.error);
    }
}

/// The partitions this copy holds changed.
pub struct AssignmentChanged {
    pub partitions: usize,
}

impl Event for AssignmentChanged {
    fn emit(self) {
        metrics::get().assigned_partitions.set(self.partitions as i64);
    }
}

/// The group gave this copy partitions; each is read from where it says.
pub struct PartitionsAssigned<'a> {
    /// Each partition and where it is read from.
    pub reading_from: &'a str,
}

impl Event for PartitionsAssigned<'_> {
    fn emit(self) {
        log::info!("event=partitions_assigned reading_from={}", self.reading_from);
    }
}

/// Partitions leave this copy: revoked (what is in memory is finished first)
/// or lost (the session expired: nothing of them may be committed).
pub struct PartitionsLeaving<'a> {
    pub partitions: &'a [TopicPartition],
    pub lost: bool,
}

impl Event for PartitionsLeaving<'_> {
    fn emit(self) {
        let names = names(self.partitions);
        if self.lost {
            log::warn!(
                "event=partitions_lost partitions={names} why=\"session expired: their records go to the next owner\""
            );
        } else {
            log::info!("event=partitions_revoked partitions={names}");
        }
    }
}

/// Partitions were let go, with the records of them held in memory (read
/// again by their next owner).
pub struct PartitionsReleased<'a> {
    pub partitions: &'a [TopicPartition],
    pub records_dropped: usize,
}

impl Event for PartitionsReleased<'_> {
    fn emit(self) {
        log::info!(
            "event=partitions_released partitions={} records_dropped={}",
            names(self.partitions),
            self.records_dropped
        );
    }
}

/// Records of a topic no module handles: committed unhandled (said once per topic).
pub struct TopicUnrouted<'a> {
    pub topic: &'a str,
}

impl Event for TopicUnrouted<'_> {
    fn emit(self) {
        log::warn!(
            "event=topic_unrouted topic={} why=\"no consumer module: its records are committed unprocessed\"",
            self.topic
        );
    }
}

/// Records of a batch the database applied already (a commit whose answer
/// was lost, or another copy) were skipped.
pub struct AppliedSkipped<'a> {
    pub records: usize,
    pub first: &'a str,
}

impl Event for AppliedSkipped<'_> {
    fn emit(self) {
        log::info!("event=applied_skipped records={} first={}", self.records, self.first);
    }
}

/// The names of `partitions`, `topic/partition,...`.
pub(super) fn names(partitions: &[TopicPartition]) -> String {
    partitions.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
