//! The broker seam: the few calls the consumer pipeline makes to Kafka, and
//! the events it gets back. Production implements [`Broker`] with rdkafka
//! (`consumer`); the simulation tests implement it with an in-memory
//! cluster. Nothing here knows about rdkafka.
//!
//! Rebalances arrive as events and are completed by the pipeline itself
//! ([`Broker::assign`], [`Broker::unassign`]), so the batch in hand is
//! finished and committed while the revoked partitions are still ours.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::record::Record;

/// A topic partition.
pub type Tp = (String, i32);

/// Where an assigned partition is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The offset the database stored.
    At(i64),
    /// Kafka's committed offset, else the reset policy (the database has none).
    Committed,
    /// The log's beginning: the stored offset belongs to a log that is gone
    /// (the topic was deleted and recreated while this group was away).
    Beginning,
}

/// How a commit is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// Waits for the broker's answer.
    Sync,
    /// Returns at once; the answer arrives later as [`Event::Committed`].
    Async,
}

/// What a poll returns.
#[derive(Debug)]
pub enum Event {
    Record(Record),
    /// A client error (broker down, authentication, ...); polling goes on.
    Error(String),
    /// New partitions for this member; completed by [`Broker::assign`].
    Assigned(Vec<Tp>),
    /// Partitions leaving this member, still ours until [`Broker::unassign`].
    Revoked(Vec<Tp>),
    /// Partitions already taken from this member (session lost): nothing
    /// of them may be committed any more; completed by [`Broker::unassign`].
    Lost(Vec<Tp>),
    /// Partitions whose topic was deleted and recreated: their log is new,
    /// and they are read again from its beginning. What is in memory of
    /// them, and their stored offsets, belong to the old log.
    Reset(Vec<Tp>),
    /// The answer to an asynchronous (or, with some clients, any) commit.
    Committed {
        offsets: Vec<(Tp, i64)>,
        result: Result<(), String>,
    },
}

pub trait Broker {
    /// The next event, waiting at most `timeout` when none is ready.
    fn poll(&mut self, timeout: Duration) -> Option<Event>;
    /// Commits the next offset to read of each partition.
    fn commit(&mut self, offsets: &[(Tp, i64)], mode: CommitMode) -> Result<(), String>;
    /// Stops fetching these partitions (polling goes on, so the group keeps us).
    fn pause(&mut self, tps: &[Tp]) -> Result<(), String>;
    fn resume(&mut self, tps: &[Tp]) -> Result<(), String>;
    /// Completes an [`Event::Assigned`], reading each partition from where
    /// its [`Start`] says.
    fn assign(&mut self, tps: &[(Tp, Start)]) -> Result<(), String>;
    /// The ids of `topics` as the cluster knows them now (a topic deleted
    /// and recreated has a new one); a topic that does not exist is left out.
    fn topic_ids(&mut self, topics: &[String]) -> Result<BTreeMap<String, String>, String>;
    /// Reads an assigned partition again from `offset` (records fetched
    /// before are not returned).
    fn seek(&mut self, tp: &Tp, offset: i64) -> Result<(), String>;
    /// Completes an [`Event::Revoked`] or [`Event::Lost`].
    fn unassign(&mut self, tps: &[Tp]) -> Result<(), String>;
}
