//! The simulated Kafka cluster: partition logs, one consumer group with
//! eager or cooperative rebalances and generations, members whose session is
//! lost when they stop polling, commits that fail or answer late, and a
//! client-side pause that survives unassign and assign (as librdkafka's
//! does). Invariants I2 (no backwards commit) and I4 (no commit outside the
//! committing member's assignment) are checked on every commit.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use cronsumer::common::clock::Clock;
use cronsumer::common::record::{Record, TopicPartition};
use cronsumer::consume::broker::{Broker, BrokerError, BrokerErrorKind, CommitMode, Polled, Start};

use crate::rng::Rng;
use crate::SimClock;

/// A member that has not polled for this long loses its session.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Client {
    pub joined: bool,
    /// What the client fetches: taken by `assign`, let go by `unassign`.
    pub owned: BTreeSet<TopicPartition>,
    /// Survives unassign and assign, like librdkafka's application pause.
    pub paused: BTreeSet<TopicPartition>,
    pub fetch: BTreeMap<TopicPartition, i64>,
    /// Offsets of asynchronous commits whose answer was not delivered yet.
    in_flight: BTreeMap<TopicPartition, i64>,
    /// Highest offset per partition whose commit the member was told succeeded.
    acked: BTreeMap<TopicPartition, i64>,
    events: VecDeque<(Instant, Polled)>,
    generation: u64,
    /// An `Assigned` event not completed yet.
    assigning: bool,
    /// Partitions a `Revoked` event asked for, not let go yet.
    revoking: BTreeSet<TopicPartition>,
    /// The session expired: commits fail until the `Lost` is completed.
    lost: bool,
    last_poll: Option<Instant>,
}

impl Client {
    fn ack(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, o) in offsets {
            if self.owned.contains(tp) {
                let a = self.acked.entry(tp.clone()).or_insert(*o);
                *a = (*a).max(*o);
            }
        }
    }

    /// Queues an event for `at`, in time order (among equals, last).
    fn enqueue(&mut self, at: Instant, event: Polled) {
        let pos = self.events.iter().rposition(|(t, _)| *t <= at).map_or(0, |i| i + 1);
        self.events.insert(pos, (at, event));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Stable,
    /// Waiting for revocations; then the target assignment is handed out.
    Revoking,
    /// Waiting for members to complete their `Assigned`.
    Assigning,
}

/// An asynchronous commit on its way to the coordinator.
struct Sent {
    due: Instant,
    member: usize,
    /// The member's generation when it sent the commit.
    generation: u64,
    offsets: Vec<(TopicPartition, i64)>,
}

pub struct Cluster {
    pub clock: SimClock,
    rng: Rng,
    /// Each record's payload, by partition; the offset is the index.
    pub logs: BTreeMap<TopicPartition, Vec<Vec<u8>>>,
    pub committed: BTreeMap<TopicPartition, i64>,
    pub members: Vec<Client>,
    pub cooperative: bool,
    generation: u64,
    phase: Phase,
    target: BTreeMap<usize, BTreeSet<TopicPartition>>,
    again: bool,
    pub commit_fail: f64,
    pub poll_error: f64,
    /// Chance that a seek fails (the pipeline must try again, taking nothing past it meanwhile).
    pub seek_fail: f64,
    /// Chance that a rebalance starts inside a poll (as rdkafka serves it).
    pub rebalance_in_poll: f64,
    /// Starts a rebalance inside the poll after this many more polls.
    pub rebalance_after_polls: Option<u32>,
    pub violations: Vec<String>,
    /// Partitions whose database offset a crash set back, with the lowest
    /// it went to: commits may go back that far (Kafka's are advisory, and
    /// follow the database's), never further.
    went_back: BTreeMap<TopicPartition, i64>,
    pub commits: u64,
    sent: VecDeque<Sent>,
}

