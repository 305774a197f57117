//! The handling seam: what the consumer pipeline hands records to (the
//! router and the database in production, a simulated database in the
//! tests), and the ways handling can fail.

use crate::broker::Tp;
use crate::record::Record;

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

/// Where records go: handlers, the database, `dead_letters`, and the
/// offsets they were applied up to, all in one transaction per call.
pub trait Sink {
    /// Where to read each of `tps` from: the next offset the database
    /// applied, or `None` when it applied nothing (Kafka's committed offset
    /// or the reset policy decides).
    fn positions(&mut self, tps: &[Tp]) -> Result<Vec<Option<i64>>, Failure>;
    /// A partition read from its stored position restarted below it, at
    /// `to` (the broker reset it: the topic was recreated or truncated).
    fn rewind(&mut self, tp: &Tp, to: i64);
    /// Partitions to read again, each from the offset the database holds:
    /// it fell back below what this sink stored (the database lost committed
    /// batches: a crash before their WAL flush), or it could not be read
    /// when they were assigned. Taken once; asked every step.
    fn read_again(&mut self) -> Vec<(Tp, i64)>;
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
