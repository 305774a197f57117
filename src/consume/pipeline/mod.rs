//! The consumer pipeline: everything between the poll and the commit, as one
//! state machine with no Kafka client in it. It talks to the cluster through
//! the [`Broker`] seam, hands records to a [`Sink`] (the router and the
//! database in production), and reads time from a [`Clock`], so the same
//! code runs against rdkafka and against the simulated cluster of the tests.
//!
//! The data path of one step ([`Pipeline::run_once`]):
//! 1. poll: records of assigned partitions go to the batcher as they arrive,
//!    rebalance events and commit answers are applied at once, in order;
//! 2. the batch in hand is retried when its backoff is over, else a batch
//!    that closed (full, or timed out) is handled;
//! 3. partitions are paused or resumed to match what is in hand;
//! 4. handled offsets are committed ([`Pipeline::commit`], the one place).
//!
//! A batch fails in one of four ways (see [`crate::consume::sink::FailureKind`]): transient
//! failures keep it in hand, retried with backoff however long they last;
//! a refused value, an unknown error or a panic makes it go one record at a
//! time, and the record at fault is dead-lettered (at once for a refused
//! value, after [`crate::consume::poison::POISON_AFTER`] failures in a row otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::backoff::Backoff;
use crate::common::clock::Clock;
use crate::common::record::{Record, TopicPartition};
use crate::common::shutdown::StopRequest;
use crate::consume::batcher::Batcher;
use crate::consume::broker::{Broker, BrokerError, CommitMode, Polled};
use crate::consume::heartbeat::Heartbeat;
use crate::consume::offsets::Offsets;
use crate::consume::poison::PoisonLedger;
use crate::consume::sink::{Panicked, Sink};
use crate::events::{ClientCallFailed, CommitFailed, Committed, Event as _, PartitionsLeaving, PollFailed};

mod assignment;
mod batches;

/// Longest single poll: keeps the stop flag and the batch clock responsive.
pub const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// Retry delays of a batch that failed transiently.
pub const RETRY_INITIAL: Duration = Duration::from_millis(200);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Longest wait between retries while draining before a revoke or a stop.
pub const DRAIN_RETRY_MAX: Duration = Duration::from_secs(1);
/// Longest time handled records wait for their commit while records stream in.
pub const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How long a revocation may spend finishing what is in memory.
pub const REVOKE_BUDGET: Duration = Duration::from_secs(10);
/// Records held in memory (in hand and waiting), in batches, above which
/// every partition is paused until half of them are through.
pub const BUFFER_BATCHES: usize = 4;

/// When handled offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Asynchronously, at most every [`COMMIT_EVERY`] while records stream in.
    Throttled,
    /// Asynchronously, now: the stream went quiet.
    Idle,
    /// Synchronously, now: partitions are leaving or the thread is ending.
    Sync,
}

/// A batch that failed transiently, waiting for its next attempt.
struct HeldBatch {
    records: Vec<Record>,
    backoff: Backoff,
    retry_at: Instant,
}

enum Outcome {
    Done,
    /// The database (or a service) fails: back off further each time.
    Retry(String),
    /// The database works but a record failed: retried soon, so that a
    /// poison record is recognised in a second, whatever came before.
    Suspect(String),
}

pub struct Pipeline<C: Clock + Clone> {
    clock: C,
    batcher: Batcher<C>,
    in_hand: Option<HeldBatch>,
    offsets: Offsets,
    /// Partitions this pipeline paused.
    paused: BTreeSet<TopicPartition>,
    backpressure: bool,
    poison: PoisonLedger,
    heartbeat: Arc<Heartbeat>,
    batch_size: usize,
    last_commit: Option<Instant>,
    /// A stop cuts every drain short, a revoke's too.
    stop: Arc<StopRequest>,
    /// Partitions read from the database's offset, until their first record:
    /// one below it means the broker reset the partition (see [`Sink::rewind`]).
    starts: BTreeMap<TopicPartition, i64>,
    /// Partitions to read again from an offset (see [`Sink::read_again`]).
    seeks: Vec<(TopicPartition, i64)>,
    /// Partitions that must restart at an offset: records above it, fetched
    /// before their seek, are not taken until one at or below it arrives.
    restart_at: BTreeMap<TopicPartition, i64>,
}

