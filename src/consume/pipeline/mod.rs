//! The consumer pipeline: everything between the poll and the commit, as one
//! state machine with no Kafka client in it. It talks to the cluster through
//! the [`Broker`] seam, reads the database's offsets through a [`Sink`],
//! hands batches to its lanes ([`Lanes`]), and reads time from a [`Clock`],
//! so the same code runs against rdkafka and against the simulated cluster
//! of the tests.
//!
//! The data path of one step ([`Pipeline::run_once`]):
//! 0. the operator's pauses, when they changed ([`partitions`]);
//! 1. poll: records of assigned partitions go to their lane's batcher as
//!    they arrive, rebalance events and commit answers are applied at once,
//!    in order;
//! 2. finished batches come back from the lanes and their offsets are
//!    marked; each lane without a batch in flight gets its next one (the
//!    batch in hand when its backoff is over, else one that closed);
//! 3. partitions are paused or resumed to match what is in hand;
//! 4. handled offsets are committed ([`Pipeline::commit`], the one place).
//!
//! Lanes: each assigned partition stays in one lane while assigned, and a
//! lane has at most one batch in flight, so a partition's records are
//! applied in offset order, never two batches of it at once; partitions of
//! different lanes go on side by side. A batch fails in one of four ways
//! (see [`crate::consume::sink::FailureKind`]): transient failures keep it
//! in its lane's hand, retried with backoff however long they last, while
//! the other lanes go on; a refused value, an unknown error or a panic makes
//! the lane go one record at a time ([`crate::consume::lane`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::clock::Clock;
use crate::common::record::{Record, TopicPartition};
use crate::common::shutdown::StopRequest;
use crate::consume::batcher::Batchers;
use crate::consume::broker::{Broker, BrokerError, CommitMode, Polled};
use crate::consume::heartbeat::Heartbeat;
use crate::consume::offsets::Offsets;
use crate::consume::positions::Positions;
use crate::consume::sink::{Panicked, Sink};
use crate::consume::workers::Lanes;
use crate::events::{CommitFailed, Committed, Event as _, PartitionsLeaving, PollFailed};

mod assignment;
mod lanes;
mod partitions;

use lanes::Lane;

/// Longest single poll: keeps the stop flag and the batch clock responsive.
pub const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// Retry delays of a batch that failed transiently.
pub const RETRY_INITIAL: Duration = Duration::from_millis(200);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Longest wait a service's `Retry-After` gets for a batch.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Longest wait between retries while draining before a revoke or a stop.
pub const DRAIN_RETRY_MAX: Duration = Duration::from_secs(1);
/// Longest time handled records wait for their commit while records stream in.
pub const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How long a revocation may spend finishing what is in memory.
pub const REVOKE_BUDGET: Duration = Duration::from_secs(10);
/// Records a lane holds (waiting, in hand and in flight), in batches of its
/// largest, above which its partitions are paused until half of them are
/// through; and at least [`LANE_RECORDS`].
pub const BUFFER_BATCHES: usize = 4;
/// The least a lane holds before its partitions are paused: librdkafka
/// drops what it prefetched of a paused partition and fetches it again on
/// resume, so pausing at a few batches cost more in fetching than the lane
/// gained (4 lanes at batch 25 ran at a sixth of one lane's speed).
pub const LANE_RECORDS: usize = 10_000;
/// Bytes (keys and payloads) a lane holds above which its partitions are
/// paused, however few the records.
pub const LANE_BYTES: usize = 8 << 20;
/// How often the stored offsets are compared with what this copy stored.
pub const VERIFY_EVERY: Duration = Duration::from_secs(5);

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

/// Whether the consumer thread goes on after a [`Pipeline::tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticked {
    Running,
    /// A stop was asked for and it is done; `unstored`: records were left in
    /// memory at its deadline (read again by whoever comes next).
    Stopped {
        unstored: bool,
    },
}

