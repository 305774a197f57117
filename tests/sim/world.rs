//! A simulated world: the cluster, a database that stores records and dead
//! letters (and goes down, blips, refuses values), and the members, each
//! the real `Pipeline` driven as the consumer thread drives it. Invariants
//! are checked after every step ([`World::check`]) and at the end
//! ([`World::settle`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cronsumer::common::clock::Clock;
use cronsumer::common::record::{Record, TopicPartition};
use cronsumer::consume::applied::Applied;
use cronsumer::consume::heartbeat::Heartbeat;
use cronsumer::consume::pipeline::{Pipeline, REVOKE_BUDGET};
use cronsumer::consume::poison::PoisonLedger;
use cronsumer::consume::sink::{Failure, FailureKind, Sink, Stored};

use crate::cluster::{Cluster, SimBroker};
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
}

impl Nature {
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

fn pos(r: &Record) -> Pos {
    (r.tp(), r.offset)
}

pub struct Db {
    rng: Rng,
    clock: SimClock,
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
    /// Each call of `handle`: when, and how many records.
    pub calls: Vec<(Instant, usize)>,
    /// Calls of `handle` with one record, by record.
    pub alone: BTreeMap<Pos, u32>,
    /// Per partition: the next offset applied (with the records' effects, atomically).
    pub offsets: BTreeMap<TopicPartition, i64>,
    /// How often each stored record's effect was applied (I7: once).
    pub applied: BTreeMap<Pos, u32>,
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
    offsets: Vec<(TopicPartition, Option<i64>)>,
}

impl Commit {
    /// A commit that writes a partition's first offset waits for its WAL
    /// flush (as the service's do), and so makes every commit before it durable.
    fn is_durable(&self) -> bool {
        self.offsets.iter().any(|(_, before)| before.is_none())
    }
}

impl Db {
    pub fn is_up(&self) -> bool {
        self.up && self.down_until.is_none_or(|t| self.clock.now() >= t)
    }

    fn fail(kind: FailureKind, message: &str) -> Result<(), Failure> {
        Err(Failure { kind, message: message.into() })
    }

    fn positions(&mut self, tps: &[TopicPartition]) -> Result<Vec<Option<i64>>, Failure> {
        if !self.is_up() || self.rng.chance(self.blip) {
            return Self::fail(FailureKind::Transient, "sim: connection refused").map(|_| vec![]);
        }
        Ok(tps.iter().map(|tp| self.offsets.get(tp).copied()).collect())
    }

