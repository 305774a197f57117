//! Pausing partitions, and what the operator sees of each: the pauses a
//! lane's batch in hand, a lane's memory and an operator ask for
//! ([`Pipeline::reconcile_pauses`]), the operator's from the console
//! ([`OperatorPauses`]), and the views handed to the heartbeat (at most
//! every [`VIEW_EVERY`]).
//!
//! An operator's pause stops a partition at once: its records waiting in
//! memory are dropped (a batch of it in flight or in hand finishes), its
//! fetching is paused, and records of it polled meanwhile are dropped too.
//! On resume it is read again from the database's stored offset, or lower
//! (see [`Pipeline::take_operator_pauses`]), so none is skipped and what
//! was applied already is not applied again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::Pipeline;
use crate::common::clock::Clock;
use crate::common::record::TopicPartition;
use crate::consume::broker::{Broker, BrokerError};
use crate::consume::heartbeat::PartitionView;
use crate::consume::offsets::Offsets;
use crate::consume::operator_pauses::OperatorPauses;
use crate::consume::sink::Sink;
use crate::consume::workers::Lanes;
use crate::events::{ClientCallFailed, Event as _, LaneHolds, OperatorPaused};

/// How often the partitions' views are handed to the heartbeat.
pub const VIEW_EVERY: Duration = Duration::from_secs(1);

/// The operator's pauses as the pipeline applies them.
#[derive(Default)]
pub(super) struct Operator {
    pauses: Option<Arc<OperatorPauses>>,
    /// The version of the set last applied.
    seen: Option<u64>,
    /// The partitions paused (assigned or not).
    paused: BTreeSet<TopicPartition>,
    /// The lowest offset polled of each partition since it was assigned:
    /// where a partition the database holds nothing of is read again from.
    first_polled: BTreeMap<TopicPartition, i64>,
}

impl Operator {
    pub(super) fn new(pauses: Arc<OperatorPauses>) -> Self {
        Operator { pauses: Some(pauses), ..Default::default() }
    }

    pub(super) fn pauses(&self, tp: &TopicPartition) -> bool {
        self.paused.contains(tp)
    }

    /// The partitions it pauses that are assigned (what was dropped of them
    /// is read again on resume).
    pub(super) fn assigned<'a>(&'a self, assigned: &'a Offsets) -> impl Iterator<Item = TopicPartition> + 'a {
        self.paused.iter().filter(|tp| assigned.is_assigned(tp)).cloned()
    }

    /// A record of `tp` at `offset` was polled.
    pub(super) fn polled(&mut self, tp: &TopicPartition, offset: i64) {
        match self.first_polled.get_mut(tp) {
            Some(first) => *first = (*first).min(offset),
            None => _ = self.first_polled.insert(tp.clone(), offset),
        }
    }

    /// `tp` left, or its log was replaced.
    pub(super) fn released(&mut self, tp: &TopicPartition) {
        self.first_polled.remove(tp);
    }
}

impl<C: Clock + Clone, L: Lanes> Pipeline<C, L> {
    /// Pauses the partitions of `pauses` while they are assigned.
    pub fn with_operator_pauses(mut self, pauses: Arc<OperatorPauses>) -> Self {
        self.operator = Operator::new(pauses);
        self
    }

