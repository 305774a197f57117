//! Assignment changes: taking partitions (where the database says to read
//! them from), and letting them go after a revoke or a loss.

use std::collections::BTreeMap;

use super::{Pipeline, When, REVOKE_BUDGET};
use crate::broker::{Broker, Start, Tp};
use crate::clock::Clock;
use crate::events::{Event as _, OffsetReset};
use crate::metrics;
use crate::record::Record;
use crate::sink::{Panicked, Sink, Stored};

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
        self.release(broker, sink, tps);
        drained.map(|_| ())
    }

    /// Takes new partitions, each read from where the database says. With
    /// the database away, from Kafka's committed offset: never ahead of the
    /// database's, and what the database applied already is skipped. A
    /// partition whose stored offset belongs to a log that is gone (its
    /// topic's id changed while this group was away) is read from the new
    /// log's beginning.
    pub(super) fn assign<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S, tps: &[Tp]) {
        let ids = self.identify(broker, sink, tps);
        let positions = sink.positions(tps).unwrap_or_else(|f| {
            log::warn!("cannot read the stored offsets, reading from the committed ones: {}", f.message);
            vec![None; tps.len()]
        });
        let starts: Vec<(Tp, Start)> = tps
            .iter()
            .zip(&positions)
            .map(|(tp, stored)| (tp.clone(), Stored::start(stored.as_ref(), ids.get(&tp.0).map(String::as_str))))
            .collect();
        log::info!("partitions assigned, reading from: {starts:?}");
        for (tp, start) in &starts {
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
                    OffsetReset { topic: &tp.0, partition: tp.1, from: 0, why }.emit();
                    sink.rewind(tp, 0);
                }
                Start::Committed => {}
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

    /// The ids of the topics of `tps` now, told to the sink (which stores
    /// them with the offsets). Unknown ids leave a recreation to the
    /// periodic check.
    fn identify<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S, tps: &[Tp]) -> BTreeMap<String, String> {
        let mut topics: Vec<String> = tps.iter().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        let ids = broker.topic_ids(&topics).unwrap_or_else(|e| {
            log::warn!("cannot read the topics' ids (a recreated topic is noticed at the next check): {e}");
            BTreeMap::new()
        });
        sink.identify(&ids);
        ids
    }

    /// Lets partitions go: their records in memory and pending offsets are
    /// dropped (the next owner reads them from the committed offset), and
    /// what was paused is resumed.
    pub(super) fn release<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S, tps: &[Tp]) {
        let leaving = |t: &str, p: i32| tps.iter().any(|(rt, rp)| rt == t && *rp == p);
        self.starts.retain(|(t, p), _| !leaving(t, *p));
        self.seeks.retain(|((t, p), _)| !leaving(t, *p));
        self.restart_at.retain(|(t, p), _| !leaving(t, *p));
        sink.released(tps);
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
    pub(super) fn reset<B: Broker, S: Sink>(&mut self, broker: &mut B, sink: &mut S, tps: &[Tp]) {
        let leaving = |t: &str, p: i32| tps.iter().any(|(rt, rp)| rt == t && *rp == p);
        self.drop_held(leaving);
        // Their offsets are stored with the new log's id from now on.
        self.identify(broker, sink, tps);
        for tp in tps {
            OffsetReset { topic: &tp.0, partition: tp.1, from: 0, why: "the topic was recreated" }.emit();
            self.starts.remove(tp);
            self.restart_at.remove(tp);
            self.seeks.retain(|(t, _)| t != tp);
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
            // Until a record at or below it arrives, none above it is taken:
            // records fetched before the seek would move past the gap.
            self.restart_at.insert(tp.clone(), offset);
            self.seeks.retain(|(t, _)| *t != tp);
            self.seeks.push((tp, offset));
        }
    }

    /// Performs the seeks [`Self::take_read_again`] left; records of those
    /// partitions polled since (from before the seek) are dropped too. A
    /// seek that failed is tried again at the next step; meanwhile the
    /// partition must restart at its offset, so nothing above it is taken.
    pub(super) fn seek_again<B: Broker>(&mut self, broker: &mut B) {
        for (tp, offset) in std::mem::take(&mut self.seeks) {
            if !self.offsets.is_assigned(&tp) {
                continue;
            }
            self.drop_held(|t, p| t == tp.0 && p == tp.1);
            if let Err(e) = broker.seek(&tp, offset) {
                log::error!(
                    "cannot read topic={} partition={} again from offset={offset} (tried again): {e}",
                    tp.0,
                    tp.1
                );
                self.seeks.push((tp, offset));
            }
        }
    }

    /// Whether a polled record may be taken: not while its partition must
    /// restart at a lower offset (see [`Self::take_read_again`]).
    pub(super) fn restarts_here(&mut self, r: &Record) -> bool {
        let tp = (r.topic.clone(), r.partition);
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
