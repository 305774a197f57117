//! What a lane does with a batch ([`run`]): applies it whole, or one record
//! at a time when it (or an earlier batch of its partitions) failed in a way
//! a single record may cause, dead-lettering the record at fault (at once
//! for a value the database refuses, after [`POISON_AFTER`] failures in a
//! row otherwise). It never commits to Kafka: it hands back what it stored
//! ([`Done`]), and the pipeline, the one committer, marks the offsets.
//!
//! A lane runs on its worker thread (or, with one lane, on the polling
//! thread); the simulator runs it too, on batches that finish out of order.

use std::collections::BTreeMap;
use std::time::Duration;

use super::poison::{PoisonLedger, POISON_AFTER};
use super::positions::PartitionState;
use super::sink::{FailureKind, LaneSink, Panicked, Txn};
use crate::common::record::{Record, TopicPartition};
use crate::events::{BatchIsolated, Event as _};

/// A batch handed to a lane, with what its transactions need to know of its
/// partitions.
#[derive(Debug)]
pub struct Job {
    pub lane: usize,
    /// Told back in [`Done`], so the pipeline knows which batch finished.
    pub seq: u64,
    pub records: Vec<Record>,
    pub parts: BTreeMap<TopicPartition, PartitionState>,
}

/// How a lane's batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every record is stored or dead-lettered.
    Done,
    /// The database (or a service) fails: back off further each time, and
    /// no sooner than the service said (`Retry-After`).
    Retry(String, Option<Duration>),
    /// Retried soon, from the first step of the backoff: a record failed
    /// while the database works (so that a poison record is recognised in a
    /// second, whatever came before), or the database lost batches of a
    /// partition (read again; the batch's other records go on).
    Soon(String),
    /// A handler panicked: the consumer thread ends and is restarted.
    Panicked(Panicked),
}

/// A finished batch, as the lane hands it back.
#[derive(Debug)]
pub struct Done {
    pub lane: usize,
    pub seq: u64,
    pub outcome: Outcome,
    /// Records stored or dead-lettered: the batch's first ones.
    pub handled: usize,
    /// The next offset stored of each partition (by its last transaction).
    pub stored: BTreeMap<TopicPartition, i64>,
    /// A partition whose stored offset was found below what was expected.
    pub lost: Option<(TopicPartition, i64)>,
    /// The records not handled, kept for a retry (none when done).
    pub rest: Vec<Record>,
}

/// Runs `job` against `sink`; the poison rule's memory is shared by every lane.
pub fn run<S: LaneSink + ?Sized>(sink: &mut S, poison: &PoisonLedger, job: Job) -> Done {
    let Job { lane, seq, mut records, parts } = job;
    let mut work = Work { sink, poison, parts, stored: BTreeMap::new(), lost: None };
    let (outcome, handled) = work.process(&records);
    if outcome == Outcome::Done {
        poison.cleared(&records);
    }
    let rest = records.split_off(handled);
    Done { lane, seq, outcome, handled, stored: work.stored, lost: work.lost, rest }
}

struct Work<'a, S: ?Sized> {
    sink: &'a mut S,
    poison: &'a PoisonLedger,
    parts: BTreeMap<TopicPartition, PartitionState>,
    stored: BTreeMap<TopicPartition, i64>,
    lost: Option<(TopicPartition, i64)>,
}

impl<S: LaneSink + ?Sized> Work<'_, S> {
    /// One transaction; what it stored is kept for the next one and for the pipeline.
    fn apply(&mut self, records: &[Record], dead_letter: Option<&str>) -> Result<bool, super::sink::Failure> {
        match self.sink.apply(records, &self.parts, dead_letter)? {
            Txn::Committed => {
                for r in records {
                    let next = r.offset + 1;
                    if let Some(state) = self.parts.get_mut(&r.tp()) {
                        state.stored(next);
                    }
                    let stored = self.stored.entry(r.tp()).or_insert(next);
                    *stored = (*stored).max(next);
                }
                Ok(true)
            }
            Txn::Lost(tp, stored) => {
                self.lost = Some((tp, stored));
                Ok(false)
            }
        }
    }

    /// The batch whole, or one record at a time (see the module doc):
    /// the outcome, and how many of its first records went through.
    fn process(&mut self, batch: &[Record]) -> (Outcome, usize) {
        let lost = |tp: &TopicPartition, at: i64| {
            format!("the database lost committed batches of {tp} (a crash before their WAL flush?): reading them again from {at}")
        };
        if !self.poison.any_suspect(batch) {
            match self.apply(batch, None) {
                Ok(true) => return (Outcome::Done, batch.len()),
                Ok(false) => {
                    let (tp, at) = self.lost.clone().unwrap_or((batch[0].tp(), 0));
                    return (Outcome::Soon(lost(&tp, at)), 0);
                }
                Err(f) if f.kind == FailureKind::Transient => return (Outcome::Retry(f.message, f.retry_after), 0),
                Err(f) => {
                    self.poison.suspect(batch);
                    if f.kind == FailureKind::Panic {
                        return (Outcome::Panicked(Panicked { at: batch[0].position(), message: f.message }), 0);
                    }
                    BatchIsolated { first: &batch[0].position(), kind: f.kind.as_str(), error: &f.message }.emit();
                }
            }
        }
        self.isolate(batch)
    }

    /// Records one at a time, until one cannot go through now.
    fn isolate(&mut self, batch: &[Record]) -> (Outcome, usize) {
        for (done, r) in batch.iter().enumerate() {
            let one = std::slice::from_ref(r);
            let f = match self.apply(one, None) {
                Ok(true) => {
                    self.poison.settled(r);
                    continue;
                }
                Ok(false) => {
                    return (Outcome::Soon(format!("the database lost committed batches of {}", r.tp())), done)
                }
                Err(f) => f,
            };
            let reason = match f.kind {
                FailureKind::Transient => return (Outcome::Retry(f.message, f.retry_after), done),
                FailureKind::Permanent => format!("the database refused this record: {}", f.message),
                FailureKind::Unknown if !self.sink.healthy() => return (Outcome::Retry(f.message, None), done),
                FailureKind::Unknown if self.poison.failed(r) < POISON_AFTER => {
                    return (Outcome::Soon(f.message), done)
                }
                FailureKind::Unknown => format!("failed {POISON_AFTER} times in a row on this record: {}", f.message),
                FailureKind::Panic if self.poison.failed(r) < POISON_AFTER => {
                    return (Outcome::Panicked(Panicked { at: r.position(), message: f.message }), done)
                }
                FailureKind::Panic => {
                    format!("handler panicked {POISON_AFTER} times in a row on this record: {}", f.message)
                }
            };
            match self.apply(one, Some(&reason)) {
                Ok(true) => self.poison.settled(r),
                Ok(false) => {
                    return (Outcome::Soon(format!("the database lost committed batches of {}", r.tp())), done)
                }
                Err(e) => return (Outcome::Retry(format!("storing a dead letter: {}", e.message), None), done),
            }
        }
        (Outcome::Done, batch.len())
    }
}