impl<C: Clock + Clone> Pipeline<C> {
    pub fn new(
        batch_size: usize,
        batch_timeout: Duration,
        clock: C,
        poison: PoisonLedger,
        heartbeat: Arc<Heartbeat>,
    ) -> Self {
        let batch_size = batch_size.max(1);
        Pipeline {
            batcher: Batcher::new(batch_size, batch_timeout, clock.clone()),
            clock,
            in_hand: None,
            offsets: Offsets::default(),
            paused: BTreeSet::new(),
            backpressure: false,
            poison,
            heartbeat,
            batch_size,
            last_commit: None,
            stop: Arc::default(),
            starts: BTreeMap::new(),
            seeks: Vec::new(),
            restart_at: BTreeMap::new(),
        }
    }

    /// Drains end by the deadline of a stop requested through `stop`.
    pub fn with_stop(mut self, stop: Arc<StopRequest>) -> Self {
        self.stop = stop;
        self
    }

    /// Partitions whose records in memory were dropped to be read again
    /// from the database's offset, at the next step.
    pub fn reading_again(&self) -> Vec<TopicPartition> {
        self.seeks.iter().map(|(tp, _)| tp.clone()).collect()
    }

    /// Records held in memory: the batch in hand and those waiting.
    pub fn buffered(&self) -> usize {
        self.batcher.len() + self.in_hand.as_ref().map_or(0, |h| h.records.len())
    }

    /// Most records this pipeline holds in memory: the pause limit plus
    /// what one poll drains. (The rdkafka seam holds at most one batch more,
    /// polled while a synchronous commit is awaited.)
    pub fn memory_bound(&self) -> usize {
        (BUFFER_BATCHES + 1) * self.batch_size
    }

    /// How long the next poll may wait: until a retry or a batch is due.
    pub fn poll_wait(&self) -> Duration {
        let now = self.clock.now();
        match &self.in_hand {
            Some(h) => h.retry_at.saturating_duration_since(now),
            None => self.batcher.time_left().unwrap_or(MAX_POLL_WAIT),
        }
        .min(MAX_POLL_WAIT)
    }

