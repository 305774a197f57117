//! The pipeline's lanes: each one's batcher, the batch it holds for a retry
//! and the one in flight; handing out due batches, taking finished ones
//! back (marking their offsets), and draining what is in memory before a
//! revoke or a stop.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Pipeline, DRAIN_RETRY_MAX, LANE_BYTES, MAX_POLL_WAIT, RETRY_AFTER_MAX, RETRY_INITIAL, RETRY_MAX};
use crate::common::backoff::Backoff;
use crate::common::clock::Clock;
use crate::common::record::{Record, TopicPartition};
use crate::consume::batcher::Batchers;
use crate::consume::heartbeat::RetryingBatch;
use crate::consume::lane::{Done, Job, Outcome};
use crate::consume::sink::Panicked;
use crate::consume::workers::Lanes;
use crate::events::{BatchHandled, BatchRecovered, BatchRetrying, Event as _, LaneFinished};

/// How long a pipeline whose lane panicked waits for the other lanes' batches.
pub(super) const WIND_DOWN: Duration = Duration::from_secs(10);

/// A batch that failed transiently, waiting in its lane for its next attempt.
struct HeldBatch {
    records: Vec<Record>,
    backoff: Backoff,
    retry_at: Instant,
}

/// The batch a lane works on.
struct InFlight {
    seq: u64,
    records: usize,
    bytes: usize,
    since: Instant,
    /// Its partitions, with their assignments' epochs when it went out.
    epochs: BTreeMap<TopicPartition, u64>,
    /// Its backoff, when it is the held batch's retry.
    retry: Option<Backoff>,
    /// Its records of each partition, and the oldest one's timestamp.
    per_tp: BTreeMap<TopicPartition, (usize, Option<i64>)>,
    /// Its first offset of each partition.
    firsts: BTreeMap<TopicPartition, i64>,
}

/// Counts `n` records of `tp` into `held`, the oldest's timestamp `oldest`.
fn count(
    held: &mut BTreeMap<TopicPartition, (usize, Option<i64>)>,
    tp: &TopicPartition,
    n: usize,
    oldest: Option<i64>,
) {
    // Most calls find the partition: no name is copied for them.
    let e = match held.get_mut(tp) {
        Some(e) => e,
        None => held.entry(tp.clone()).or_default(),
    };
    e.0 += n;
    e.1 = e.1.into_iter().chain(oldest).min();
}

pub(super) struct Lane<C: Clock> {
    pub(super) batcher: Batchers<C>,
    held: Option<HeldBatch>,
    in_flight: Option<InFlight>,
    /// Its partitions are paused: it holds too much.
    backpressure: bool,
}

impl<C: Clock> Lane<C> {
    pub(super) fn new(batcher: Batchers<C>) -> Self {
        Lane { batcher, held: None, in_flight: None, backpressure: false }
    }

    /// Records it holds: waiting, in hand and in flight.
    pub(super) fn buffered(&self) -> usize {
        self.batcher.len()
            + self.held.as_ref().map_or(0, |h| h.records.len())
            + self.in_flight.as_ref().map_or(0, |f| f.records)
    }

    /// The bytes (keys and payloads) of the records it holds.
    fn buffered_bytes(&self) -> usize {
        self.batcher.bytes()
            + self.held.as_ref().map_or(0, |h| h.records.iter().map(Record::bytes).sum())
            + self.in_flight.as_ref().map_or(0, |f| f.bytes)
    }

    /// How long until it has something to do (`back` while it works).
    pub(super) fn due_in(&self, now: Instant, back: Duration) -> Duration {
        if self.in_flight.is_some() {
            back
        } else if let Some(h) = &self.held {
            h.retry_at.saturating_duration_since(now)
        } else {
            self.batcher.time_left().unwrap_or(MAX_POLL_WAIT)
        }
    }

    /// Whether its partitions must be paused: it holds `limit` records or
    /// [`LANE_BYTES`] or more, until it is down to half of both.
    pub(super) fn relieve(&mut self, limit: usize) -> bool {
        let (buffered, bytes) = (self.buffered(), self.buffered_bytes());
        if buffered >= limit || bytes >= LANE_BYTES {
            self.backpressure = true;
        } else if buffered <= limit / 2 && bytes <= LANE_BYTES / 2 {
            self.backpressure = false;
        }
        self.backpressure
    }

