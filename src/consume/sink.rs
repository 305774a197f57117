//! The handling seam: what the consumer pipeline hands records to (the
//! router and the database in production, a simulated database in the
//! tests), and the ways handling can fail.

use std::collections::BTreeMap;

use crate::common::record::{Record, TopicPartition};
use crate::consume::broker::Start;

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

/// Where records go: handlers, the database, `dead_letters`, and the
/// offsets they were applied up to, all in one transaction per call.
pub trait Sink {
    /// What the database stored of each of `tps` (`None`: it applied
    /// nothing of that partition; Kafka's committed offset or the reset
    /// policy decides). See [`start_of`].
    fn positions(&mut self, tps: &[TopicPartition]) -> Result<Vec<Option<Stored>>, Failure>;
    /// The ids of the topics being read, as the cluster knows them now:
    /// stored with their partitions' offsets.
    fn identify(&mut self, topic_ids: &BTreeMap<String, String>);
    /// Partitions that left this copy: what the sink keeps of them goes.
    fn released(&mut self, tps: &[TopicPartition]);
    /// A partition read from its stored position restarted below it, at
    /// `to` (the broker reset it: the topic was recreated or truncated).
    fn rewind(&mut self, tp: &TopicPartition, to: i64);
    /// Partitions to read again, each from the offset the database holds:
    /// it fell back below what this sink stored (the database lost committed
    /// batches: a crash before their WAL flush), or it could not be read
    /// when they were assigned. Taken once; asked every step.
    fn read_again(&mut self) -> Vec<(TopicPartition, i64)>;
    /// Handles the records (a bad one may be dead-lettered by its handler)
    /// and stores the next offset of their partitions with them; on failure
    /// nothing of them counts as handled. Records the database applied
    /// already are skipped, so each is applied once.
    fn handle(&mut self, batch: &[Record]) -> Result<(), Failure>;
    /// Dead-letters a record the pipeline gave up on, with its offset.
    fn dead_letter(&mut self, record: &Record, reason: &str) -> Result<(), Failure>;
    /// Does the database answer? Tells a record's fault from an outage.
    fn healthy(&mut self) -> bool;
}

/// A handler panicked: the thread ends, nothing past the last handled batch
/// is committed, and the records are read again after the restart.
#[derive(Debug, Clone, thiserror::Error)]
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
