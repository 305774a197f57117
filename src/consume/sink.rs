//! The handling seam, in two: what the polling thread reads of the database
//! ([`Sink`]), and what a lane runs ([`LaneSink`]: the router and the
//! database in production, a simulated database in the tests); and the ways
//! handling can fail.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::record::{Record, TopicPartition};
use crate::consume::broker::Start;
use crate::consume::positions::PartitionState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The database is unreachable, busy or shutting down: retry the batch.
    Transient,
    /// The database refused a value (PostgreSQL classes 22 and 23, SQLite
    /// constraint, mismatch, too big): that record is dead-lettered.
    Permanent,
    /// Neither is known: a record that keeps failing is dead-lettered.
    Unknown,
    /// The handler panicked: the thread ends and is restarted.
    Panic,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Permanent => "permanent",
            FailureKind::Unknown => "unknown",
            FailureKind::Panic => "panic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// No retry before this long (the service said so: `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into(), retry_after: None }
    }
}

pub use crate::db::consumer_offsets::Stored;

/// Where to read a partition from, given what the database stored of it and
/// its topic's id now: a stored offset of another log (the topic was deleted
/// and recreated while this group was away) means the new log's beginning,
/// never the old offset, below which it would go unread.
pub fn start_of(stored: Option<&Stored>, topic_id: Option<&str>) -> Start {
    match stored {
        None => Start::Committed,
        Some(s) => match (s.topic_id.as_deref(), topic_id) {
            (Some(then), Some(now)) if then != now => Start::Beginning,
            _ => Start::At(s.next),
        },
    }
}

/// The database as the polling thread reads it.
pub trait Sink {
    /// What the database stored of each of `tps` (`None`: it applied
    /// nothing of that partition; Kafka's committed offset or the reset
    /// policy decides). See [`start_of`].
    fn positions(&mut self, tps: &[TopicPartition]) -> Result<Vec<Option<Stored>>, Failure>;
    /// The group's stored next offsets, by partition (to notice a database
    /// that lost committed batches of an idle partition).
    fn offsets(&mut self) -> Result<Vec<(TopicPartition, i64)>, Failure>;
}

/// What a lane runs: records applied with their partitions' offsets, one
/// transaction per call.
pub trait LaneSink {
    /// Applies `records` and moves their partitions' offsets (each as its
    /// `parts` state says), in one transaction: the handlers' writes (a bad
    /// record may be dead-lettered by its handler) or, with `dead_letter`,
    /// the one record's dead letter with that reason. Records the database
    /// applied already are skipped, so each is applied once; on failure
    /// nothing of them counts.
    fn apply(
        &mut self,
        records: &[Record],
        parts: &BTreeMap<TopicPartition, PartitionState>,
        dead_letter: Option<&str>,
    ) -> Result<Txn, Failure>;
    /// Does the database answer? Tells a record's fault from an outage.
    fn healthy(&mut self) -> bool;
}

/// What an [`LaneSink::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    Committed,
    /// Nothing: the partition's stored offset is below what this copy stored
    /// (the database lost committed batches): it is read again from there.
    Lost(TopicPartition, i64),
}

/// A handler panicked: the thread ends, nothing past the last handled batch
/// is committed, and the records are read again after the restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handler panicked on {at}: {message}")]
pub struct Panicked {
    pub at: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_offset_of_another_log_starts_at_the_beginning() {
        let stored = |id: Option<&str>| Some(Stored { next: 100, topic_id: id.map(String::from) });
        assert_eq!(start_of(None, Some("a")), Start::Committed);
        assert_eq!(start_of(stored(Some("a")).as_ref(), Some("a")), Start::At(100));
        assert_eq!(start_of(stored(Some("a")).as_ref(), Some("b")), Start::Beginning);
        // Unknown on either side: the stored offset, as before ids were kept.
        assert_eq!(start_of(stored(None).as_ref(), Some("b")), Start::At(100));
        assert_eq!(start_of(stored(Some("a")).as_ref(), None), Start::At(100));
    }
}