    /// The partitions of the batch in hand.
    pub(super) fn held_partitions(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        let records = self.held.iter().flat_map(|h| &h.records);
        records.map(Record::tp).collect::<BTreeSet<_>>().into_iter()
    }

    /// What it holds, for a failure message.
    pub(super) fn describe(&self, now: Instant) -> String {
        let held = self.held.as_ref().map(|h| {
            let first = h.records.first().map(Record::position);
            format!("{} from {first:?} retry in {:?}", h.records.len(), h.retry_at.saturating_duration_since(now))
        });
        let flight = self.in_flight.as_ref().map(|f| (f.seq, f.records, f.epochs.keys().collect::<Vec<_>>()));
        format!("waiting={} held={held:?} in_flight={flight:?}", self.batcher.len())
    }

    /// Drops the records of `tp` waiting for a batch; the lowest offset dropped.
    pub(super) fn discard_waiting(&mut self, tp: &TopicPartition) -> Option<i64> {
        let mut first = None::<i64>;
        self.batcher.discard(|r| {
            let of = tp.holds(r);
            if of {
                first = Some(first.map_or(r.offset, |f| f.min(r.offset)));
            }
            of
        });
        first
    }

    /// The lowest offset of `tp` in the batch in hand or in flight (what of
    /// it is not handled yet may come back to be retried).
    pub(super) fn first_in_hand(&self, tp: &TopicPartition) -> Option<i64> {
        let held = self.held.iter().flat_map(|h| &h.records).filter(|r| tp.holds(r)).map(|r| r.offset).min();
        held.into_iter().chain(self.in_flight.as_ref().and_then(|f| f.firsts.get(tp).copied())).min()
    }

    /// Adds what it holds of each partition (waiting, in hand, in flight) to `held`.
    pub(super) fn count_held(&self, held: &mut BTreeMap<TopicPartition, (usize, Option<i64>)>) {
        let mut one = |r: &Record| count(held, &r.tp(), 1, r.timestamp);
        self.batcher.each(&mut one);
        self.held.iter().flat_map(|h| &h.records).for_each(one);
        for (tp, (n, oldest)) in self.in_flight.iter().flat_map(|f| &f.per_tp) {
            count(held, tp, *n, *oldest);
        }
    }

    /// Whether it holds records of `tps` (any, with `None`).
    fn holds(&self, tps: Option<&[TopicPartition]>) -> bool {
        let of = |tp: &TopicPartition| tps.is_none_or(|tps| tps.contains(tp));
        self.batcher.holds(|r| of(&r.tp()))
            || self.held.iter().flat_map(|h| &h.records).any(|r| of(&r.tp()))
            || self.in_flight.as_ref().is_some_and(|f| f.epochs.keys().any(of))
    }
}

impl<C: Clock + Clone, L: Lanes> Pipeline<C, L> {
    /// Takes back the finished batches and hands each idle lane its next
    /// due one, until no lane is both idle and due (a batch may finish at
    /// once: one lane on this thread). A drain (`until` its deadline) hands
    /// out whatever waits, and no more once its deadline passed.
    pub(super) fn work(&mut self, until: Option<Instant>) {
        let force = until.is_some();
        loop {
            self.collect(Duration::ZERO);
            if until.is_some_and(|t| self.clock.now() >= t) {
                return;
            }
            let mut submitted = false;
            for lane in 0..self.lanes.len() {
                submitted |= self.submit_next(lane, force);
            }
            if !submitted {
                return;
            }
        }
    }