pub struct Pipeline<C: Clock + Clone, L: Lanes> {
    clock: C,
    lanes: Vec<Lane<C>>,
    workers: L,
    /// Each assigned partition's lane, and its assignment's epoch: a batch
    /// that comes back from an assignment that ended counts for nothing.
    lane_of: BTreeMap<TopicPartition, usize>,
    epochs: BTreeMap<TopicPartition, u64>,
    next_epoch: u64,
    next_seq: u64,
    offsets: Offsets,
    positions: Positions,
    /// Partitions this pipeline paused.
    paused: BTreeSet<TopicPartition>,
    heartbeat: Arc<Heartbeat>,
    batch_size: usize,
    batch_timeout: Duration,
    /// The largest batch a lane makes (its own or a module's).
    largest: usize,
    /// The fewest records at which a lane pauses ([`LANE_RECORDS`]).
    pause_floor: usize,
    last_commit: Option<Instant>,
    next_verify: Option<Instant>,
    /// A stop cuts every drain short, a revoke's too.
    stop: Arc<StopRequest>,
    /// Partitions read from the database's offset, until their first record:
    /// one below it means the broker reset the partition.
    starts: BTreeMap<TopicPartition, i64>,
    /// Partitions to read again from an offset (the database lost commits).
    seeks: Vec<(TopicPartition, i64)>,
    /// Partitions that must restart at an offset: records above it, fetched
    /// before their seek, are not taken until one at or below it arrives.
    restart_at: BTreeMap<TopicPartition, i64>,
    /// A lane's handler panicked: no more batches go out, and the thread ends.
    panicked: Option<Panicked>,
    /// The partitions an operator paused.
    operator: partitions::Operator,
    /// When the partitions' views were last handed to the heartbeat.
    last_view: Option<Instant>,
}

impl<C: Clock + Clone, L: Lanes> Pipeline<C, L> {
    /// A pipeline with one lane per lane of `workers`, each batching
    /// `batch_size` records or `batch_timeout`.
    pub fn new(batch_size: usize, batch_timeout: Duration, clock: C, heartbeat: Arc<Heartbeat>, workers: L) -> Self {
        let batch_size = batch_size.max(1);
        let batchers = || Batchers::new(batch_size, batch_timeout, &BTreeMap::new(), clock.clone());
        let lanes = (0..workers.count().max(1)).map(|_| Lane::new(batchers())).collect();
        Pipeline {
            clock,
            lanes,
            workers,
            lane_of: BTreeMap::new(),
            epochs: BTreeMap::new(),
            next_epoch: 0,
            next_seq: 0,
            offsets: Offsets::default(),
            positions: Positions::default(),
            paused: BTreeSet::new(),
            heartbeat,
            batch_size,
            largest: batch_size,
            pause_floor: LANE_RECORDS,
            batch_timeout,
            last_commit: None,
            next_verify: None,
            stop: Arc::default(),
            starts: BTreeMap::new(),
            seeks: Vec::new(),
            restart_at: BTreeMap::new(),
            panicked: None,
            operator: Default::default(),
            last_view: None,
        }
    }

    /// The lanes, once the pipeline is done with (their batches in flight
    /// are theirs to finish, or not).
    pub fn into_lanes(self) -> L {
        self.workers
    }

    /// The topics whose modules have batches of their own: each one's size and timeout.
    pub fn with_batches(mut self, own: BTreeMap<String, (usize, Duration)>) -> Self {
        let (size, timeout) = (self.batch_size, self.batch_timeout);
        for lane in &mut self.lanes {
            lane.batcher = Batchers::new(size, timeout, &own, self.clock.clone());
        }
        self.largest = own.values().map(|(size, _)| *size).fold(size, usize::max);
        self
    }

    /// Lanes pause at `floor` records or more (the simulator's worlds hold a
    /// few hundred records, not [`LANE_RECORDS`]).
    pub fn with_pause_floor(mut self, floor: usize) -> Self {
        self.pause_floor = floor;
        self
    }

    /// Drains end by the deadline of a stop requested through `stop`.
    pub fn with_stop(mut self, stop: Arc<StopRequest>) -> Self {
        self.stop = stop;
        self
    }

    /// Partitions whose records in memory were dropped to be read again:
    /// from the database's offset at the next step, or when an operator resumes them.
    pub fn reading_again(&self) -> Vec<TopicPartition> {
        let seeks = self.seeks.iter().map(|(tp, _)| tp.clone());
        seeks.chain(self.operator.assigned(&self.offsets)).collect()
    }

    /// Records held in memory: waiting, in hand and in flight, every lane.
    pub fn buffered(&self) -> usize {
        self.lanes.iter().map(Lane::buffered).sum()
    }

