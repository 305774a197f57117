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

use crate::common::record::{Record, TopicPartition};

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
    /// Returns at once; the answer arrives later as [`Polled::Committed`].
    Async,
}

/// What went wrong in a call to the cluster, or in the client: its kind,
/// and the client's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BrokerError {
    pub kind: BrokerErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerErrorKind {
    /// No broker (or no coordinator) could be reached; it may work later.
    Unreachable,
    /// No answer came in time.
    Timeout,
    /// The cluster refused it: credentials, authorization, a generation or
    /// partition it no longer knows.
    Refused,
    /// The client refused it itself (an argument, its state).
    Client,
}

impl BrokerError {
    pub fn new(kind: BrokerErrorKind, message: impl Into<String>) -> Self {
        BrokerError { kind, message: message.into() }
    }
}

impl BrokerErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerErrorKind::Unreachable => "unreachable",
            BrokerErrorKind::Timeout => "timeout",
            BrokerErrorKind::Refused => "refused",
            BrokerErrorKind::Client => "client",
        }
    }
}

/// What a poll returns.
#[derive(Debug)]
pub enum Polled {
    Record(Record),
    /// A client error (broker down, authentication, ...); polling goes on.
    Error(BrokerError),
    /// New partitions for this member; completed by [`Broker::assign`].
    Assigned(Vec<TopicPartition>),
    /// Partitions leaving this member, still ours until [`Broker::unassign`].
    Revoked(Vec<TopicPartition>),
    /// Partitions already taken from this member (session lost): nothing
    /// of them may be committed any more; completed by [`Broker::unassign`].
    Lost(Vec<TopicPartition>),
    /// Partitions whose topic was deleted and recreated: their log is new,
    /// and they are read again from its beginning. What is in memory of
    /// them, and their stored offsets, belong to the old log.
    Reset(Vec<TopicPartition>),
    /// The answer to an asynchronous (or, with some clients, any) commit.
    Committed {
        offsets: Vec<(TopicPartition, i64)>,
        result: Result<(), BrokerError>,
    },
}

pub trait Broker {
    /// The next event, waiting at most `timeout` when none is ready.
    fn poll(&mut self, timeout: Duration) -> Option<Polled>;
    /// Commits the next offset to read of each partition.
    fn commit(&mut self, offsets: &[(TopicPartition, i64)], mode: CommitMode) -> Result<(), BrokerError>;
    /// Stops fetching these partitions (polling goes on, so the group keeps us).
    fn pause(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError>;
    fn resume(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError>;
    /// Completes an [`Polled::Assigned`], reading each partition from where
    /// its [`Start`] says.
    fn assign(&mut self, tps: &[(TopicPartition, Start)]) -> Result<(), BrokerError>;
    /// The ids of `topics` as the cluster knows them now (a topic deleted
    /// and recreated has a new one); a topic that does not exist is left out.
    fn topic_ids(&mut self, topics: &[String]) -> Result<BTreeMap<String, String>, BrokerError>;
    /// Reads an assigned partition again from `offset` (records fetched
    /// before are not returned).
    fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), BrokerError>;
    /// Completes an [`Polled::Revoked`] or [`Polled::Lost`].
    fn unassign(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError>;
}
