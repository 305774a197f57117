//! The consumer-module contract: a [`Consumer`] names its topic and handles a
//! batch of that topic's records through a [`HandlerContext`], which gives it
//! the database and a way to reject single bad records into `dead_letters`.
//!
//! Three outcomes stay distinct: `Ok(())` (done, offsets may be committed),
//! [`HandlerContext::reject`] (that record is dead-lettered, the rest goes on),
//! and `Err(_)` (a transient failure: the whole batch is retried later).

use std::collections::HashMap;
use std::sync::Arc;

use crate::db::dead_letters::NewDeadLetter;
use crate::db::{Conn, DbError, Pool};
use crate::record::Record;

pub trait Consumer: Send + Sync {
    /// The topic this module handles, without `KAFKA_TOPIC_PREFIX`.
    fn topic(&self) -> &'static str;

    /// Handles one batch of this topic's records, in offset order per
    /// partition. Must be idempotent: a batch may be handled again after a
    /// crash or a transient failure.
    fn handle(&self, records: &[Record], ctx: &mut HandlerContext<'_>) -> Result<(), HandlerError>;
}

/// A failure that makes the whole batch retry later (nothing is committed).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Other(String),
}

impl From<diesel::result::Error> for HandlerError {
    fn from(e: diesel::result::Error) -> Self {
        HandlerError::Db(DbError::Query(e))
    }
}

/// Wake-up handles of scheduled jobs, by job name, so a handler can ask a job
/// to run now instead of at its next tick (new notifications → send them).
#[derive(Clone, Default)]
pub struct Wakers(HashMap<&'static str, Arc<tokio::sync::Notify>>);

impl Wakers {
    pub fn register(&mut self, job: &'static str) -> Arc<tokio::sync::Notify> {
        self.0.entry(job).or_default().clone()
    }

    pub fn get(&self, job: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.0.get(job).cloned()
    }

    pub fn wake(&self, job: &str) {
        if let Some(n) = self.0.get(job) {
            n.notify_one();
        }
    }
}

pub struct HandlerContext<'a> {
    pool: &'a Pool,
    max_record_bytes: usize,
    rejected: Vec<NewDeadLetter>,
    wake: Vec<&'static str>,
}

impl<'a> HandlerContext<'a> {
    pub fn new(pool: &'a Pool, max_record_bytes: usize) -> Self {
        HandlerContext { pool, max_record_bytes, rejected: Vec::new(), wake: Vec::new() }
    }

    /// A pooled database connection.
    pub fn db(&self) -> Result<Conn, HandlerError> {
        Ok(self.pool.get().map_err(DbError::Pool)?)
    }

    /// `CONSUMER_MAX_RECORD_BYTES`.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Rejects one bad record: it goes to `dead_letters` with `reason`, and
    /// the rest of the batch goes on.
    pub fn reject(&mut self, record: &Record, reason: impl Into<String>) {
        let reason = reason.into();
        log::warn!(
            "dead-lettering topic={} partition={} offset={} reason={reason}",
            record.topic,
            record.partition,
            record.offset
        );
        self.rejected.push(NewDeadLetter {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.clone(),
            payload: record.payload.clone(),
            error: reason,
            failed_at: crate::db::now(),
        });
    }

    /// Asks the job `name` to run as soon as this batch is committed.
    pub fn wake_job(&mut self, name: &'static str) {
        if !self.wake.contains(&name) {
            self.wake.push(name);
        }
    }

    pub fn rejected(&self) -> &[NewDeadLetter] {
        &self.rejected
    }

    pub(crate) fn into_parts(self) -> (Vec<NewDeadLetter>, Vec<&'static str>) {
        (self.rejected, self.wake)
    }
}