    /// Applies the records' offsets (in the same "transaction" as their
    /// effects), and keeps what the commit did, to undo it in a crash.
    fn advance(&mut self, records: &[Record], stored: Vec<Pos>, dead: Vec<Pos>) {
        let mut commit = Commit { stored, dead, offsets: vec![] };
        for r in records {
            let tp = r.tp();
            if !commit.offsets.iter().any(|(t, _)| *t == tp) {
                commit.offsets.push((tp.clone(), self.offsets.get(&tp).copied()));
            }
            let next = self.offsets.entry(tp).or_insert(r.offset + 1);
            *next = (*next).max(r.offset + 1);
        }
        self.undo.push(commit);
        if self.undo.len() > 20 {
            self.undo.remove(0);
        }
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
                match before {
                    Some(o) => _ = self.offsets.insert(tp.clone(), o),
                    None => _ = self.offsets.remove(&tp),
                }
                back.retain(|(t, _)| *t != tp);
                back.push((tp, before.unwrap_or(0)));
            }
        }
        self.down_until = Some(self.clock.now() + down);
        back
    }

    /// Whether a record was applied already (by a commit whose answer was lost).
    fn applied_before(&self, r: &Record) -> bool {
        self.offsets.get(&r.tp()).is_some_and(|&s| r.offset < s)
    }

    /// The commit went through; its answer may not reach the caller.
    fn answer(&mut self) -> Result<(), Failure> {
        if self.rng.chance(self.answer_lost) {
            return Self::fail(FailureKind::Transient, "sim: connection lost during commit");
        }
        Ok(())
    }

    fn handle(&mut self, batch: &[Record]) -> Result<(), Failure> {
        self.calls.push((self.clock.now(), batch.len()));
        if let [r] = batch {
            *self.alone.entry(pos(r)).or_default() += 1;
        }
        if !self.is_up() {
            // An outage does not always say so: some of its errors are unclassified.
            let unknown = self.rng.chance(self.outage_unknown);
            let kind = if unknown { FailureKind::Unknown } else { FailureKind::Transient };
            return Self::fail(kind, "sim: connection refused");
        }
        if self.rng.chance(self.blip) {
            return Self::fail(FailureKind::Transient, "sim: connection refused");
        }
        let batch: Vec<Record> = batch.iter().filter(|r| !self.applied_before(r)).cloned().collect();
        for (nature, kind) in [
            (Nature::Panic, FailureKind::Panic),
            (Nature::Refused, FailureKind::Permanent),
            (Nature::Poison, FailureKind::Unknown),
            (Nature::FlakyPanic, FailureKind::Panic),
            (Nature::Flaky, FailureKind::Unknown),
        ] {
            let flaky = matches!(nature, Nature::Flaky | Nature::FlakyPanic);
            let failing = |r: &&Record| {
                Nature::of(r) == nature && (!flaky || self.flaky.get(&pos(r)).copied().unwrap_or(0) < FLAKY_FAILURES)
            };
            if let Some(r) = batch.iter().find(failing) {
                if flaky {
                    *self.flaky.entry(pos(r)).or_default() += 1;
                }
                return Self::fail(kind, &format!("sim: {nature:?} at {}", r.position()));
            }
        }
        let (mut stored, mut dead) = (vec![], vec![]);
        for r in &batch {
            if Nature::of(r) == Nature::Reject {
                self.store_dead_letter(r, "sim: bad payload");
                dead.push(pos(r));
            } else {
                stored.push(pos(r));
                self.ever_settled.insert(pos(r));
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
            }
        }
        self.advance(&batch, stored, dead);
        self.answer()
    }

    fn dead_letter(&mut self, r: &Record, reason: &str) -> Result<(), Failure> {
        if !self.is_up() {
            return Self::fail(FailureKind::Transient, "sim: connection refused");
        }
        if self.applied_before(r) {
            return Ok(());
        }
        self.store_dead_letter(r, reason);
        self.advance(std::slice::from_ref(r), vec![], vec![pos(r)]);
        self.answer()
    }

    fn store_dead_letter(&mut self, r: &Record, reason: &str) {
        self.ever_settled.insert(pos(r));
        if self.stored.contains(&pos(r)) {
            self.violations.push(format!("{} dead-lettered after it was stored", r.position()));
        }
        if self.dead.insert(pos(r), reason.to_string()).is_some() {
            self.violations.push(format!("I7: {} dead-lettered twice", r.position()));
        }
    }
}

/// A member's sink: the shared database, and what this member applied (the
/// service's own bookkeeping, which notices a database that lost commits).
pub struct SimSink {
    pub db: Rc<RefCell<Db>>,
    applied: Applied,
}

impl SimSink {
    /// Fails (nothing applied) when the database fell back below what this
    /// member expects for a partition of `records`.
    fn check_lost(&mut self, records: &[Record]) -> Result<(), Failure> {
        let db = self.db.borrow();
        for r in records {
            let tp = r.tp();
            let Some(&stored) = db.offsets.get(&tp) else { continue };
            if self.applied.expected(&tp, r.offset).is_some_and(|e| stored < e) {
                self.applied.lost(tp, stored);
                return Err(Failure { kind: FailureKind::Transient, message: "sim: the database lost commits".into() });
            }
        }
        Ok(())
    }

    fn stored(&mut self, records: &[Record]) {
        for r in records {
            self.applied.stored(&r.tp(), r.offset + 1);
        }
    }
}

impl Sink for SimSink {
    fn positions(&mut self, tps: &[TopicPartition]) -> Result<Vec<Option<Stored>>, Failure> {
        let starts = self.db.borrow_mut().positions(tps);
        self.applied.assigned(tps, starts.as_deref().ok());
        starts.map(|s| s.into_iter().map(|next| next.map(|next| Stored { next, topic_id: None })).collect())
    }

    fn identify(&mut self, _topic_ids: &BTreeMap<String, String>) {}

