//! The simulated database: records stored and dead-lettered with each
//! partition's offset in one "transaction", as the service's sink writes
//! them. It goes down, blips, refuses values, loses a commit's answer, and
//! crashes before its WAL flush (undoing the last commits, effects and
//! offsets together). It decides what a batch does to a stored offset with
//! the service's own rule ([`decide`]): nothing of that is copied here; it
//! checks that no batch moves a stored offset over records never applied.
//!
//! [`SimOffsets`] is what a member's polling thread reads of it, and
//! [`SimLaneSink`] what its lanes run.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use cronsumer::common::clock::Clock;
use cronsumer::common::record::{Record, TopicPartition};
use cronsumer::consume::positions::PartitionState;
use cronsumer::consume::sink::{Failure, FailureKind, LaneSink, Sink, Stored, Txn};
use cronsumer::db::consumer_offsets::{decide, spans, Advance, Row};

use crate::rng::Rng;
use crate::SimClock;

/// What a record is, written in its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nature {
    /// Stored.
    Ok,
    /// Rejected by its handler (bad payload): dead-lettered by the handler.
    Reject,
    /// Refused by the database (a class 22/23 value): a permanent failure.
    Refused,
    /// Fails with an error nobody classified, every time.
    Poison,
    /// Panics the handler, every time.
    Panic,
    /// Fails with an unclassified error [`FLAKY_FAILURES`] times, then works:
    /// stored, never dead-lettered (fewer failures than the poison rule's).
    Flaky,
    /// Panics the handler [`FLAKY_FAILURES`] times, then works: stored.
    FlakyPanic,
}

/// How often a flaky record fails before it works: one short of the poison rule.
pub const FLAKY_FAILURES: u32 = cronsumer::consume::poison::POISON_AFTER - 1;

impl Nature {
    /// Whether the record ends up stored (else dead-lettered).
    pub fn is_stored(self) -> bool {
        matches!(self, Nature::Ok | Nature::Flaky | Nature::FlakyPanic)
    }

    pub fn payload(self, n: u64) -> Vec<u8> {
        format!("{self:?}:{n}").into_bytes()
    }

    fn of(r: &Record) -> Nature {
        let p = r.payload.as_deref().unwrap_or_default();
        [Nature::Reject, Nature::Refused, Nature::Poison, Nature::Panic, Nature::Flaky, Nature::FlakyPanic]
            .into_iter()
            .find(|n| p.starts_with(format!("{n:?}:").as_bytes()))
            .unwrap_or(Nature::Ok)
    }
}

pub type Pos = (TopicPartition, i64);

pub fn pos(r: &Record) -> Pos {
    (r.tp(), r.offset)
}

pub struct Db {
    pub rng: Rng,
    pub clock: SimClock,
    /// Down until this time (an outage), or for good while `up` is false.
    pub down_until: Option<Instant>,
    pub up: bool,
    /// Chance that one call fails transiently while up.
    pub blip: f64,
    pub stored: BTreeSet<Pos>,
    pub dead: BTreeMap<Pos, String>,
    pub violations: Vec<String>,
    /// Failures so far of each flaky record.
    flaky: BTreeMap<Pos, u32>,
    /// Chance that a call during an outage fails with an unclassified error.
    pub outage_unknown: f64,
    /// Each transaction: when, and how many records.
    pub calls: Vec<(Instant, usize)>,
    /// Transactions of one record (not a dead letter), by record.
    pub alone: BTreeMap<Pos, u32>,
    /// Per partition: the next offset applied and the fingerprint of the
    /// record before it (with the records' effects, atomically).
    pub offsets: BTreeMap<TopicPartition, Row>,
    /// How often each stored record's effect was applied (I7: once).
    pub applied: BTreeMap<Pos, u32>,
    /// Per partition, the last offset whose effect (stored or dead letter)
    /// was applied: a partition's effects come in offset order.
    last_effect: BTreeMap<TopicPartition, i64>,
    /// Chance that a call's commit succeeds but its answer is lost (the
    /// connection drops): the caller sees a transient failure.
    pub answer_lost: f64,
    /// The last commits, newest last, as a crash before their WAL flush
    /// would undo them: what each stored, dead-lettered and moved.
    undo: Vec<Commit>,
    /// Records stored or dead-lettered at some time (a crash may have undone them since).
    pub ever_settled: BTreeSet<Pos>,
}

/// What one commit changed, to undo it.
#[derive(Default)]
struct Commit {
    stored: Vec<Pos>,
    dead: Vec<Pos>,
    offsets: Vec<(TopicPartition, Option<Row>)>,
}

impl Commit {
    /// A commit that writes a partition's first offset waits for its WAL
    /// flush (as the service's do), and so makes every commit before it durable.
    fn is_durable(&self) -> bool {
        self.offsets.iter().any(|(_, before)| before.is_none())
    }
}

