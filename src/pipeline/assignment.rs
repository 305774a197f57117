//! Assignment changes: taking partitions (where the database says to read
//! them from), and letting them go after a revoke or a loss.

use super::{Pipeline, When, REVOKE_BUDGET};
use crate::broker::{Broker, Tp};
use crate::clock::Clock;
use crate::events::{Event as _, OffsetReset};
use crate::metrics;
use crate::record::Record;
use crate::sink::{Panicked, Sink};

impl<C: Clock + Clone> Pipeline<C> {
    /// Finishes what is in memory (within [`REVOKE_BUDGET`]) and commits it
    /// while the partitions are still ours, then lets them go.
    pub(super) fn revoke<B: Broker, S: Sink>(
        &mut self,
        broker: &mut B,
        sink: &mut S,
        tps: &[Tp],
    ) -> Result<(), Panicked> {
        log::info!("partitions revoked: {tps:?}");
        let drained = self.drain(sink, self.clock.now() + REVOKE_BUDGET);
        // What was handled, even before a panic, is committed.
        self.commit(broker, When::Sync);
        self.release(broker, tps);
        drained.map(|_| ())
    }

    /// Takes new partitions, each read from where the database says. With
    /// the database away, from Kafka's committed offset: never ahead of the
    /// database's, and what the database applied already is skipped.
    pub(super) fn assign<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S, tps: &[Tp]) {
        let positions = sink.positions(tps).unwrap_or_else(|f| {
            log::warn!("cannot read the stored offsets, reading from the committed ones: {}", f.message);
            vec![None; tps.len()]
        });
        let starts: Vec<(Tp, Option<i64>)> = tps.iter().cloned().zip(positions).collect();
        log::info!("partitions assigned, reading from (None: the committed offset): {starts:?}");
        for (tp, start) in &starts {
            self.offsets.assign(tp);
            self.paused.remove(tp);
            self.seeks.retain(|(t, _)| t != tp);
            if let Some(start) = start {
                self.starts.insert(tp.clone(), *start);
                // Kafka's committed offset follows the database's: lag tools
                // see a partition applied before this assignment as caught up.
                self.offsets.handled(tp, *start);
            }
        }
        if let Err(e) = broker.assign(&starts) {
            log::error!("cannot take assigned partitions {tps:?}: {e}");
        }
        // The client keeps a pause across unassign and assign: start every new partition fetching,
        // unless too much is in memory already.
        if let Err(e) = broker.resume(tps) {
            log::warn!("cannot resume assigned partitions: {e}");
        }
        self.reconcile_pauses(broker);
        self.assigned_changed();
    }

    /// Lets partitions go: their records in memory and pending offsets are
    /// dropped (the next owner reads them from the committed offset), and
    /// what was paused is resumed.
    pub(super) fn release<B: Broker>(&mut self, broker: &mut B, tps: &[Tp]) {
        let leaving = |t: &str, p: i32| tps.iter().any(|(rt, rp)| rt == t && *rp == p);
        self.starts.retain(|(t, p), _| !leaving(t, *p));
        self.seeks.retain(|((t, p), _)| !leaving(t, *p));
        let before = self.buffered();
        self.drop_held(leaving);
        for tp in tps {
            self.offsets.remove(tp);
        }
        let resume: Vec<Tp> = tps.iter().filter(|tp| self.paused.remove(*tp)).cloned().collect();
        if let Err(e) = broker.resume(&resume) {
            log::warn!("cannot resume leaving partitions: {e}");
        }
        if let Err(e) = broker.unassign(tps) {
            log::error!("cannot release partitions {tps:?}: {e}");
        }
        log::info!(
            "released partitions {tps:?}: {} records in memory left to their next owner",
            before - self.buffered()
        );
        self.assigned_changed();
    }

    /// Partitions whose log was replaced (topic recreated): what is in memory
    /// of them is dropped, their commit bookkeeping starts afresh, and the
    /// database applies their records again from the new log's beginning.
    pub(super) fn reset<S: Sink>(&mut self, sink: &mut S, tps: &[Tp]) {
        let leaving = |t: &str, p: i32| tps.iter().any(|(rt, rp)| rt == t && *rp == p);
        self.drop_held(leaving);
        for tp in tps {
            OffsetReset { topic: &tp.0, partition: tp.1, from: 0, why: "the topic was recreated" }.emit();
            self.starts.remove(tp);
            self.offsets.remove(tp);
            self.offsets.assign(tp);
            sink.rewind(tp, 0);
        }
    }

    /// Partitions the database says to read again (see [`Sink::read_again`]):
    /// what is in memory of them is dropped at once (a drain must not wait on
    /// it), and they are read from there at the next step's seek.
    pub(super) fn take_read_again<S: Sink>(&mut self, sink: &mut S) {
        for (tp, offset) in sink.read_again() {
            if !self.offsets.is_assigned(&tp) {
                continue;
            }
            let why = "the database's stored offset is behind what this copy handled";
            OffsetReset { topic: &tp.0, partition: tp.1, from: offset, why }.emit();
            self.drop_held(|t, p| t == tp.0 && p == tp.1);
            self.starts.remove(&tp);
            // Kafka's committed offset follows the database's, as on assignment.
            self.offsets.handled(&tp, offset);
            self.seeks.retain(|(t, _)| *t != tp);
            self.seeks.push((tp, offset));
        }
    }

    /// Performs the seeks [`Self::take_read_again`] left; records of those
    /// partitions polled since (from before the seek) are dropped too.
    pub(super) fn seek_again<B: Broker>(&mut self, broker: &mut B) {
        for (tp, offset) in std::mem::take(&mut self.seeks) {
            if !self.offsets.is_assigned(&tp) {
                continue;
            }
            self.drop_held(|t, p| t == tp.0 && p == tp.1);
            if let Err(e) = broker.seek(&tp, offset) {
                log::error!("cannot read topic={} partition={} again from offset={offset}: {e}", tp.0, tp.1);
            }
        }
    }

    /// The first record of a partition read from the database's offset: one
    /// below it means the broker reset the partition (its log no longer
    /// reaches that far: the topic was recreated or truncated).
    pub(super) fn check_start<S: Sink>(&mut self, sink: &mut S, r: &Record) {
        let tp = (r.topic.clone(), r.partition);
        let Some(start) = self.starts.remove(&tp) else { return };
        if r.offset < start {
            let why = format!("the log starts below the stored offset {start} (topic deleted and recreated?)");
            OffsetReset { topic: &r.topic, partition: r.partition, from: r.offset, why: &why }.emit();
            sink.rewind(&tp, r.offset);
        }
    }

    /// Drops the records in memory of the partitions `leaving` names.
    fn drop_held(&mut self, leaving: impl Fn(&str, i32) -> bool) {
        self.batcher.discard(&leaving);
        if let Some(held) = &mut self.in_hand {
            held.records.retain(|r| !leaving(&r.topic, r.partition));
            if held.records.is_empty() {
                self.in_hand = None;
                self.heartbeat.set_retrying(None);
            }
        }
    }

    fn assigned_changed(&self) {
        let mut partitions: Vec<Tp> = self.offsets.assigned().cloned().collect();
        partitions.sort();
        metrics::get().assigned_partitions.set(partitions.len() as i64);
        self.heartbeat.set_assignment(partitions);
    }
}