    /// Applies the operator's pauses when they changed: a partition newly
    /// paused drops its records waiting in memory; one resumed is read again
    /// (as after a database that lost commits) from the offset the database
    /// stored for it, or lower: whatever the pause dropped, and whatever was
    /// in hand or in flight of it, comes again in order, and what the
    /// database applied already is skipped. With the database away, the
    /// resume waits.
    pub(super) fn take_operator_pauses<S: Sink>(&mut self, sink: &mut S) {
        let Some(pauses) = self.operator.pauses.clone() else { return };
        let version = pauses.version();
        if self.operator.seen == Some(version) {
            return;
        }
        self.operator.seen = Some(version);
        let mut now: BTreeSet<TopicPartition> = pauses.get().into_keys().collect();
        for tp in now.difference(&self.operator.paused) {
            let first = self.lanes.iter_mut().filter_map(|l| l.discard_waiting(tp)).min();
            OperatorPaused { partition: tp, paused: true, read_again_from: first }.emit();
        }
        let resumed: Vec<TopicPartition> = self.operator.paused.difference(&now).cloned().collect();
        for tp in resumed {
            if !self.offsets.is_assigned(&tp) {
                continue;
            }
            let stored = match sink.positions(std::slice::from_ref(&tp)) {
                Ok(stored) => match stored.into_iter().next().flatten() {
                    Some(stored) => {
                        let next = stored.next;
                        // Its transactions expect the database to keep at least this
                        // (as on assignment): a crash that undoes it is noticed.
                        self.positions.assigned(std::slice::from_ref(&tp), Some(&[Some(stored)]));
                        Some(next)
                    }
                    // Nothing of it applied yet: from the first record polled since
                    // it was assigned (at or below any the pause dropped).
                    None => self.operator.first_polled.get(&tp).copied(),
                },
                Err(_) => {
                    // Asked again at the next step: it stays paused meanwhile.
                    self.operator.seen = None;
                    now.insert(tp);
                    continue;
                }
            };
            // Never above what is in memory of it: the database's last commits
            // may not be durable yet (a crash would undo them), what is in hand
            // or in flight may come back unhandled, and a seek or a restart
            // still to come reads from where it says.
            let in_hand = self.lanes.iter().filter_map(|l| l.first_in_hand(&tp)).min();
            let pending = self.seeks.iter().filter(|(t, _)| *t == tp).map(|(_, at)| *at).min();
            let restart = self.restart_at.get(&tp).copied();
            let at = [stored, in_hand, pending, restart].into_iter().flatten().min();
            OperatorPaused { partition: &tp, paused: false, read_again_from: at }.emit();
            if let Some(at) = at {
                self.read_again(tp, at);
            }
        }
        self.operator.paused = now;
    }

    /// Pauses the partitions of each lane's batch in hand (all a lane's while
    /// it holds too much) and those an operator paused, and resumes the rest.
    pub(super) fn reconcile_pauses<B: Broker>(&mut self, broker: &mut B) {
        let limit = self.pause_at();
        let mut want: BTreeSet<TopicPartition> = self.operator.assigned(&self.offsets).collect();
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            LaneHolds { lane: i, records: lane.buffered() }.emit();
            if lane.relieve(limit) {
                want.extend(self.lane_of.iter().filter(|(_, l)| **l == i).map(|(tp, _)| tp.clone()));
            }
            want.extend(lane.held_partitions().filter(|tp| self.offsets.is_assigned(tp)));
        }
        let pause: Vec<TopicPartition> = want.difference(&self.paused).cloned().collect();
        let resume: Vec<TopicPartition> = self.paused.difference(&want).cloned().collect();
        let failed = |call, partitions: &[TopicPartition], e: BrokerError| {
            let (kind, error) = (e.kind.as_str(), &e.message);
            ClientCallFailed { call, partitions, kind, error, serious: false }.emit()
        };
        if !pause.is_empty() {
            match broker.pause(&pause) {
                Ok(()) => self.paused.extend(pause),
                Err(e) => failed("pause", &pause, e),
            }
        }
        if !resume.is_empty() {
            match broker.resume(&resume) {
                Ok(()) => resume.iter().for_each(|tp| _ = self.paused.remove(tp)),
                Err(e) => failed("resume", &resume, e),
            }
        }
    }

    /// Hands the heartbeat what each assigned partition holds, at most every [`VIEW_EVERY`].
    pub(super) fn publish_views(&mut self) {
        let now = self.clock.now();
        if self.last_view.is_some_and(|t| now.saturating_duration_since(t) < VIEW_EVERY) {
            return;
        }
        self.last_view = Some(now);
        let mut held: BTreeMap<TopicPartition, (usize, Option<i64>)> = BTreeMap::new();
        let mut retrying = BTreeSet::new();
        for lane in &self.lanes {
            lane.count_held(&mut held);
            retrying.extend(lane.held_partitions());
        }
        let views = self
            .offsets
            .assigned()
            .map(|tp| {
                let (in_memory, oldest_in_memory_ms) = held.get(tp).copied().unwrap_or_default();
                let (handled, committed) = self.offsets.of(tp);
                let paused = if self.operator.pauses(tp) {
                    Some("operator")
                } else if retrying.contains(tp) {
                    Some("retrying")
                } else if self.paused.contains(tp) {
                    Some("memory")
                } else {
                    None
                };
                PartitionView {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    lane: self.lane_of.get(tp).copied().unwrap_or_default(),
                    paused,
                    in_memory,
                    oldest_in_memory_ms,
                    handled,
                    committed,
                }
            })
            .collect();
        self.heartbeat.set_partitions(views);
    }
}