    /// One step: poll (up to a batch of records), handle what is due,
    /// adjust pauses, commit. After a panic, what was handled before it is
    /// still committed, so the restarted thread starts at the failing record.
    pub fn run_once<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S) -> Result<(), Panicked> {
        let stepped = self.step(broker, sink);
        if stepped.is_err() {
            self.commit(broker, When::Sync);
        }
        stepped
    }

    fn step<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S) -> Result<(), Panicked> {
        let mut wait = self.poll_wait();
        let mut received = 0;
        while let Some(event) = broker.poll(wait) {
            wait = Duration::ZERO;
            match event {
                Polled::Record(r) => {
                    received += 1;
                    self.heartbeat.client_ok();
                    self.check_start(sink, &r);
                    self.accept(r);
                    if received >= self.batch_size {
                        break;
                    }
                }
                Polled::Error(e) => {
                    PollFailed { kind: e.kind.as_str(), error: &e.message }.emit();
                    self.heartbeat.client_error(&e.message);
                    break;
                }
                Polled::Assigned(tps) => self.assign(broker, sink, &tps),
                Polled::Revoked(tps) => self.revoke(broker, sink, &tps)?,
                Polled::Lost(tps) => {
                    PartitionsLeaving { partitions: &tps, lost: true }.emit();
                    self.release(broker, sink, &tps);
                }
                Polled::Reset(tps) => self.reset(broker, sink, &tps),
                Polled::Committed { offsets, result } => self.answered(&offsets, result),
            }
        }
        self.heartbeat.polled();
        self.take_read_again(sink);
        self.seek_again(broker);
        if self.in_hand.is_some() {
            self.retry_in_hand(sink)?;
        }
        if self.in_hand.is_none() {
            self.handle_ready(sink, false)?;
        }
        self.reconcile_pauses(broker);
        self.commit(broker, if received == 0 { When::Idle } else { When::Throttled });
        Ok(())
    }

    /// Finishes what is in memory until `deadline` and commits it; false
    /// when something is left (it is read again by whoever comes next).
    pub fn finish<B: Broker, S: Sink>(
        &mut self,
        broker: &mut B,
        sink: &mut S,
        deadline: Instant,
    ) -> Result<bool, Panicked> {
        let drained = self.drain(sink, deadline);
        self.commit(broker, When::Sync);
        drained
    }

    fn accept(&mut self, r: Record) {
        // A record fetched before its partition left: the next owner reads it.
        if self.offsets.is_assigned(&r.tp()) {
            if self.restarts_here(&r) {
                self.batcher.push(r);
            }
        } else {
            log::debug!("dropping a record of a partition not assigned position={}", r.position());
        }
    }

    /// The broker confirmed `offsets`: the heartbeat hears whether anything
    /// handled still waits for a commit.
    fn confirmed(&mut self, offsets: &[(TopicPartition, i64)]) {
        self.offsets.confirmed(offsets);
        self.heartbeat.committed(self.offsets.due(CommitMode::Sync).is_empty());
    }

    /// The broker's answer to a commit.
    fn answered(&mut self, offsets: &[(TopicPartition, i64)], result: Result<(), BrokerError>) {
        match result {
            Ok(()) => {
                self.confirmed(offsets);
                self.heartbeat.client_ok();
            }
            Err(e) => {
                self.offsets.failed(offsets);
                CommitFailed { kind: e.kind.as_str(), error: &e.message }.emit();
            }
        }
    }

    /// Pauses the partitions of the batch in hand (all of them while too
    /// much is in memory) and resumes the rest.
    fn reconcile_pauses<B: Broker>(&mut self, broker: &mut B) {
        let buffered = self.buffered();
        let limit = BUFFER_BATCHES * self.batch_size;
        if buffered >= limit {
            self.backpressure = true;
        } else if buffered <= limit / 2 {
            self.backpressure = false;
        }
        if !self.backpressure && self.in_hand.is_none() && self.paused.is_empty() {
            return;
        }
        let want: BTreeSet<TopicPartition> = if self.backpressure {
            self.offsets.assigned().cloned().collect()
        } else {
            let held = self.in_hand.iter().flat_map(|h| &h.records);
            held.map(|r| r.tp()).filter(|tp| self.offsets.is_assigned(tp)).collect()
        };
        let pause: Vec<TopicPartition> = want.difference(&self.paused).cloned().collect();
        let resume: Vec<TopicPartition> = self.paused.difference(&want).cloned().collect();
        if !pause.is_empty() {
            match broker.pause(&pause) {
                Ok(()) => self.paused.extend(pause),
                Err(e) => ClientCallFailed {
                    call: "pause",
                    partitions: &pause,
                    kind: e.kind.as_str(),
                    error: &e.message,
                    serious: false,
                }
                .emit(),
            }
        }
        if !resume.is_empty() {
            match broker.resume(&resume) {
                Ok(()) => resume.iter().for_each(|tp| _ = self.paused.remove(tp)),
                Err(e) => ClientCallFailed {
                    call: "resume",
                    partitions: &resume,
                    kind: e.kind.as_str(),
                    error: &e.message,
                    serious: false,
                }
                .emit(),
            }
        }
    }

    /// The one place that decides what to commit and when: handled offsets
    /// of assigned partitions, never more, until the broker confirms them.
    fn commit<B: Broker>(&mut self, broker: &mut B, when: When) {
        let now = self.clock.now();
        if when == When::Throttled && self.last_commit.is_some_and(|t| now.saturating_duration_since(t) < COMMIT_EVERY)
        {
            return;
        }
        let mode = if when == When::Sync { CommitMode::Sync } else { CommitMode::Async };
        let due = self.offsets.due(mode);
        if due.is_empty() {
            return;
        }
        self.last_commit = Some(now);
        match broker.commit(&due, mode) {
            Ok(()) => {
                Committed.emit();
                if mode == CommitMode::Sync {
                    self.confirmed(&due);
                } else {
                    self.offsets.sent(&due);
                }
            }
            Err(e) => CommitFailed { kind: e.kind.as_str(), error: &e.message }.emit(),
        }
    }
}