    /// Hands lane `i` its next due batch, if it is idle; whether it did.
    fn submit_next(&mut self, i: usize, force: bool) -> bool {
        let now = self.clock.now();
        let lane = &mut self.lanes[i];
        if self.panicked.is_some() || lane.in_flight.is_some() {
            return false;
        }
        let (records, retry) = match lane.held.take() {
            Some(h) if now >= h.retry_at => (h.records, Some(h.backoff)),
            Some(h) => {
                lane.held = Some(h);
                return false;
            }
            None => match lane.batcher.take(force) {
                Some(batch) => (batch, None),
                None => return false,
            },
        };
        self.next_seq += 1;
        let mut parts = BTreeMap::new();
        let mut epochs = BTreeMap::new();
        let mut per_tp = BTreeMap::new();
        let mut firsts = BTreeMap::new();
        for r in &records {
            let tp = r.tp();
            count(&mut per_tp, &tp, 1, r.timestamp);
            if !parts.contains_key(&tp) {
                // A batch holds a partition's records in offset order.
                firsts.insert(tp.clone(), r.offset);
                parts.insert(tp.clone(), self.positions.state(&tp, r.offset));
                epochs.insert(tp.clone(), self.epochs.get(&tp).copied().unwrap_or_default());
            }
        }
        let (n, bytes) = (records.len(), records.iter().map(Record::bytes).sum());
        self.lanes[i].in_flight =
            Some(InFlight { seq: self.next_seq, records: n, bytes, since: now, epochs, retry, per_tp, firsts });
        self.heartbeat.lane_busy(i, true);
        self.workers.submit(Job { lane: i, seq: self.next_seq, records, parts });
        true
    }

    /// Takes back the batches that finished, waiting at most `wait` for one.
    pub(super) fn collect(&mut self, wait: Duration) {
        for done in self.workers.finished(wait) {
            self.finished(done);
        }
    }

    /// A lane's batch came back: its offsets are marked (those of partitions
    /// still in the assignment it went out in), and what was not handled is
    /// held for a retry, or, after a panic, left to be read again.
    fn finished(&mut self, done: Done) {
        let now = self.clock.now();
        let lane = &mut self.lanes[done.lane];
        let Some(flight) = lane.in_flight.take_if(|f| f.seq == done.seq) else { return };
        self.heartbeat.lane_busy(done.lane, false);
        LaneFinished { lane: done.lane, records: flight.records, busy: now.saturating_duration_since(flight.since) }
            .emit();
        let current = |tp: &TopicPartition| {
            self.lane_of.get(tp) == Some(&done.lane) && self.epochs.get(tp) == flight.epochs.get(tp)
        };
        for (tp, next) in done.stored.iter().filter(|(tp, _)| current(tp)) {
            self.positions.stored(tp, *next);
            self.offsets.handled(tp, *next);
        }
        if let Some((tp, stored)) = done.lost.filter(|(tp, _)| current(tp)) {
            self.positions.lost(tp, stored);
        }
        if done.handled > 0 {
            self.heartbeat.handled(done.handled);
            BatchHandled { records: done.handled }.emit();
        }
        let (reason, soon, after) = match done.outcome {
            Outcome::Done => {
                if let Some(backoff) = &flight.retry {
                    BatchRecovered { records: flight.records, attempts: backoff.attempts() }.emit();
                }
                self.heartbeat.set_retrying(done.lane, None);
                return;
            }
            Outcome::Retry(reason, after) => (reason, false, after),
            Outcome::Soon(reason) => (reason, true, None),
            Outcome::Panicked(p) => {
                // The thread ends: what this batch did not handle is read again.
                self.panicked.get_or_insert(p);
                return;
            }
        };
        let rest: Vec<Record> = done.rest.into_iter().filter(|r| current(&r.tp())).collect();
        if rest.is_empty() {
            self.heartbeat.set_retrying(done.lane, None);
            return;
        }
        let mut backoff = flight.retry.unwrap_or_else(|| Backoff::new(RETRY_INITIAL, RETRY_MAX));
        if soon {
            backoff.reset();
        }
        // A service's `Retry-After` is honoured, up to a bound.
        let delay = backoff.next_delay().max(after.unwrap_or_default().min(RETRY_AFTER_MAX));
        let (first, records, attempt) = (rest[0].position(), rest.len(), backoff.attempts());
        BatchRetrying { lane: done.lane, first: &first, records, attempt, retry_in: delay, error: &reason }.emit();
        self.heartbeat.set_retrying(done.lane, Some(RetryingBatch { first, records, attempts: attempt, reason }));
        self.lanes[done.lane].held = Some(HeldBatch { records: rest, backoff, retry_at: now + delay });
    }

