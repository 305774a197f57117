//! The batch side of the pipeline: handling a closed batch, retrying the
//! one in hand, going one record at a time when a record may be at fault
//! (the poison rule), and draining what is in memory before a revoke or a
//! stop.

use std::time::Instant;

use super::{HeldBatch, Outcome, Pipeline, DRAIN_RETRY_MAX, RETRY_INITIAL, RETRY_MAX};
use crate::common::backoff::Backoff;
use crate::common::clock::Clock;
use crate::common::record::Record;
use crate::consume::heartbeat;
use crate::consume::poison::POISON_AFTER;
use crate::consume::sink::{FailureKind, Panicked, Sink};
use crate::events::{BatchHandled, BatchIsolated, BatchRecovered, BatchRetrying, Event as _};

impl<C: Clock + Clone> Pipeline<C> {
    /// Retries the batch in hand if its time has come.
    pub(super) fn retry_in_hand<S: Sink>(&mut self, sink: &mut S) -> Result<(), Panicked> {
        let Some(mut held) = self.in_hand.take() else { return Ok(()) };
        if self.clock.now() < held.retry_at {
            self.in_hand = Some(held);
            return Ok(());
        }
        let records = held.records.len();
        let (reason, suspect) = match self.process(sink, &mut held.records)? {
            Outcome::Done => {
                BatchRecovered { records, attempts: held.backoff.attempts() }.emit();
                self.heartbeat.set_retrying(None);
                return Ok(());
            }
            Outcome::Retry(reason) => (reason, false),
            Outcome::Suspect(reason) => (reason, true),
        };
        if suspect {
            held.backoff.reset();
        }
        let delay = held.backoff.next_delay();
        BatchRetrying {
            first: &held.records[0].position(),
            records: held.records.len(),
            attempt: held.backoff.attempts(),
            retry_in: delay,
            error: &reason,
        }
        .emit();
        self.heartbeat.set_retrying(Some(heartbeat::RetryingBatch {
            first: held.records[0].position(),
            records: held.records.len(),
            attempts: held.backoff.attempts(),
            reason,
        }));
        held.retry_at = self.clock.now() + delay;
        self.in_hand = Some(held);
        Ok(())
    }

    /// Handles the next batch when it closed (with `force`, whatever waits).
    pub(super) fn handle_ready<S: Sink>(&mut self, sink: &mut S, force: bool) -> Result<(), Panicked> {
        if self.in_hand.is_some() || self.batcher.is_empty() || !(force || self.batcher.is_ready()) {
            return Ok(());
        }
        let mut batch = self.batcher.take();
        if let Outcome::Retry(reason) | Outcome::Suspect(reason) = self.process(sink, &mut batch)? {
            let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
            let delay = backoff.next_delay();
            BatchRetrying {
                first: &batch[0].position(),
                records: batch.len(),
                attempt: backoff.attempts(),
                retry_in: delay,
                error: &reason,
            }
            .emit();
            self.heartbeat.set_retrying(Some(heartbeat::RetryingBatch {
                first: batch[0].position(),
                records: batch.len(),
                attempts: backoff.attempts(),
                reason,
            }));
            self.in_hand = Some(HeldBatch { records: batch, backoff, retry_at: self.clock.now() + delay });
        }
        Ok(())
    }

    /// Handles a batch whole, or one record at a time when it (or an earlier
    /// batch of its partitions) failed in a way a single record may cause.
    /// Records that went through one at a time leave `batch` at once, so a
    /// retry never handles (or dead-letters) them twice.
    fn process<S: Sink>(&mut self, sink: &mut S, batch: &mut Vec<Record>) -> Result<Outcome, Panicked> {
        if !self.poison.any_suspect(batch) {
            match sink.handle(batch) {
                Ok(()) => {
                    self.handled(batch);
                    batch.clear();
                    return Ok(Outcome::Done);
                }
                Err(f) if f.kind == FailureKind::Transient => return Ok(Outcome::Retry(f.message)),
                Err(f) => {
                    self.poison.suspect(batch);
                    if f.kind == FailureKind::Panic {
                        return Err(Panicked { at: batch[0].position(), message: f.message });
                    }
                    BatchIsolated { first: &batch[0].position(), kind: f.kind.as_str(), error: &f.message }.emit();
                }
            }
        }
        let mut done = 0;
        let outcome = self.isolate(sink, batch, &mut done);
        self.handled(&batch[..done]);
        if matches!(outcome, Ok(Outcome::Done)) {
            self.poison.cleared(batch);
        }
        batch.drain(..done);
        outcome
    }

    /// Handles records one at a time, counting in `done` those through.
    fn isolate<S: Sink>(&mut self, sink: &mut S, batch: &[Record], done: &mut usize) -> Result<Outcome, Panicked> {
        for r in batch {
            let Err(f) = sink.handle(std::slice::from_ref(r)) else {
                self.poison.settled(r);
                *done += 1;
                continue;
            };
            let reason = match f.kind {
                FailureKind::Transient => return Ok(Outcome::Retry(f.message)),
                FailureKind::Permanent => format!("the database refused this record: {}", f.message),
                FailureKind::Unknown if !sink.healthy() => return Ok(Outcome::Retry(f.message)),
                FailureKind::Unknown if self.poison.failed(r) < POISON_AFTER => return Ok(Outcome::Suspect(f.message)),
                FailureKind::Unknown => format!("failed {POISON_AFTER} times in a row on this record: {}", f.message),
                FailureKind::Panic if self.poison.failed(r) < POISON_AFTER => {
                    return Err(Panicked { at: r.position(), message: f.message })
                }
                FailureKind::Panic => {
                    format!("handler panicked {POISON_AFTER} times in a row on this record: {}", f.message)
                }
            };
            if let Err(e) = sink.dead_letter(r, &reason) {
                return Ok(Outcome::Retry(format!("storing a dead letter: {}", e.message)));
            }
            self.poison.settled(r);
            *done += 1;
        }
        Ok(Outcome::Done)
    }

    /// Marks a batch's offsets for the next commit.
    fn handled(&mut self, batch: &[Record]) {
        if batch.is_empty() {
            return;
        }
        for run in batch.chunk_by(|a, b| a.partition == b.partition && a.topic == b.topic) {
            let next = run.iter().map(|r| r.offset).max().unwrap_or_default() + 1;
            self.offsets.handled(&run[0].tp(), next);
        }
        self.heartbeat.handled(batch.len());
        BatchHandled { records: batch.len() }.emit();
    }

    /// Finishes everything in memory until `deadline`, retrying transient
    /// failures. Returns false if something is left.
    pub(super) fn drain<S: Sink>(&mut self, sink: &mut S, deadline: Instant) -> Result<bool, Panicked> {
        loop {
            let deadline = self.stop.drain_by().map_or(deadline, |stop| stop.min(deadline));
            self.take_read_again(sink);
            if let Some(held) = &mut self.in_hand {
                // Time is short: retry at least every DRAIN_RETRY_MAX, the last time at the deadline.
                held.retry_at = held.retry_at.min(self.clock.now() + DRAIN_RETRY_MAX).min(deadline);
                self.clock.sleep(held.retry_at.saturating_duration_since(self.clock.now()));
                self.retry_in_hand(sink)?;
            } else if !self.batcher.is_empty() {
                self.handle_ready(sink, true)?;
            } else {
                return Ok(true);
            }
            if self.clock.now() >= deadline {
                return Ok(self.buffered() == 0);
            }
        }
    }
}