    fn released(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.applied.forget(tp);
        }
    }

    fn rewind(&mut self, tp: &TopicPartition, to: i64) {
        // The simulated cluster never resets a partition below its committed offset.
        self.db.borrow_mut().violations.push(format!("{}/{} rewound to {to}", tp.topic, tp.partition));
    }

    fn read_again(&mut self) -> Vec<(TopicPartition, i64)> {
        // As the service's sink does every few seconds (here: every step).
        let db = self.db.borrow();
        if db.is_up() {
            self.applied.verify(db.offsets.iter().map(|(tp, o)| (tp.clone(), *o)));
        }
        drop(db);
        self.applied.take_again()
    }

    fn handle(&mut self, batch: &[Record]) -> Result<(), Failure> {
        if self.db.borrow().is_up() {
            self.check_lost(batch)?;
        }
        let handled = self.db.borrow_mut().handle(batch);
        if handled.is_ok() {
            self.stored(batch);
        }
        handled
    }

    fn dead_letter(&mut self, record: &Record, reason: &str) -> Result<(), Failure> {
        let one = std::slice::from_ref(record);
        if self.db.borrow().is_up() {
            self.check_lost(one)?;
        }
        let stored = self.db.borrow_mut().dead_letter(record, reason);
        if stored.is_ok() {
            self.stored(one);
        }
        stored
    }

    fn healthy(&mut self) -> bool {
        self.db.borrow().is_up()
    }
}

pub struct Member {
    pub pipeline: Option<Pipeline<SimClock>>,
    heartbeat: Arc<Heartbeat>,
    broker: SimBroker,
    sink: SimSink,
    /// Outlives the member's threads, as the supervisor's does.
    poison: PoisonLedger,
    pub restart_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub members: usize,
    pub topics: usize,
    pub partitions: usize,
    pub cooperative: bool,
    pub batch_size: usize,
    pub batch_timeout: Duration,
}

pub struct World {
    pub config: Config,
    pub clock: SimClock,
    pub cluster: Rc<RefCell<Cluster>>,
    pub db: Rc<RefCell<Db>>,
    pub members: Vec<Member>,
    pub produced: BTreeMap<Pos, Nature>,
    /// Per partition, the offset below which I1 was already checked.
    checked: BTreeMap<TopicPartition, i64>,
    /// Per partition, the offset below which every record is stored or dead-lettered.
    settled: BTreeMap<TopicPartition, i64>,
    pub steps: u64,
    pub max_buffered: usize,
    /// Steps that ended in a handler panic (the member restarts).
    pub panics: u64,
}

impl World {
    pub fn new(config: Config) -> World {
        let clock = SimClock::default();
        let tps: Vec<TopicPartition> = (0..config.topics)
            .flat_map(|t| (0..config.partitions).map(move |p| TopicPartition::new(format!("topic{t}"), p as i32)))
            .collect();
        let cluster =
            Rc::new(RefCell::new(Cluster::new(clock.clone(), config.seed, &tps, config.members, config.cooperative)));
        let db = Rc::new(RefCell::new(Db {
            rng: Rng::new(config.seed ^ 0xdb),
            clock: clock.clone(),
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
            answer_lost: 0.0,
            undo: Vec::new(),
            ever_settled: BTreeSet::new(),
        }));
        let members = (0..config.members)
            .map(|m| Member {
                pipeline: None,
                heartbeat: Arc::new(Heartbeat::default()),
                broker: SimBroker { cluster: cluster.clone(), member: m },
                sink: SimSink { db: db.clone(), applied: Applied::default() },
                poison: PoisonLedger::default(),
                restart_at: None,
            })
            .collect();
        let mut w = World {
            config,
            clock,
            cluster,
            db,
            members,
            produced: BTreeMap::new(),
            checked: BTreeMap::new(),
            settled: BTreeMap::new(),
            steps: 0,
            max_buffered: 0,
            panics: 0,
        };
        for m in 0..w.members.len() {
            w.start(m);
        }
        w
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.cluster.borrow().logs.keys().cloned().collect()
    }

    pub fn produce(&mut self, tp: &TopicPartition, nature: Nature) {
        let offset = self.cluster.borrow().logs[tp].len() as i64;
        self.cluster.borrow_mut().produce(tp, nature.payload(self.produced.len() as u64));
        self.produced.insert((tp.clone(), offset), nature);
    }

