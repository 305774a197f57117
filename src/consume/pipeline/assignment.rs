//! Assignment changes: taking partitions (where the database says to read
//! them from), letting them go after a revoke or a loss, and reading them
//! again when the database lost commits.

use std::collections::BTreeMap;

use super::{Pipeline, When, REVOKE_BUDGET, VERIFY_EVERY};
use crate::common::clock::Clock;
use crate::common::record::{Record, TopicPartition};
use crate::consume::broker::{Broker, Start};
use crate::consume::sink::{start_of, Panicked, Sink};
use crate::consume::workers::Lanes;
use crate::events::{
    AssignmentChanged, ClientCallFailed, Event as _, OffsetReset, PartitionsAssigned, PartitionsLeaving,
    PartitionsReleased, ReadFailed,
};

impl<C: Clock + Clone, L: Lanes> Pipeline<C, L> {
    /// Finishes what is in memory of the partitions leaving (within
    /// [`REVOKE_BUDGET`]; the other lanes go on) and commits it while they
    /// are still ours, then lets them go.
    pub(super) fn revoke<B: Broker>(&mut self, broker: &mut B, tps: &[TopicPartition]) -> Result<(), Panicked> {
        PartitionsLeaving { partitions: tps, lost: false }.emit();
        let deadline = self.clock.now() + REVOKE_BUDGET;
        let drained = self.drain(Some(tps), deadline);
        if drained.is_err() {
            self.wind_down(deadline);
        }
        // What was handled, even before a panic, is committed.
        self.commit(broker, When::Sync);
        self.release(broker, tps);
        drained.map(|_| ())
    }

