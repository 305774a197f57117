//! What this copy applied, per partition, as a sink keeps it to notice a
//! database that lost committed batches (a crash before their WAL flush):
//! the offset it stored last, the partitions it could not ask the database
//! about when they were assigned, and the partitions to read again.

use crate::common::record::TopicPartition;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Applied {
    /// The next offset this copy stored last (or was told on assignment).
    mine: BTreeMap<TopicPartition, i64>,
    /// Assigned while the database could not say where to read them from:
    /// read from Kafka's committed offset, which a database crash may have
    /// left ahead of the database's.
    unsure: BTreeSet<TopicPartition>,
    /// Partitions to read again, and from where.
    again: Vec<(TopicPartition, i64)>,
}

impl Applied {
    /// What the database said on assignment: where to read `tps` from, or
    /// that it could not say (`None`).
    pub fn assigned(&mut self, tps: &[TopicPartition], starts: Option<&[Option<i64>]>) {
        let Some(starts) = starts else {
            self.unsure.extend(tps.iter().cloned());
            return;
        };
        for (tp, start) in tps.iter().zip(starts) {
            self.unsure.remove(tp);
            match start {
                Some(start) => _ = self.mine.insert(tp.clone(), *start),
                None => _ = self.mine.remove(tp),
            }
        }
    }

    /// The stored offset a batch of `tp` starting at `first` must find, at
    /// least; below it, the database lost what this copy applied.
    pub fn expected(&self, tp: &TopicPartition, first: i64) -> Option<i64> {
        if self.unsure.contains(tp) {
            // Unsure where reading started: nothing below this batch may be missing.
            Some(first)
        } else {
            self.mine.get(tp).copied()
        }
    }

    /// A batch of `tp` ending before `next` committed.
    pub fn stored(&mut self, tp: &TopicPartition, next: i64) {
        self.unsure.remove(tp);
        let m = self.mine.entry(tp.clone()).or_insert(next);
        *m = (*m).max(next);
    }

    /// The database's offset of `tp` is `stored`, below what was expected.
    pub fn lost(&mut self, tp: TopicPartition, stored: i64) {
        if !self.again.contains(&(tp.clone(), stored)) {
            self.again.push((tp, stored));
        }
    }

    /// Whether [`Self::verify`] has anything to compare.
    pub fn is_empty(&self) -> bool {
        self.mine.is_empty() && self.unsure.is_empty()
    }

    /// Compares the database's offsets of the group with what was expected:
    /// an idle partition gets no batch that would find out otherwise. The
    /// unsure partitions are read again from the database's offset (those it
    /// has none of never had one: Kafka's committed offset was right).
    pub fn verify(&mut self, stored: impl IntoIterator<Item = (TopicPartition, i64)>) {
        for (tp, offset) in stored {
            if self.unsure.contains(&tp) || self.mine.get(&tp).is_some_and(|&m| offset < m) {
                self.lost(tp, offset);
            }
        }
        self.unsure.clear();
    }

    /// The partitions to read again, taken once: from then on their stored
    /// offset is what is expected.
    pub fn take_again(&mut self) -> Vec<(TopicPartition, i64)> {
        for (tp, stored) in &self.again {
            self.mine.insert(tp.clone(), *stored);
            self.unsure.remove(tp);
        }
        std::mem::take(&mut self.again)
    }

    /// Expects nothing more of `tp` (its log restarted, or it left).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.mine.remove(tp);
        self.unsure.remove(tp);
        self.again.retain(|(t, _)| t != tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn a_stored_offset_below_what_was_applied_is_read_again_once() {
        let mut a = Applied::default();
        a.assigned(&[tp(0), tp(1)], Some(&[Some(5), None]));
        assert_eq!((a.expected(&tp(0), 5), a.expected(&tp(1), 0)), (Some(5), None));
        a.stored(&tp(0), 9);
        assert_eq!(a.expected(&tp(0), 9), Some(9));
        a.verify([(tp(0), 9), (tp(1), 3)]);
        assert!(a.take_again().is_empty(), "nothing lost");
        a.verify([(tp(0), 7)]);
        a.lost(tp(0), 7);
        assert_eq!(a.take_again(), vec![(tp(0), 7)], "named once");
        assert_eq!(a.expected(&tp(0), 7), Some(7), "the stored offset is what is expected now");
        a.forget(&tp(0));
        assert_eq!(a.expected(&tp(0), 7), None);
    }

    #[test]
    fn partitions_assigned_without_the_database_are_set_to_its_offset() {
        let mut a = Applied::default();
        a.assigned(&[tp(0), tp(1)], None);
        assert_eq!(a.expected(&tp(0), 12), Some(12), "a batch must find nothing missing below it");
        a.verify([(tp(0), 4)]);
        assert_eq!(a.take_again(), vec![(tp(0), 4)]);
        assert_eq!(a.expected(&tp(1), 3), None, "no stored offset: Kafka's committed one was right");
        assert_eq!(a.expected(&tp(0), 4), Some(4));
    }
}