    /// What each lane holds, for a failure message.
    pub fn describe(&self) -> String {
        let now = self.clock.now();
        let lanes = self.lanes.iter().enumerate().map(|(i, l)| format!("lane {i}: {}", l.describe(now)));
        lanes.collect::<Vec<_>>().join("\n")
    }

    /// Most records this pipeline holds in memory: per lane, the pause limit
    /// plus what one step polls (a batch); in bytes, per lane, [`LANE_BYTES`]
    /// plus a step's poll. (The rdkafka seam holds at most one batch more,
    /// polled while a synchronous commit is awaited.)
    pub fn memory_bound(&self) -> usize {
        self.lanes.len() * (self.pause_at() + self.batch_size)
    }

    /// Records a lane holds at which its partitions are paused.
    pub fn pause_at(&self) -> usize {
        (BUFFER_BATCHES * self.largest).max(self.pause_floor)
    }

    /// How long the next poll may wait: until a retry or a batch is due, and
    /// briefly while a lane works.
    pub fn poll_wait(&self) -> Duration {
        let now = self.clock.now();
        let back = self.workers.back_within();
        self.lanes.iter().map(|l| l.due_in(now, back)).min().unwrap_or(MAX_POLL_WAIT).min(MAX_POLL_WAIT)
    }

    /// The consumer thread's loop body: one step, or, once a stop was asked
    /// for, finishing what is in memory and committing it by its deadline.
    pub fn tick<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S) -> Result<Ticked, Panicked> {
        match self.stop.drain_by() {
            Some(by) => self.finish(broker, by).map(|done| Ticked::Stopped { unstored: !done }),
            None => self.run_once(broker, sink).map(|()| Ticked::Running),
        }
    }

    /// One step: poll, take back finished batches, hand out due ones, adjust
    /// pauses, commit. After a panic, what was handled before it (in every
    /// lane) is still committed, so the restarted thread starts at the
    /// failing record.
    pub fn run_once<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S) -> Result<(), Panicked> {
        let stepped = self.step(broker, sink);
        if stepped.is_err() {
            self.wind_down(self.clock.now() + lanes::WIND_DOWN);
            self.commit(broker, When::Sync);
        }
        stepped
    }

    fn step<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S) -> Result<(), Panicked> {
        // Before the poll: a partition paused before it is assigned is paused on assignment.
        self.take_operator_pauses(sink);
        let mut wait = self.poll_wait();
        let mut received = 0;
        while let Some(event) = broker.poll(wait) {
            wait = Duration::ZERO;
            match event {
                Polled::Record(r) => {
                    received += 1;
                    self.heartbeat.client_ok();
                    self.check_start(&r);
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
                Polled::Revoked(tps) => self.revoke(broker, &tps)?,
                Polled::Lost(tps) => {
                    PartitionsLeaving { partitions: &tps, lost: true }.emit();
                    self.release(broker, &tps);
                }
                Polled::Reset(tps) => self.reset(broker, &tps),
                Polled::Committed { offsets, result } => self.answered(&offsets, result),
            }
        }
        self.heartbeat.polled();
        self.verify(sink);
        self.take_read_again();
        self.seek_again(broker);
        self.work(None);
        if let Some(p) = self.panicked.take() {
            return Err(p);
        }
        self.reconcile_pauses(broker);
        self.publish_views();
        self.commit(broker, if received == 0 { When::Idle } else { When::Throttled });
        Ok(())
    }

    /// Finishes what is in memory until `deadline` and commits it; false
    /// when something is left (it is read again by whoever comes next).
    fn finish<B: Broker>(&mut self, broker: &mut B, deadline: Instant) -> Result<bool, Panicked> {
        let drained = self.drain(None, deadline);
        if drained.is_err() {
            self.wind_down(deadline);
        }
        self.commit(broker, When::Sync);
        drained
    }

    /// Puts a polled record in its partition's lane.
    fn accept(&mut self, r: Record) {
        let tp = r.tp();
        // A record fetched before its partition left: the next owner reads it.
        let Some(&lane) = self.lane_of.get(&tp).filter(|_| self.offsets.is_assigned(&tp)) else {
            log::debug!("dropping a record of a partition not assigned position={}", r.position());
            return;
        };
        self.operator.polled(&tp, r.offset);
        if !self.restarts_here(&r) {
            return;
        }
        // Of a partition an operator paused: read again on resume.
        if !self.operator.pauses(&tp) {
            self.lanes[lane].batcher.push(r);
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