    /// Takes new partitions, each read from where the database says. With
    /// the database away, from Kafka's committed offset: never ahead of the
    /// database's, and what the database applied already is skipped. A
    /// partition whose stored offset belongs to a log that is gone (its
    /// topic's id changed while this group was away) is read from the new
    /// log's beginning.
    pub(super) fn assign<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S, tps: &[TopicPartition]) {
        let ids = self.identify(broker, tps);
        let stored = sink.positions(tps);
        self.positions.assigned(tps, stored.as_deref().ok());
        let positions = stored.unwrap_or_else(|f| {
            let then = "reading from the committed ones";
            ReadFailed { what: "the stored offsets", then, error: &f.message }.emit();
            vec![None; tps.len()]
        });
        let starts: Vec<(TopicPartition, Start)> = tps
            .iter()
            .zip(&positions)
            .map(|(tp, stored)| (tp.clone(), start_of(stored.as_ref(), ids.get(&tp.topic).map(String::as_str))))
            .collect();
        PartitionsAssigned { reading_from: &format!("{starts:?}") }.emit();
        for (tp, start) in &starts {
            self.place(tp);
            self.offsets.assign(tp);
            self.paused.remove(tp);
            self.seeks.retain(|(t, _)| t != tp);
            self.restart_at.remove(tp);
            match start {
                Start::At(start) => {
                    self.starts.insert(tp.clone(), *start);
                    // Kafka's committed offset follows the database's: lag tools
                    // see a partition applied before this assignment as caught up.
                    self.offsets.handled(tp, *start);
                }
                Start::Beginning => {
                    let why = "the topic was deleted and recreated while this group was away (its id changed)";
                    OffsetReset { topic: &tp.topic, partition: tp.partition, from: 0, why }.emit();
                    self.positions.rewind(tp, 0);
                }
                Start::Committed => {}
            }
        }
        if let Err(e) = broker.assign(&starts) {
            ClientCallFailed {
                call: "assign",
                partitions: tps,
                kind: e.kind.as_str(),
                error: &e.message,
                serious: true,
            }
            .emit();
        }
        // The client keeps a pause across unassign and assign: start every new partition fetching,
        // unless too much is in memory already.
        if let Err(e) = broker.resume(tps) {
            ClientCallFailed {
                call: "resume assigned",
                partitions: tps,
                kind: e.kind.as_str(),
                error: &e.message,
                serious: false,
            }
            .emit();
        }
        self.reconcile_pauses(broker);
        self.assigned_changed();
    }

    /// The ids of the topics of `tps` now (stored with the offsets).
    /// Unknown ids leave a recreation to the periodic check.
    fn identify<B: Broker>(&mut self, broker: &mut B, tps: &[TopicPartition]) -> BTreeMap<String, String> {
        let mut topics: Vec<String> = tps.iter().map(|tp| tp.topic.clone()).collect();
        topics.dedup();
        let ids = broker.topic_ids(&topics).unwrap_or_else(|e| {
            let then = "a recreated topic is noticed at the next check";
            ReadFailed { what: "the topics' ids", then, error: &e.message }.emit();
            BTreeMap::new()
        });
        self.positions.identify(&ids);
        ids
    }

    /// Lets partitions go: their records in memory and pending offsets are
    /// dropped (the next owner reads them from the committed offset), and
    /// what was paused is resumed.
    pub(super) fn release<B: Broker>(&mut self, broker: &mut B, tps: &[TopicPartition]) {
        self.starts.retain(|tp, _| !tps.contains(tp));
        self.seeks.retain(|(tp, _)| !tps.contains(tp));
        self.restart_at.retain(|tp, _| !tps.contains(tp));
        self.positions.released(tps);
        let before = self.buffered();
        self.drop_held(tps);
        for tp in tps {
            self.offsets.remove(tp);
            self.operator.released(tp);
            self.unplace(tp);
        }
        let resume: Vec<TopicPartition> = tps.iter().filter(|tp| self.paused.remove(*tp)).cloned().collect();
        if let Err(e) = broker.resume(&resume) {
            ClientCallFailed {
                call: "resume leaving",
                partitions: &resume,
                kind: e.kind.as_str(),
                error: &e.message,
                serious: false,
            }
            .emit();
        }
        if let Err(e) = broker.unassign(tps) {
            ClientCallFailed {
                call: "unassign",
                partitions: tps,
                kind: e.kind.as_str(),
                error: &e.message,
                serious: true,
            }
            .emit();
        }
        PartitionsReleased { partitions: tps, records_dropped: before - self.buffered() }.emit();
        self.assigned_changed();
    }

    /// Partitions whose log was replaced (topic recreated): what is in memory
    /// of them is dropped, their commit bookkeeping starts afresh, and the
    /// database applies their records again from the new log's beginning.
    pub(super) fn reset<B: Broker>(&mut self, broker: &mut B, tps: &[TopicPartition]) {
        self.drop_held(tps);
        // Their offsets are stored with the new log's id from now on.
        self.identify(broker, tps);
        for tp in tps {
            OffsetReset { topic: &tp.topic, partition: tp.partition, from: 0, why: "the topic was recreated" }.emit();
            self.starts.remove(tp);
            self.restart_at.remove(tp);
            self.seeks.retain(|(t, _)| t != tp);
            self.operator.released(tp);
            self.offsets.remove(tp);
            self.offsets.assign(tp);
            // A batch of the old log in flight counts for nothing.
            self.new_epoch(tp);
            self.positions.rewind(tp, 0);
        }
    }

    /// Compares, every [`VERIFY_EVERY`], the stored offsets with what this
    /// copy stored: an idle partition gets no batch that would find out that
    /// the database lost commits. While the database is away, the next time does.
    pub(super) fn verify<S: Sink>(&mut self, sink: &mut S) {
        let now = self.clock.now();
        if self.next_verify.is_some_and(|t| now < t) || !self.positions.has_expectations() {
            return;
        }
        self.next_verify = Some(now + VERIFY_EVERY);
        if let Ok(stored) = sink.offsets() {
            self.positions.verify(stored);
        }
    }

    /// Partitions to read again from the offset the database holds: it fell
    /// back below what this copy stored (the database lost committed
    /// batches: a crash before their WAL flush), or it could not be read
    /// when they were assigned ([`Self::read_again`]).
    pub(super) fn take_read_again(&mut self) {
        for (tp, offset) in self.positions.take_again() {
            if !self.offsets.is_assigned(&tp) {
                continue;
            }
            let why = "the database's stored offset is behind what this copy handled";
            OffsetReset { topic: &tp.topic, partition: tp.partition, from: offset, why }.emit();
            self.read_again(tp, offset);
        }
    }

    /// Reads `tp` again from `offset` (where the database stored it): what
    /// is in memory of it is dropped at once (a drain must not wait on it),
    /// and the seek is done at the next step.
    pub(super) fn read_again(&mut self, tp: TopicPartition, offset: i64) {
        self.drop_held(std::slice::from_ref(&tp));
        // A batch of it in flight comes back for nothing (retried, it would skip the gap).
        self.new_epoch(&tp);
        self.starts.remove(&tp);
        // Kafka's committed offset follows the database's, as on assignment.
        self.offsets.handled(&tp, offset);
        // Until a record at or below it arrives, none above it is taken:
        // records fetched before the seek would move past the gap.
        self.restart_at.insert(tp.clone(), offset);
        self.seeks.retain(|(t, _)| *t != tp);
        self.seeks.push((tp, offset));
    }

    /// Performs the seeks [`Self::take_read_again`] left; records of those
    /// partitions polled since (from before the seek) are dropped too. A
    /// seek that failed is tried again at the next step. Each attempt
    /// restarts the partition at its offset: what the client fetched before
    /// it is not taken until a record at or below the offset arrives (one
    /// fetched before a failed attempt may have let the rest through).
    pub(super) fn seek_again<B: Broker>(&mut self, broker: &mut B) {
        for (tp, offset) in std::mem::take(&mut self.seeks) {
            if !self.offsets.is_assigned(&tp) {
                continue;
            }
            self.drop_held(std::slice::from_ref(&tp));
            self.restart_at.insert(tp.clone(), offset);
            if let Err(e) = broker.seek(&tp, offset) {
                let call = "seek to read again (tried again)";
                ClientCallFailed {
                    call,
                    partitions: std::slice::from_ref(&tp),
                    kind: e.kind.as_str(),
                    error: &e.message,
                    serious: true,
                }
                .emit();
                self.seeks.push((tp, offset));
            }
        }
    }

    /// Whether a polled record may be taken: not while its partition must
    /// restart at a lower offset (see [`Self::take_read_again`]).
    pub(super) fn restarts_here(&mut self, r: &Record) -> bool {
        let tp = r.tp();
        match self.restart_at.get(&tp) {
            Some(&at) if r.offset > at => {
                log::debug!("dropping a record fetched before its partition's seek position={}", r.position());
                false
            }
            Some(_) => {
                self.restart_at.remove(&tp);
                true
            }
            None => true,
        }
    }

    /// The first record of a partition read from the database's offset: one
    /// below it means the broker reset the partition (its log no longer
    /// reaches that far: the topic was recreated or truncated).
    pub(super) fn check_start(&mut self, r: &Record) {
        let tp = r.tp();
        let Some(start) = self.starts.remove(&tp) else { return };
        if r.offset < start {
            let why = format!("the log starts below the stored offset {start} (topic deleted and recreated?)");
            OffsetReset { topic: &r.topic, partition: r.partition, from: r.offset, why: &why }.emit();
            self.positions.rewind(&tp, r.offset);
        }
    }

    fn assigned_changed(&self) {
        let mut partitions: Vec<TopicPartition> = self.offsets.assigned().cloned().collect();
        partitions.sort();
        AssignmentChanged { partitions: partitions.len() }.emit();
        self.heartbeat.set_assignment(partitions);
    }
}