    /// Starts the member's consumer thread: a fresh pipeline joins the group.
    pub fn start(&mut self, m: usize) {
        let c = &self.config;
        let member = &mut self.members[m];
        member.heartbeat = Arc::new(Heartbeat::default());
        member.pipeline = Some(Pipeline::new(
            c.batch_size,
            c.batch_timeout,
            self.clock.clone(),
            member.poison.clone(),
            member.heartbeat.clone(),
        ));
        member.restart_at = None;
        self.cluster.borrow_mut().join(m);
    }

    /// The thread ended (panic, kill): the client closes, nothing more is
    /// committed; the supervisor starts a new one after `restart_in`.
    pub fn crash(&mut self, m: usize, restart_in: Duration) {
        self.members[m].pipeline = None;
        self.members[m].restart_at = Some(self.now() + restart_in);
        self.cluster.borrow_mut().leave(m);
    }

    /// Graceful stop, as on SIGTERM: finish and commit, then leave. With
    /// the database up throughout, everything in memory must be finished.
    pub fn stop(&mut self, m: usize, restart_in: Duration) {
        let deadline = self.now() + REVOKE_BUDGET;
        let db_works = self.db.borrow().is_up() && self.db.borrow().blip == 0.0;
        let member = &mut self.members[m];
        if let Some(p) = &mut member.pipeline {
            let finished = p.finish(&mut member.broker, &mut member.sink, deadline);
            // Records dropped to be read again (the database lost them) are the next owner's.
            let again = p.reading_again();
            let held = self.in_memory_except(m, &again);
            let ok = match finished {
                Ok(true) => held == 0,
                Ok(false) => !db_works,
                Err(_) => true,
            };
            if !ok {
                let v = format!("member {m} stopped: finish said {finished:?} with {held} records unsettled");
                self.db.borrow_mut().violations.push(v);
            }
        }
        self.crash(m, restart_in);
    }

    pub fn is_running(&self, m: usize) -> bool {
        self.members[m].pipeline.is_some()
    }

    /// One step of member `m` (restarting it first when its time came).
    pub fn step(&mut self, m: usize) {
        self.steps += 1;
        if self.members[m].restart_at.is_some_and(|t| t <= self.now()) {
            self.start(m);
        }
        let member = &mut self.members[m];
        let Some(p) = &mut member.pipeline else {
            self.clock.sleep(Duration::from_millis(10));
            return;
        };
        let result = p.run_once(&mut member.broker, &mut member.sink);
        if result.is_err() {
            self.panics += 1;
            self.crash(m, Duration::from_millis(500));
        }
        self.cluster.borrow_mut().tick();
    }

    /// I1, I4, I2 (the last two recorded by the cluster), I5, and the
    /// database's own (nothing both stored and dead-lettered).
    pub fn check(&mut self) -> Result<(), String> {
        let cluster = self.cluster.borrow();
        let db = self.db.borrow();
        if let Some(v) = cluster.violations.first().or(db.violations.first()) {
            return Err(v.clone());
        }
        for (tp, &c) in &cluster.committed {
            let from = self.checked.get(tp).copied().unwrap_or(0);
            for o in from..c {
                let p = (tp.clone(), o);
                // A database crash may undo what a commit covered: such records are applied again.
                if !db.ever_settled.contains(&p) && !db.dead.contains_key(&p) {
                    return Err(format!(
                        "I1: {}/{} committed {c} past {o}, neither stored nor dead-lettered",
                        tp.topic, tp.partition
                    ));
                }
            }
            self.checked.insert(tp.clone(), c.max(from));
        }
        drop((cluster, db));
        for m in 0..self.members.len() {
            let Some(p) = self.members[m].pipeline.as_ref() else { continue };
            // A partition waiting for its seek holds nothing: what its client fetches meanwhile is dropped.
            let (bound, again) = (p.memory_bound(), p.reading_again());
            let held = self.in_memory_except(m, &again);
            self.max_buffered = self.max_buffered.max(held);
            if held > bound {
                return Err(format!("I5: member {m} holds {held} records, bound {bound}"));
            }
        }
        Ok(())
    }