impl Cluster {
    pub fn new(clock: SimClock, seed: u64, tps: &[TopicPartition], members: usize, cooperative: bool) -> Self {
        Cluster {
            clock,
            rng: Rng::new(seed ^ 0xc1u64),
            logs: tps.iter().map(|tp| (tp.clone(), Vec::new())).collect(),
            committed: BTreeMap::new(),
            members: (0..members).map(|_| Client::default()).collect(),
            cooperative,
            generation: 1,
            phase: Phase::Stable,
            target: BTreeMap::new(),
            again: false,
            commit_fail: 0.0,
            poll_error: 0.0,
            seek_fail: 0.0,
            rebalance_in_poll: 0.0,
            rebalance_after_polls: None,
            violations: Vec::new(),
            went_back: BTreeMap::new(),
            commits: 0,
            sent: VecDeque::new(),
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn describe(&self, m: usize) -> String {
        let c = &self.members[m];
        format!(
            "joined={} lost={} gen={}/{} owned={:?} paused={:?} fetch={:?} assigning={} revoking={:?} events={:?} phase={:?}",
            c.joined, c.lost, c.generation, self.generation, c.owned, c.paused, c.fetch, c.assigning, c.revoking,
            c.events, self.phase
        )
    }

    /// Records fetched for member `m` but still queued behind an event (not in its pipeline yet).
    pub fn queued_records(&self, m: usize) -> Vec<(TopicPartition, i64)> {
        let queued = self.members[m].events.iter().filter_map(|(_, e)| match e {
            Polled::Record(r) => Some((r.tp(), r.offset)),
            _ => None,
        });
        queued.collect()
    }

    /// A database crash set these partitions' offsets back (see `went_back`).
    pub fn database_went_back(&mut self, back: &[(TopicPartition, i64)]) {
        for (tp, now) in back {
            let floor = self.went_back.entry(tp.clone()).or_insert(*now);
            *floor = (*floor).min(*now);
        }
    }

    pub fn is_stable(&self) -> bool {
        self.phase == Phase::Stable && !self.again
    }

    pub fn join(&mut self, m: usize) {
        self.members[m] = Client { joined: true, last_poll: Some(self.now()), ..Client::default() };
        self.rebalance();
    }

    /// The member closed its client (stopped, or its thread ended).
    pub fn leave(&mut self, m: usize) {
        self.members[m] = Client::default();
        self.rebalance();
    }

    /// The member's session expired: its partitions are handed out again
    /// while its client still thinks it has them, until it sees `Lost`.
    pub fn expire(&mut self, m: usize) {
        let now = self.now();
        let c = &mut self.members[m];
        if !c.joined {
            return;
        }
        c.joined = false;
        c.lost = true;
        c.assigning = false;
        c.revoking.clear();
        c.events.retain(|(_, e)| matches!(e, Polled::Committed { .. }));
        let gone: Vec<TopicPartition> = c.owned.iter().cloned().collect();
        c.enqueue(now, Polled::Lost(gone));
        self.rebalance();
    }

    /// Expires the sessions of members that stopped polling.
    pub fn tick(&mut self) {
        self.land_sent(None);
        let now = self.now();
        for m in 0..self.members.len() {
            let c = &self.members[m];
            if c.joined && c.last_poll.is_some_and(|t| now.saturating_duration_since(t) > MAX_POLL_INTERVAL) {
                self.expire(m);
            }
        }
        self.progress();
    }

    /// Starts a rebalance, or asks for one after the current one.
    pub fn rebalance(&mut self) {
        if self.phase != Phase::Stable {
            self.again = true;
            self.progress();
            return;
        }
        self.again = false;
        let joined: Vec<usize> = (0..self.members.len()).filter(|&m| self.members[m].joined).collect();
        self.target = self.plan(&joined);
        let now = self.now();
        for &m in &joined {
            let c = &mut self.members[m];
            let leaving: BTreeSet<TopicPartition> = if self.cooperative {
                c.owned.difference(&self.target[&m]).cloned().collect()
            } else {
                c.owned.clone()
            };
            if !leaving.is_empty() {
                c.enqueue(now, Polled::Revoked(leaving.iter().cloned().collect()));
                c.revoking = leaving;
            }
        }
        self.phase = Phase::Revoking;
        self.progress();
    }

    /// The target assignment: balanced; sticky when cooperative, rotated
    /// at random when eager.
    fn plan(&mut self, joined: &[usize]) -> BTreeMap<usize, BTreeSet<TopicPartition>> {
        let mut target: BTreeMap<usize, BTreeSet<TopicPartition>> =
            joined.iter().map(|&m| (m, BTreeSet::new())).collect();
        if joined.is_empty() {
            return target;
        }
        let tps: Vec<TopicPartition> = self.logs.keys().cloned().collect();
        let share = tps.len().div_ceil(joined.len());
        let mut free = Vec::new();
        for tp in &tps {
            let owner = joined.iter().find(|&&m| self.members[m].owned.contains(tp));
            match owner {
                Some(&m) if self.cooperative && target[&m].len() < share => {
                    target.get_mut(&m).unwrap().insert(tp.clone());
                }
                _ => free.push(tp.clone()),
            }
        }
        let rotate = self.rng.below(joined.len() as u64) as usize;
        let mut i = 0;
        for tp in free {
            loop {
                let m = joined[(i + rotate) % joined.len()];
                i += 1;
                if target[&m].len() < share {
                    target.get_mut(&m).unwrap().insert(tp);
                    break;
                }
            }
        }
        target
    }

    /// Moves the rebalance on once every member did its part.
    fn progress(&mut self) {
        if self.phase == Phase::Revoking && self.members.iter().all(|c| !c.joined || c.revoking.is_empty()) {
            self.generation += 1;
            let now = self.now();
            for (&m, tps) in &self.target {
                let c = &mut self.members[m];
                if !c.joined {
                    continue;
                }
                c.generation = self.generation;
                let new: Vec<TopicPartition> = tps.difference(&c.owned).cloned().collect();
                if !new.is_empty() {
                    c.enqueue(now, Polled::Assigned(new));
                    c.assigning = true;
                }
            }
            self.phase = Phase::Assigning;
        }
        if self.phase == Phase::Assigning && self.members.iter().all(|c| !c.joined || !c.assigning) {
            self.phase = Phase::Stable;
            if self.again {
                self.rebalance();
            }
        }
    }

    pub fn produce(&mut self, tp: &TopicPartition, payload: Vec<u8>) {
        self.logs.get_mut(tp).expect("known partition").push(payload);
    }

    fn next_event(&mut self, m: usize) -> Option<Polled> {
        let now = self.now();
        let c = &mut self.members[m];
        if c.events.front().is_none_or(|(t, _)| *t > now) {
            return None;
        }
        let event = c.events.pop_front().map(|(_, e)| e);
        if let Some(Polled::Committed { offsets, result }) = &event {
            for (tp, o) in offsets {
                if c.in_flight.get(tp) == Some(o) {
                    c.in_flight.remove(tp);
                }
            }
            if result.is_ok() {
                c.ack(offsets);
            }
        }
        event
    }

    fn poll(&mut self, m: usize, timeout: Duration) -> Option<Polled> {
        self.members[m].last_poll = Some(self.now());
        let countdown = self.rebalance_after_polls.map(|n| n.saturating_sub(1));
        self.rebalance_after_polls = countdown.filter(|n| *n > 0);
        if countdown == Some(0) || self.rng.chance(self.rebalance_in_poll) {
            // As rdkafka serves a rebalance inside a poll that also returns a
            // record fetched before it: the record comes after the event.
            let fetched = self.fetch(m);
            self.rebalance();
            let now = self.now();
            if let Some(r) = fetched {
                self.members[m].enqueue(now, r);
            }
        }
        if let Some(e) = self.next_event(m) {
            return Some(e);
        }
        if self.rng.chance(self.poll_error) {
            return Some(Polled::Error(BrokerError::new(BrokerErrorKind::Unreachable, "sim: all brokers down")));
        }
        if let Some(r) = self.fetch(m) {
            return Some(r);
        }
        self.clock.sleep(timeout);
        self.members[m].last_poll = Some(self.now());
        self.next_event(m)
    }

    /// The next record of a fetchable partition, picked at random.
    fn fetch(&mut self, m: usize) -> Option<Polled> {
        let c = &self.members[m];
        let ready: Vec<TopicPartition> = c
            .owned
            .iter()
            .filter(|tp| !c.paused.contains(*tp) && c.fetch[*tp] < self.logs[*tp].len() as i64)
            .cloned()
            .collect();
        if ready.is_empty() {
            return None;
        }
        let tp = ready[self.rng.below(ready.len() as u64) as usize].clone();
        let c = &mut self.members[m];
        let offset = c.fetch[&tp];
        c.fetch.insert(tp.clone(), offset + 1);
        Some(Polled::Record(Record {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
            key: None,
            payload: Some(self.logs[&tp][offset as usize].clone()),
            timestamp: None,
        }))
    }

    /// A commit reaches the coordinator: it counts if the member is in the
    /// current generation (I2 checked here).
    fn land(&mut self, m: usize, generation: u64, offsets: &[(TopicPartition, i64)]) -> Result<(), BrokerError> {
        let c = &self.members[m];
        if !(c.joined && !c.lost && generation == self.generation) {
            return Err(BrokerError::new(BrokerErrorKind::Refused, "sim: illegal generation"));
        }
        for (tp, o) in offsets {
            let before = self.committed.get(tp).copied().unwrap_or(0);
            let floor = self.went_back.get(tp).copied();
            if *o < before && floor.is_none_or(|f| *o < f) {
                self.violations.push(format!(
                    "I2: {}/{} commit moved back from {before} to {o} (member {m})",
                    tp.topic, tp.partition
                ));
            }
            self.committed.insert(tp.clone(), *o);
        }
        self.commits += 1;
        Ok(())
    }

    /// Lands the asynchronous commits due by now (all of member `only`'s,
    /// due or not: one connection keeps a member's commits in order).
    fn land_sent(&mut self, only: Option<usize>) {
        let now = self.now();
        let mut keep = VecDeque::new();
        while let Some(sent) = self.sent.pop_front() {
            if sent.due <= now || only == Some(sent.member) {
                let result = self.land(sent.member, sent.generation, &sent.offsets);
                self.members[sent.member].enqueue(sent.due, Polled::Committed { offsets: sent.offsets, result });
            } else {
                keep.push_back(sent);
            }
        }
        self.sent = keep;
    }

    fn commit(&mut self, m: usize, offsets: &[(TopicPartition, i64)], mode: CommitMode) -> Result<(), BrokerError> {
        for (tp, o) in offsets {
            if !self.members[m].owned.contains(tp) {
                self.violations
                    .push(format!("I4: member {m} committed {}/{}@{o} outside its assignment", tp.topic, tp.partition));
            }
            if self.members[m].acked.get(tp).is_some_and(|a| o <= a) {
                self.violations.push(format!(
                    "I6: member {m} committed {}/{}@{o} again after its success",
                    tp.topic, tp.partition
                ));
            }
        }
        let failed = self.rng.chance(self.commit_fail);
        if mode == CommitMode::Sync {
            self.land_sent(Some(m));
            let generation = self.members[m].generation;
            let result = if failed {
                Err(BrokerError::new(BrokerErrorKind::Unreachable, "sim: commit failed (coordinator unavailable)"))
            } else {
                self.land(m, generation, offsets)
            };
            if result.is_ok() {
                self.members[m].ack(offsets);
            }
            return result;
        }
        let c = &mut self.members[m];
        for (tp, o) in offsets {
            if c.in_flight.get(tp).is_some_and(|f| o <= f) {
                self.violations
                    .push(format!("I6: member {m} sent {}/{}@{o} again while in flight", tp.topic, tp.partition));
            }
            c.in_flight.insert(tp.clone(), *o);
        }
        let after = self.sent.iter().filter(|s| s.member == m).map(|s| s.due).max();
        let due = (self.now() + Duration::from_millis(self.rng.below(300))).max(after.unwrap_or_else(|| self.now()));
        if failed {
            let result =
                Err(BrokerError::new(BrokerErrorKind::Unreachable, "sim: commit failed (coordinator unavailable)"));
            self.members[m].enqueue(due, Polled::Committed { offsets: offsets.to_vec(), result });
        } else {
            let generation = self.members[m].generation;
            self.sent.push_back(Sent { due, member: m, generation, offsets: offsets.to_vec() });
        }
        Ok(())
    }

    fn assign(&mut self, m: usize, tps: &[(TopicPartition, Start)]) {
        let c = &mut self.members[m];
        for (tp, start) in tps {
            c.owned.insert(tp.clone());
            let offset = match start {
                Start::At(o) => *o,
                Start::Committed => self.committed.get(tp).copied().unwrap_or(0),
                Start::Beginning => 0,
            };
            c.fetch.insert(tp.clone(), offset);
        }
        c.assigning = false;
        self.progress();
    }

    fn unassign(&mut self, m: usize, tps: &[TopicPartition]) {
        let c = &mut self.members[m];
        for tp in tps {
            c.owned.remove(tp);
            c.revoking.remove(tp);
            // A commit still unanswered belongs to the assignment that ended.
            c.in_flight.remove(tp);
            c.acked.remove(tp);
        }
        if c.lost && c.owned.is_empty() {
            // librdkafka rejoins by itself after a lost assignment.
            self.join_again(m);
            return;
        }
        self.progress();
    }

    fn join_again(&mut self, m: usize) {
        let c = &mut self.members[m];
        c.lost = false;
        c.joined = true;
        c.last_poll = Some(self.clock.now());
        self.rebalance();
    }
}

/// One member's view of the cluster: the [`Broker`] the pipeline drives.
pub struct SimBroker {
    pub cluster: Rc<RefCell<Cluster>>,
    pub member: usize,
}

impl Broker for SimBroker {
    fn poll(&mut self, timeout: Duration) -> Option<Polled> {
        self.cluster.borrow_mut().poll(self.member, timeout)
    }

    fn commit(&mut self, offsets: &[(TopicPartition, i64)], mode: CommitMode) -> Result<(), BrokerError> {
        self.cluster.borrow_mut().commit(self.member, offsets, mode)
    }

    fn pause(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError> {
        self.cluster.borrow_mut().members[self.member].paused.extend(tps.iter().cloned());
        Ok(())
    }

    fn resume(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError> {
        let mut c = self.cluster.borrow_mut();
        for tp in tps {
            c.members[self.member].paused.remove(tp);
        }
        Ok(())
    }

    fn assign(&mut self, tps: &[(TopicPartition, Start)]) -> Result<(), BrokerError> {
        self.cluster.borrow_mut().assign(self.member, tps);
        Ok(())
    }

    /// The simulated topics are never recreated: their ids never change.
    fn topic_ids(&mut self, topics: &[String]) -> Result<BTreeMap<String, String>, BrokerError> {
        Ok(topics.iter().map(|t| (t.clone(), format!("id-of-{t}"))).collect())
    }

    fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), BrokerError> {
        let mut cluster = self.cluster.borrow_mut();
        let cluster = &mut *cluster;
        if cluster.rng.chance(cluster.seek_fail) {
            return Err(BrokerError::new(BrokerErrorKind::Timeout, "sim: seek failed"));
        }
        // As the rdkafka seam, which keeps what it polled during a commit
        // wait: records fetched before the seek may still come, sometimes.
        let keep_queued = cluster.rng.chance(0.5);
        let c = &mut cluster.members[self.member];
        if !c.owned.contains(tp) {
            return Err(BrokerError::new(BrokerErrorKind::Client, "sim: seek on a partition not assigned"));
        }
        c.fetch.insert(tp.clone(), offset);
        if !keep_queued {
            c.events
                .retain(|(_, e)| !matches!(e, Polled::Record(r) if r.topic == tp.topic && r.partition == tp.partition));
        }
        Ok(())
    }

    fn unassign(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError> {
        self.cluster.borrow_mut().unassign(self.member, tps);
        Ok(())
    }
}
