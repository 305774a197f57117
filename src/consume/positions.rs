//! What the pipeline knows of each assigned partition's stored offset, kept
//! on the polling thread and handed to a lane with each batch
//! ([`PartitionState`]): the offset this copy stored last (a stored offset
//! found below it means the database lost committed batches: [`Applied`]),
//! a rewind not applied yet (the partition's log restarted below its stored
//! offset), whether its offset is durable yet (until then a batch waits for
//! its WAL flush, so that a lost batch never leaves only Kafka's later
//! committed offset to read from), and its topic's id (stored with the
//! offset, to tell a topic recreated while the service was stopped).
//!
//! Lanes never share this state: a lane gets a copy with its batch, keeps it
//! current between its transactions, and hands back what it stored.

use std::collections::{BTreeMap, BTreeSet};

use super::applied::Applied;
use crate::common::record::TopicPartition;
use crate::db::consumer_offsets::Stored;

/// What a lane's transaction needs to know of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The stored offset the transaction must find, at least (see [`Applied::expected`]).
    pub mine: Option<i64>,
    /// Set the stored offset back to this first (the log restarted below it).
    pub rewind: Option<i64>,
    /// Whether its offset is durable: if not, the transaction waits for its WAL flush.
    pub durable: bool,
    /// Its topic's id now, stored with the offset.
    pub topic_id: Option<String>,
}

impl PartitionState {
    /// A transaction stored its offset up to `next`: later ones expect it.
    pub fn stored(&mut self, next: i64) {
        self.rewind = None;
        self.durable = true;
        self.mine = Some(self.mine.map_or(next, |m| m.max(next)));
    }
}

#[derive(Debug, Default)]
pub struct Positions {
    applied: Applied,
    rewinds: BTreeMap<TopicPartition, i64>,
    durable: BTreeSet<TopicPartition>,
    topic_ids: BTreeMap<String, String>,
}

impl Positions {
    /// What the database said on assignment of `tps` (`None`: it could not say).
    pub fn assigned(&mut self, tps: &[TopicPartition], stored: Option<&[Option<Stored>]>) {
        let starts: Option<Vec<Option<i64>>> = stored.map(|s| s.iter().map(|s| s.as_ref().map(|s| s.next)).collect());
        self.applied.assigned(tps, starts.as_deref());
        for (tp, start) in tps.iter().zip(starts.iter().flatten()) {
            if start.is_some() {
                self.durable.insert(tp.clone());
            }
        }
    }

    /// The topics' ids as the cluster knows them now.
    pub fn identify(&mut self, topic_ids: &BTreeMap<String, String>) {
        self.topic_ids.extend(topic_ids.iter().map(|(t, id)| (t.clone(), id.clone())));
    }

    /// `tp`'s log restarted at `to`, below its stored offset (the broker
    /// reset it): the next transaction sets the stored offset back first.
    pub fn rewind(&mut self, tp: &TopicPartition, to: i64) {
        self.rewinds.insert(tp.clone(), to);
        self.applied.forget(tp);
    }

    /// Partitions that left this copy: what is kept of them goes.
    pub fn released(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.rewinds.remove(tp);
            self.durable.remove(tp);
            self.applied.forget(tp);
        }
    }

    /// `tp`'s state for a batch whose first record of it is at `first`.
    pub fn state(&self, tp: &TopicPartition, first: i64) -> PartitionState {
        let rewind = self.rewinds.get(tp).copied();
        PartitionState {
            // After a rewind nothing below is expected: the log restarted.
            mine: if rewind.is_some() { None } else { self.applied.expected(tp, first) },
            rewind,
            durable: self.durable.contains(tp),
            topic_id: self.topic_ids.get(&tp.topic).cloned(),
        }
    }

    /// A lane's transaction stored `tp`'s offset up to `next`.
    pub fn stored(&mut self, tp: &TopicPartition, next: i64) {
        self.rewinds.remove(tp);
        self.durable.insert(tp.clone());
        self.applied.stored(tp, next);
    }

    /// A lane found `tp`'s stored offset at `stored`, below what was expected.
    pub fn lost(&mut self, tp: TopicPartition, stored: i64) {
        self.applied.lost(tp, stored);
    }

    /// Whether [`Self::verify`] has anything to compare.
    pub fn has_expectations(&self) -> bool {
        !self.applied.is_empty()
    }

    /// Compares the stored offsets of the group with what was expected.
    pub fn verify(&mut self, stored: impl IntoIterator<Item = (TopicPartition, i64)>) {
        self.applied.verify(stored);
    }

    /// The partitions to read again, and from where; taken once.
    pub fn take_again(&mut self) -> Vec<(TopicPartition, i64)> {
        self.applied.take_again()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn a_batch_gets_what_it_must_find_and_a_rewind_once() {
        let mut p = Positions::default();
        p.identify(&[("t".to_string(), "id-1".to_string())].into());
        p.assigned(&[tp(0), tp(1)], Some(&[Some(Stored { next: 5, topic_id: None }), None]));
        let s = p.state(&tp(0), 5);
        assert_eq!((s.mine, s.rewind, s.durable, s.topic_id.as_deref()), (Some(5), None, true, Some("id-1")));
        assert_eq!((p.state(&tp(1), 0).mine, p.state(&tp(1), 0).durable), (None, false));
        p.rewind(&tp(0), 0);
        assert_eq!((p.state(&tp(0), 0).mine, p.state(&tp(0), 0).rewind), (None, Some(0)));
        p.stored(&tp(0), 3);
        assert_eq!((p.state(&tp(0), 3).mine, p.state(&tp(0), 3).rewind), (Some(3), None), "the rewind is applied once");
        p.stored(&tp(1), 2);
        assert!(p.state(&tp(1), 2).durable);
        p.released(&[tp(1)]);
        assert_eq!((p.state(&tp(1), 2).mine, p.state(&tp(1), 2).durable), (None, false));
    }

    #[test]
    fn a_lane_keeps_its_copy_current_between_transactions() {
        let mut s = PartitionState { mine: None, rewind: Some(0), durable: false, topic_id: None };
        s.stored(4);
        assert_eq!(s, PartitionState { mine: Some(4), rewind: None, durable: true, topic_id: None });
        s.stored(2);
        assert_eq!(s.mine, Some(4), "never backwards");
    }
}