impl Db {
    pub fn new(clock: SimClock, seed: u64) -> Db {
        Db {
            rng: Rng::new(seed ^ 0xdb),
            clock,
            down_until: None,
            up: true,
            blip: 0.0,
            stored: BTreeSet::new(),
            dead: BTreeMap::new(),
            violations: Vec::new(),
            flaky: BTreeMap::new(),
            outage_unknown: 0.0,
            calls: Vec::new(),
            alone: BTreeMap::new(),
            offsets: BTreeMap::new(),
            applied: BTreeMap::new(),
            last_effect: BTreeMap::new(),
            answer_lost: 0.0,
            undo: Vec::new(),
            ever_settled: BTreeSet::new(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up && self.down_until.is_none_or(|t| self.clock.now() >= t)
    }

    fn fail<T>(kind: FailureKind, message: &str) -> Result<T, Failure> {
        Err(Failure::new(kind, message))
    }

    /// Down or blipping: the call fails (some errors of an outage are unclassified).
    fn reachable(&mut self) -> Result<(), Failure> {
        if !self.is_up() {
            let unknown = self.rng.chance(self.outage_unknown);
            return Self::fail(
                if unknown { FailureKind::Unknown } else { FailureKind::Transient },
                "sim: connection refused",
            );
        }
        if self.rng.chance(self.blip) {
            return Self::fail(FailureKind::Transient, "sim: connection refused");
        }
        Ok(())
    }

    /// A crash before the WAL flush: the last `n` commits are undone,
    /// effects and offsets together, and the database is away for `down`.
    /// Returns the partitions whose offset went back, with their offset now.
    pub fn crash(&mut self, n: usize, down: Duration) -> Vec<(TopicPartition, i64)> {
        let mut back = Vec::new();
        for _ in 0..n {
            if self.undo.last().is_none_or(Commit::is_durable) {
                break;
            }
            let Some(c) = self.undo.pop() else { break };
            for p in c.stored {
                self.stored.remove(&p);
                if let Some(times) = self.applied.get_mut(&p) {
                    *times -= 1;
                }
            }
            for p in c.dead {
                self.dead.remove(&p);
            }
            for (tp, before) in c.offsets {
                let next = before.map_or(0, |r| r.next);
                match before {
                    Some(row) => _ = self.offsets.insert(tp.clone(), row),
                    None => _ = self.offsets.remove(&tp),
                }
                // The partition's effects start again from there.
                self.last_effect.insert(tp.clone(), next - 1);
                back.retain(|(t, _)| *t != tp);
                back.push((tp, next));
            }
        }
        self.down_until = Some(self.clock.now() + down);
        back
    }

    /// One transaction of a lane (see [`LaneSink::apply`]): the offsets
    /// moved as the service's rule decides, then the effects of the records
    /// it does not skip, or their dead letter.
    fn apply(
        &mut self,
        records: &[Record],
        parts: &BTreeMap<TopicPartition, PartitionState>,
        dead_letter: Option<&str>,
    ) -> Result<Txn, Failure> {
        self.calls.push((self.clock.now(), records.len()));
        if let ([r], None) = (records, dead_letter) {
            *self.alone.entry(pos(r)).or_default() += 1;
        }
        self.reachable()?;
        let spans = spans(records);
        let mut moves = Vec::new();
        let mut skips = BTreeMap::new();
        for (tp, span) in &spans {
            let state = parts.get(tp).cloned().unwrap_or(PartitionState {
                mine: None,
                rewind: None,
                durable: false,
                topic_id: None,
            });
            if state.rewind.is_some() {
                // The simulated cluster never resets a partition below its stored offset.
                self.violations.push(format!("{tp} rewound to {:?}", state.rewind));
            }
            let fingerprint_at =
                |o: i64| records.iter().find(|r| r.offset == o && tp.holds(r)).map(Record::fingerprint);
            let advance = decide(self.offsets.get(tp).copied(), *span, state.mine, fingerprint_at);
            let stored = self.offsets.get(tp).map(|r| r.next);
            if advance == Advance::Moved && stored.is_some_and(|s| s < span.first) {
                // The simulated logs have no gaps (no compaction, no transaction markers).
                self.violations.push(format!(
                    "{tp}: a batch from {} moved the stored offset {stored:?} past records never applied",
                    span.first
                ));
            }
            match advance {
                Advance::Lost(stored) => return Ok(Txn::Lost(tp.clone(), stored)),
                Advance::Replaced => self.violations.push(format!("{tp}: a log replaced under its offset")),
                Advance::AppliedBelow(_) => _ = skips.insert(tp.clone(), advance),
                Advance::Moved => {}
            }
            if advance.writes(*span) {
                moves.push((tp.clone(), Row { next: span.next, fingerprint: span.last_fingerprint }));
            }
        }
        let todo: Vec<&Record> =
            records.iter().filter(|r| skips.get(&r.tp()).is_none_or(|a: &Advance| a.applies(r.offset))).collect();
        if dead_letter.is_none() {
            self.fail_as_its_nature_says(&todo)?;
        }
        let mut commit = Commit::default();
        for r in todo {
            match dead_letter {
                Some(reason) => self.dead_letter(r, reason, &mut commit),
                None if Nature::of(r) == Nature::Reject => self.dead_letter(r, "sim: bad payload", &mut commit),
                None => self.store(r, &mut commit),
            }
        }
        for (tp, row) in moves {
            commit.offsets.push((tp.clone(), self.offsets.get(&tp).copied()));
            self.offsets.insert(tp, row);
        }
        self.undo.push(commit);
        if self.undo.len() > 20 {
            self.undo.remove(0);
        }
        // The commit went through; its answer may not reach the caller.
        if self.rng.chance(self.answer_lost) {
            return Self::fail(FailureKind::Transient, "sim: connection lost during commit");
        }
        Ok(Txn::Committed)
    }

    /// A record whose nature fails fails the whole transaction (before anything is written).
    fn fail_as_its_nature_says(&mut self, todo: &[&Record]) -> Result<(), Failure> {
        for (nature, kind) in [
            (Nature::Panic, FailureKind::Panic),
            (Nature::Refused, FailureKind::Permanent),
            (Nature::Poison, FailureKind::Unknown),
            (Nature::FlakyPanic, FailureKind::Panic),
            (Nature::Flaky, FailureKind::Unknown),
        ] {
            let flaky = matches!(nature, Nature::Flaky | Nature::FlakyPanic);
            let failing = |r: &&&Record| {
                Nature::of(r) == nature && (!flaky || self.flaky.get(&pos(r)).copied().unwrap_or(0) < FLAKY_FAILURES)
            };
            if let Some(r) = todo.iter().find(failing) {
                if flaky {
                    *self.flaky.entry(pos(r)).or_default() += 1;
                }
                return Self::fail(kind, &format!("sim: {nature:?} at {}", r.position()));
            }
        }
        Ok(())
    }

    /// A partition's effects come in offset order.
    fn effect(&mut self, r: &Record) {
        let last = self.last_effect.entry(r.tp()).or_insert(-1);
        if r.offset <= *last {
            self.violations.push(format!("{}: an effect at {} after one at {last}", r.tp(), r.offset));
        }
        *last = r.offset;
        self.ever_settled.insert(pos(r));
    }

    fn store(&mut self, r: &Record, commit: &mut Commit) {
        self.effect(r);
        if self.dead.contains_key(&pos(r)) {
            self.violations.push(format!("{} stored after it was dead-lettered", r.position()));
        }
        self.stored.insert(pos(r));
        // The effect: applied again on every delivery, as a counter would be.
        let times = self.applied.entry(pos(r)).or_default();
        *times += 1;
        if *times > 1 {
            self.violations.push(format!("I7: {} applied {times} times", r.position()));
        }
        commit.stored.push(pos(r));
    }

    fn dead_letter(&mut self, r: &Record, reason: &str, commit: &mut Commit) {
        self.effect(r);
        if self.stored.contains(&pos(r)) {
            self.violations.push(format!("{} dead-lettered after it was stored", r.position()));
        }
        if self.dead.insert(pos(r), reason.to_string()).is_some() {
            self.violations.push(format!("I7: {} dead-lettered twice", r.position()));
        }
        commit.dead.push(pos(r));
    }
}

/// What a member's polling thread reads of the database.
pub struct SimOffsets(pub Rc<RefCell<Db>>);

impl Sink for SimOffsets {
    fn positions(&mut self, tps: &[TopicPartition]) -> Result<Vec<Option<Stored>>, Failure> {
        let mut db = self.0.borrow_mut();
        db.reachable()?;
        Ok(tps.iter().map(|tp| db.offsets.get(tp).map(|r| Stored { next: r.next, topic_id: None })).collect())
    }

    fn offsets(&mut self) -> Result<Vec<(TopicPartition, i64)>, Failure> {
        let mut db = self.0.borrow_mut();
        db.reachable()?;
        Ok(db.offsets.iter().map(|(tp, r)| (tp.clone(), r.next)).collect())
    }
}

/// What a member's lanes run against the database.
pub struct SimLaneSink(pub Rc<RefCell<Db>>);

impl LaneSink for SimLaneSink {
    fn apply(
        &mut self,
        records: &[Record],
        parts: &BTreeMap<TopicPartition, PartitionState>,
        dead_letter: Option<&str>,
    ) -> Result<Txn, Failure> {
        self.0.borrow_mut().apply(records, parts, dead_letter)
    }

    fn healthy(&mut self) -> bool {
        self.0.borrow().is_up()
    }
}