    /// Finishes what is in memory of `tps` (of every partition, with
    /// `None`) until `deadline`, retrying transient failures; the other
    /// lanes go on meanwhile. Returns false if something of them is left.
    pub(super) fn drain(&mut self, tps: Option<&[TopicPartition]>, deadline: Instant) -> Result<bool, Panicked> {
        loop {
            let deadline = self.stop.drain_by().map_or(deadline, |stop| stop.min(deadline));
            self.take_read_again();
            self.hurry(deadline);
            self.work(Some(deadline));
            if let Some(p) = self.panicked.take() {
                return Err(p);
            }
            let left = self.lanes.iter().any(|l| l.holds(tps));
            if !left {
                return Ok(true);
            }
            if self.clock.now() >= deadline {
                return Ok(false);
            }
            // Until a batch comes back, or the next retry is due.
            self.hurry(deadline);
            let next = self.lanes.iter().filter_map(|l| l.held.as_ref().map(|h| h.retry_at)).min();
            let wait = next.unwrap_or(deadline).min(deadline).saturating_duration_since(self.clock.now());
            if self.lanes.iter().any(|l| l.in_flight.is_some()) {
                self.collect(wait.min(MAX_POLL_WAIT));
            } else {
                self.clock.sleep(wait);
            }
        }
    }

    /// Time is short: the batches in hand are retried at least every
    /// [`DRAIN_RETRY_MAX`] from now, the last time at the deadline.
    fn hurry(&mut self, deadline: Instant) {
        let now = self.clock.now();
        for held in self.lanes.iter_mut().filter_map(|l| l.held.as_mut()) {
            held.retry_at = held.retry_at.min(now + DRAIN_RETRY_MAX).min(deadline.max(now));
        }
    }

    /// After a panic: the other lanes' batches in flight are waited for
    /// until `deadline` (or a stop's), so that what they stored is committed
    /// before the thread ends.
    pub(super) fn wind_down(&mut self, deadline: Instant) {
        let until = self.stop.drain_by().map_or(deadline, |stop| stop.min(deadline));
        while self.lanes.iter().any(|l| l.in_flight.is_some()) && self.clock.now() < until {
            self.collect(MAX_POLL_WAIT);
        }
    }

    /// Drops the records in memory of the partitions `tps` (a batch of them
    /// in flight comes back for nothing: their epoch moved on).
    pub(super) fn drop_held(&mut self, tps: &[TopicPartition]) {
        let leaving = |r: &Record| tps.iter().any(|tp| tp.holds(r));
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            lane.batcher.discard(leaving);
            if let Some(held) = &mut lane.held {
                held.records.retain(|r| !leaving(r));
                if held.records.is_empty() {
                    lane.held = None;
                    self.heartbeat.set_retrying(i, None);
                }
            }
        }
    }

    /// Puts `tp` in a lane, in a new epoch: the lane a batch of it from an
    /// earlier assignment is still in flight in (so never two batches of it
    /// are), else the lane with the fewest partitions.
    pub(super) fn place(&mut self, tp: &TopicPartition) {
        let mut counts = vec![0usize; self.lanes.len()];
        for (_, &lane) in self.lane_of.iter().filter(|(t, _)| *t != tp) {
            counts[lane] += 1;
        }
        let in_flight = self.lanes.iter().position(|l| l.in_flight.as_ref().is_some_and(|f| f.epochs.contains_key(tp)));
        let lane = self
            .lane_of
            .get(tp)
            .copied()
            .or(in_flight)
            .unwrap_or_else(|| (0..counts.len()).min_by_key(|&l| (counts[l], l)).unwrap_or_default());
        self.lane_of.insert(tp.clone(), lane);
        self.new_epoch(tp);
    }

    /// Whatever of `tp` is in flight counts for nothing when it comes back.
    pub(super) fn new_epoch(&mut self, tp: &TopicPartition) {
        self.next_epoch += 1;
        self.epochs.insert(tp.clone(), self.next_epoch);
    }

    /// `tp` left this copy.
    pub(super) fn unplace(&mut self, tp: &TopicPartition) {
        self.lane_of.remove(tp);
        self.epochs.remove(tp);
    }
}
