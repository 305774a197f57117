//! Pausing partitions, and what the operator sees of each: the pauses a
//! lane's batch in hand, a lane's memory and an operator ask for
//! ([`Pipeline::reconcile_pauses`]), the operator's from the console
//! ([`OperatorPauses`]), and the views handed to the heartbeat (at most
//! every [`VIEW_EVERY`]).
//!
//! An operator's pause stops a partition at once: its records waiting in
//! memory are dropped (a batch of it in flight or in hand finishes), its
//! fetching is paused, and records of it polled meanwhile are dropped too.
//! On resume it is read again from the first record dropped, so none is
//! skipped; with none dropped, the client's position is already right.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::Pipeline;
use crate::common::clock::Clock;
use crate::common::record::{Record, TopicPartition};
use crate::consume::broker::{Broker, BrokerError};
use crate::consume::heartbeat::PartitionView;
use crate::consume::operator_pauses::OperatorPauses;
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
    /// Where each paused partition is read again from on resume: its first
    /// record dropped.
    resume_at: BTreeMap<TopicPartition, i64>,
}

impl Operator {
    pub(super) fn new(pauses: Arc<OperatorPauses>) -> Self {
        Operator { pauses: Some(pauses), ..Default::default() }
    }

    pub(super) fn pauses(&self, tp: &TopicPartition) -> bool {
        self.paused.contains(tp)
    }

    /// The partitions it pauses.
    pub(super) fn paused(&self) -> impl Iterator<Item = &TopicPartition> {
        self.paused.iter()
    }

    /// `r` arrived while its partition is paused: dropped, read again on resume.
    pub(super) fn dropped(&mut self, r: &Record) {
        let at = self.resume_at.entry(r.tp()).or_insert(r.offset);
        *at = (*at).min(r.offset);
    }

    /// The partitions whose records it dropped, read again on resume.
    pub(super) fn dropped_from(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        self.resume_at.keys().cloned()
    }

    /// `tp` left, or is read again from elsewhere: nothing to read again on resume.
    pub(super) fn forget(&mut self, tp: &TopicPartition) {
        self.resume_at.remove(tp);
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
    /// from its first record dropped (at this step's seeks).
    pub(super) fn take_operator_pauses(&mut self) {
        let Some(pauses) = self.operator.pauses.clone() else { return };
        let version = pauses.version();
        if self.operator.seen == Some(version) {
            return;
        }
        self.operator.seen = Some(version);
        let now: BTreeSet<TopicPartition> = pauses.get().into_keys().collect();
        for tp in now.difference(&self.operator.paused) {
            let first = self.lanes.iter_mut().filter_map(|l| l.discard_waiting(tp)).min();
            if let Some(first) = first {
                let at = self.operator.resume_at.entry(tp.clone()).or_insert(first);
                *at = (*at).min(first);
            }
            OperatorPaused { partition: tp, paused: true, read_again_from: first }.emit();
        }
        for tp in self.operator.paused.difference(&now) {
            // What is still in hand of it is read again too, in order.
            let held = self.lanes.iter().filter_map(|l| l.first_held(tp)).min();
            // A seek still to be done reads from where it says, or lower.
            let pending = self.seeks.iter().filter(|(t, _)| t == tp).map(|(_, at)| *at).min();
            let at = self.operator.resume_at.remove(tp).into_iter().chain(held).chain(pending).min();
            OperatorPaused { partition: tp, paused: false, read_again_from: at }.emit();
            if let Some(at) = at.filter(|_| self.offsets.is_assigned(tp)) {
                self.seeks.retain(|(t, _)| t != tp);
                self.seeks.push((tp.clone(), at));
            }
        }
        self.operator.paused = now;
    }

    /// Pauses the partitions of each lane's batch in hand (all a lane's while
    /// it holds too much) and those an operator paused, and resumes the rest.
    pub(super) fn reconcile_pauses<B: Broker>(&mut self, broker: &mut B) {
        let limit = self.pause_at();
        let mut want: BTreeSet<TopicPartition> =
            self.operator.paused().filter(|tp| self.offsets.is_assigned(tp)).cloned().collect();
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
