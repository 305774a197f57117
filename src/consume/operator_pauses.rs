//! Partitions an operator paused (from the console): the HTTP side keeps
//! this set as the database's `paused_partitions` says, and the pipeline
//! pauses what of it is assigned. The set outlives consumer threads and
//! rebalances; the database makes it outlive the process and reach every
//! copy of the service.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::NaiveDateTime;

use crate::common::locks::lock;
use crate::common::record::TopicPartition;
use crate::db::{DbConnection, DbError};

#[derive(Default)]
pub struct OperatorPauses {
    /// Bumped on each change, so the pipeline looks only when it changed.
    version: AtomicU64,
    paused: Mutex<BTreeMap<TopicPartition, NaiveDateTime>>,
}

impl OperatorPauses {
    /// The set now: each paused partition and since when.
    pub fn set(&self, paused: BTreeMap<TopicPartition, NaiveDateTime>) {
        let mut held = lock(&self.paused);
        if *held != paused {
            *held = paused;
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// The set as the database's `paused_partitions` holds it.
    pub fn load(&self, conn: &mut DbConnection) -> Result<(), DbError> {
        let rows = crate::db::paused_partitions::list(conn)?;
        self.set(rows.into_iter().map(|(topic, partition, at)| (TopicPartition::new(topic, partition), at)).collect());
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn get(&self) -> BTreeMap<TopicPartition, NaiveDateTime> {
        lock(&self.paused).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_moves_only_on_a_change() {
        let p = OperatorPauses::default();
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        let one: BTreeMap<_, _> = [(TopicPartition::new("t", 0), at)].into();
        p.set(BTreeMap::new());
        assert_eq!(p.version(), 0);
        p.set(one.clone());
        assert_eq!((p.version(), p.get()), (1, one.clone()));
        p.set(one);
        assert_eq!(p.version(), 1);
    }
}
