//! Commit bookkeeping of the assigned partitions: the next offset after the
//! handled records, what a commit in flight carries, and what the broker
//! confirmed. An offset stays due until a commit of it is confirmed; a
//! partition that leaves takes its state with it, so nothing is ever
//! committed for a partition outside the assignment.

use crate::common::record::TopicPartition;
use std::collections::BTreeMap;

use crate::consume::broker::CommitMode;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Part {
    /// Next offset after the last handled record.
    handled: Option<i64>,
    /// Offset an asynchronous commit carries, until its answer.
    in_flight: Option<i64>,
    /// Highest offset the broker confirmed.
    committed: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Offsets {
    parts: BTreeMap<TopicPartition, Part>,
}

fn above(offset: i64, floor: Option<i64>) -> bool {
    floor.is_none_or(|f| offset > f)
}

impl Offsets {
    pub fn assign(&mut self, tp: &TopicPartition) {
        self.parts.entry(tp.clone()).or_default();
    }

    /// Forgets a partition that left, with whatever it had pending.
    pub fn remove(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }

    pub fn is_assigned(&self, tp: &TopicPartition) -> bool {
        self.parts.contains_key(tp)
    }

    pub fn assigned(&self) -> impl Iterator<Item = &TopicPartition> {
        self.parts.keys()
    }

    /// The next offset after the handled records of `tp`, and the one the broker confirmed.
    pub fn of(&self, tp: &TopicPartition) -> (Option<i64>, Option<i64>) {
        self.parts.get(tp).map_or((None, None), |p| (p.handled, p.committed))
    }

    /// Records that everything before `next` of `tp` is handled. Ignored for
    /// a partition that is not assigned.
    pub fn handled(&mut self, tp: &TopicPartition, next: i64) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.handled = Some(p.handled.map_or(next, |h| h.max(next)));
        }
    }

    /// What a commit in `mode` should carry: handled offsets not confirmed
    /// yet (asynchronously: nor already in flight).
    pub fn due(&self, mode: CommitMode) -> Vec<(TopicPartition, i64)> {
        self.parts
            .iter()
            .filter_map(|(tp, p)| {
                let h = p.handled?;
                let floor = match mode {
                    CommitMode::Sync => p.committed,
                    CommitMode::Async => p.committed.max(p.in_flight),
                };
                above(h, floor).then(|| (tp.clone(), h))
            })
            .collect()
    }

    /// An asynchronous commit of `offsets` was sent.
    pub fn sent(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, o) in offsets {
            if let Some(p) = self.parts.get_mut(tp) {
                p.in_flight = Some(*o);
            }
        }
    }

    /// The broker confirmed `offsets`.
    pub fn confirmed(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, o) in offsets {
            if let Some(p) = self.parts.get_mut(tp) {
                p.committed = Some(p.committed.map_or(*o, |c| c.max(*o)));
                if p.in_flight.is_some_and(|f| f <= *o) {
                    p.in_flight = None;
                }
            }
        }
    }

    /// A commit of `offsets` failed: they are due again.
    pub fn failed(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, o) in offsets {
            if let Some(p) = self.parts.get_mut(tp) {
                if p.in_flight == Some(*o) {
                    p.in_flight = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn an_offset_stays_due_until_confirmed_and_a_failure_makes_it_due_again() {
        let mut o = Offsets::default();
        o.assign(&tp(0));
        assert!(o.due(CommitMode::Async).is_empty());
        o.handled(&tp(0), 5);
        o.handled(&tp(0), 3);
        assert_eq!(o.due(CommitMode::Async), vec![(tp(0), 5)]);
        o.sent(&[(tp(0), 5)]);
        assert!(o.due(CommitMode::Async).is_empty());
        assert_eq!(o.due(CommitMode::Sync), vec![(tp(0), 5)]);
        o.failed(&[(tp(0), 5)]);
        assert_eq!(o.due(CommitMode::Async), vec![(tp(0), 5)]);
        o.sent(&[(tp(0), 5)]);
        o.confirmed(&[(tp(0), 5)]);
        assert!(o.due(CommitMode::Sync).is_empty());
        o.handled(&tp(0), 9);
        o.sent(&[(tp(0), 9)]);
        // A late answer for an older commit neither settles nor clears the newer one.
        o.failed(&[(tp(0), 5)]);
        o.confirmed(&[(tp(0), 4)]);
        assert!(o.due(CommitMode::Async).is_empty());
        assert_eq!(o.due(CommitMode::Sync), vec![(tp(0), 9)]);
    }

    #[test]
    fn a_partition_that_leaves_takes_its_offsets_with_it() {
        let mut o = Offsets::default();
        o.assign(&tp(1));
        o.handled(&tp(1), 7);
        o.remove(&tp(1));
        o.handled(&tp(1), 8);
        o.confirmed(&[(tp(1), 8)]);
        assert!(o.due(CommitMode::Sync).is_empty());
        assert!(!o.is_assigned(&tp(1)));
        o.assign(&tp(1));
        assert!(o.due(CommitMode::Sync).is_empty(), "a new assignment starts clean");
    }
}