    /// Records member `m` holds, seen from outside: fetched by its client
    /// (and out of its queue: a record the poll that served a rebalance
    /// fetched waits there) and neither stored nor dead-lettered yet, but
    /// for the partitions `except`.
    fn in_memory_except(&mut self, m: usize, except: &[TopicPartition]) -> usize {
        let cluster = self.cluster.borrow();
        let db = self.db.borrow();
        // A record a database crash undid is not in memory: it is read again
        // (and then not counted here: the bound is checked on the rest).
        let is_settled = |tp: &TopicPartition, o: i64| db.ever_settled.contains(&(tp.clone(), o));
        let client = &cluster.members[m];
        let queued = cluster.queued_records(m);
        let mut held = 0;
        for tp in client.owned.iter().filter(|tp| !except.contains(tp)) {
            let fetched = client.fetch.get(tp).copied().unwrap_or(0);
            let mut from = self.settled.get(tp).copied().unwrap_or(0);
            while from < fetched && is_settled(tp, from) {
                from += 1;
            }
            self.settled.insert(tp.clone(), from);
            held += (from..fetched).filter(|o| !is_settled(tp, *o) && !queued.contains(&(tp.clone(), *o))).count();
        }
        held
    }

    /// Everything is done: each record stored once or dead-lettered once as
    /// its nature says, every commit caught up, nothing paused, nothing in memory.
    pub fn done(&self) -> Result<(), String> {
        let cluster = self.cluster.borrow();
        let db = self.db.borrow();
        for (tp, log) in &cluster.logs {
            let c = cluster.committed.get(tp).copied().unwrap_or(0);
            if c != log.len() as i64 {
                return Err(format!("{}/{} committed {c} of {}", tp.topic, tp.partition, log.len()));
            }
        }
        if !cluster.is_stable() {
            return Err("rebalance in progress".into());
        }
        for (m, member) in self.members.iter().enumerate() {
            if member.pipeline.is_none() {
                return Err(format!("member {m} is down"));
            }
            let client = &cluster.members[m];
            if !client.joined {
                return Err(format!("member {m} is not in the group"));
            }
            if let Some(tp) = client.owned.intersection(&client.paused).next() {
                return Err(format!("I3: member {m} keeps {}/{} paused", tp.topic, tp.partition));
            }
            if member.heartbeat.assigned() != client.owned.len() as i64 {
                return Err(format!(
                    "member {m} reports {} partitions, owns {}",
                    member.heartbeat.assigned(),
                    client.owned.len()
                ));
            }
        }
        for (p, nature) in &self.produced {
            let (stored, dead) = (db.stored.contains(p), db.dead.contains_key(p));
            let ok = if nature.is_stored() { stored && !dead } else { dead && !stored };
            if !ok {
                return Err(format!(
                    "{}/{}@{} ({nature:?}): stored={stored} dead={dead}",
                    p.0.topic, p.0.partition, p.1
                ));
            }
            let applied = db.applied.get(p).copied().unwrap_or(0);
            if nature.is_stored() && applied != 1 {
                return Err(format!("I7: {}/{}@{} applied {applied} times", p.0.topic, p.0.partition, p.1));
            }
        }
        Ok(())
    }

    /// The state of every member, for a failure message.
    pub fn describe(&self) -> String {
        let cluster = self.cluster.borrow();
        let mut out = format!("{:?}\ncommitted={:?}\n", self.config, cluster.committed);
        for (m, member) in self.members.iter().enumerate() {
            out += &format!("member {m}: client {}\n", cluster.describe(m));
            out += &format!(
                "  running={} heartbeat assigned={}\n",
                member.pipeline.is_some(),
                member.heartbeat.assigned()
            );
        }
        out
    }

    /// I3: with the faults over, steps every member until everything is
    /// done, within `limit` of simulated time.
    pub fn settle(&mut self, limit: Duration) -> Result<Duration, String> {
        {
            let mut c = self.cluster.borrow_mut();
            c.commit_fail = 0.0;
            c.poll_error = 0.0;
            c.rebalance_in_poll = 0.0;
            c.seek_fail = 0.0;
            let mut db = self.db.borrow_mut();
            db.up = true;
            db.down_until = None;
            db.blip = 0.0;
            db.answer_lost = 0.0;
        }
        let start = self.now();
        let mut rng = Rng::new(self.config.seed ^ 0x5e771e);
        loop {
            self.check()?;
            if self.done().is_ok() {
                return Ok(self.now() - start);
            }
            if self.now() - start > limit {
                let why = self.done().unwrap_err();
                return Err(format!("I3: not done {limit:?} after the faults stopped: {why}\n{}", self.describe()));
            }
            let m = rng.below(self.members.len() as u64) as usize;
            self.step(m);
        }
    }
}
