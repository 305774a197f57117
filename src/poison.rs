//! The poison rule's memory: partitions whose last batch failed in a way
//! that may be one record's fault (a panic, a refused value, an unknown
//! error), and how often each record failed in a row. It outlives a consumer
//! thread, so a record that panics the handler is recognised after restarts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::broker::Tp;
use crate::record::Record;

/// Failures in a row after which a record is dead-lettered.
pub const POISON_AFTER: u32 = 3;

#[derive(Debug, Default)]
struct Ledger {
    suspects: HashSet<Tp>,
    failures: HashMap<(Tp, i64), u32>,
}

/// Shared by every consumer thread the supervisor starts.
#[derive(Debug, Default, Clone)]
pub struct PoisonLedger(Arc<Mutex<Ledger>>);

fn tp(r: &Record) -> Tp {
    (r.topic.clone(), r.partition)
}

impl PoisonLedger {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A panic while this was held cannot leave it half-updated: each update is one statement.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when a record of the batch is on a suspect partition: the batch
    /// is then handled one record at a time.
    pub fn any_suspect(&self, batch: &[Record]) -> bool {
        let l = self.lock();
        !l.suspects.is_empty() && batch.iter().any(|r| l.suspects.contains(&tp(r)))
    }

    pub fn suspect(&self, batch: &[Record]) {
        let mut l = self.lock();
        l.suspects.extend(batch.iter().map(tp));
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

    /// The batch went through one record at a time: its partitions are trusted again.
    pub fn cleared(&self, batch: &[Record]) {
        let mut l = self.lock();
        for r in batch {
            l.suspects.remove(&tp(r));
        }
    }
}
