//! The poison rule's memory: the ranges of records whose batch failed in a
//! way that may be one record's fault (a panic, a refused value, an unknown
//! error), handled one record at a time until past them; and how often each
//! record failed in a row. It outlives a consumer
//! thread, so a record that panics the handler is recognised after restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::common::locks::lock;
use crate::common::record::{Record, TopicPartition};

/// Failures in a row after which a record is dead-lettered.
pub const POISON_AFTER: u32 = 3;

#[derive(Debug, Default)]
struct Ledger {
    /// Per partition, the last offset of a batch that failed.
    suspects: HashMap<TopicPartition, i64>,
    failures: HashMap<(TopicPartition, i64), u32>,
}

/// Shared by every consumer thread the supervisor starts.
#[derive(Debug, Default, Clone)]
pub struct PoisonLedger(Arc<Mutex<Ledger>>);

fn tp(r: &Record) -> TopicPartition {
    r.tp()
}

impl PoisonLedger {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A panic while this was held cannot leave it half-updated: each update is one statement.
        lock(&self.0)
    }

    /// True when a record of the batch is in a suspect range: the batch is
    /// then handled one record at a time.
    pub fn any_suspect(&self, batch: &[Record]) -> bool {
        let l = self.lock();
        !l.suspects.is_empty() && batch.iter().any(|r| l.suspects.get(&tp(r)).is_some_and(|last| r.offset <= *last))
    }

    pub fn suspect(&self, batch: &[Record]) {
        let mut l = self.lock();
        for r in batch {
            let last = l.suspects.entry(tp(r)).or_insert(r.offset);
            *last = (*last).max(r.offset);
        }
    }

    /// Counts one more failure of `r` in a row; returns the count.
    pub fn failed(&self, r: &Record) -> u32 {
        let mut l = self.lock();
        let n = l.failures.entry((tp(r), r.offset)).or_default();
        *n += 1;
        *n
    }

    /// `r` went through (handled or dead-lettered).
    pub fn settled(&self, r: &Record) {
        self.lock().failures.remove(&(tp(r), r.offset));
    }

    /// The batch went through one record at a time: ranges it went past are
    /// trusted again. (Records before them may come again after a restart
    /// without their commit; they are handled whole, the range still is not.)
    pub fn cleared(&self, batch: &[Record]) {
        let mut l = self.lock();
        for r in batch {
            if l.suspects.get(&tp(r)).is_some_and(|last| r.offset >= *last) {
                l.suspects.remove(&tp(r));
            }
        }
    }
}
