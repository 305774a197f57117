//! The invariants, checked after every step ([`World::check`]) and at the
//! end ([`World::done`]): I1 no commit passes a record neither stored nor
//! dead-lettered; I2 and I4 (recorded by the cluster) no commit moves back
//! or leaves the assignment; I5 memory stays under the pipeline's bound; I6
//! (the cluster) no offset committed again while in flight or confirmed; I7
//! (the database) each effect applied once; and the lanes' own (the
//! database and the lanes record them): a partition's effects in offset
//! order, never two batches of one partition in flight, one batch per lane.

use cronsumer::common::record::TopicPartition;

use crate::world::World;

impl World {
    /// I1, I4, I2 (the last two recorded by the cluster), I5, and the
    /// database's own (nothing both stored and dead-lettered).
    pub fn check(&mut self) -> Result<(), String> {
        let cluster = self.cluster.borrow();
        let db = self.db.borrow();
        if let Some(v) = cluster.violations.first().or(db.violations.first()) {
            return Err(v.clone());
        }
        for (tp, &c) in &cluster.committed {
            let from = self.checked.get(tp).copied().unwrap_or(0);
            for o in from..c {
                let p = (tp.clone(), o);
                // A database crash may undo what a commit covered: such records are applied again.
                if !db.ever_settled.contains(&p) && !db.dead.contains_key(&p) {
                    return Err(format!(
                        "I1: {}/{} committed {c} past {o}, neither stored nor dead-lettered",
                        tp.topic, tp.partition
                    ));
                }
            }
            self.checked.insert(tp.clone(), c.max(from));
        }
        drop((cluster, db));
        for m in 0..self.members.len() {
            let Some(p) = self.members[m].pipeline.as_ref() else { continue };
            // A partition waiting for its seek holds nothing: what its client fetches meanwhile is dropped.
            let (bound, again) = (p.memory_bound(), p.reading_again());
            let held = self.in_memory_except(m, &again);
            self.max_buffered = self.max_buffered.max(held);
            if held > bound {
                let own = self.members[m].pipeline.as_ref().map_or(0, |p| p.buffered());
                return Err(format!(
                    "I5: member {m} holds {held} records (its own count: {own}), bound {bound}\n{}",
                    self.describe()
                ));
            }
        }
        Ok(())
    }

    /// Records member `m` holds, seen from outside: fetched by its client
    /// (and out of its queue: a record the poll that served a rebalance
    /// fetched waits there) and neither stored nor dead-lettered yet, but
    /// for the partitions `except`.
    pub(crate) fn in_memory_except(&mut self, m: usize, except: &[TopicPartition]) -> usize {
        let cluster = self.cluster.borrow();
        let db = self.db.borrow();
        // A record a database crash undid is not in memory: it is read again
        // (and then not counted here: the bound is checked on the rest).
        let is_settled = |tp: &TopicPartition, o: i64| db.ever_settled.contains(&(tp.clone(), o));
        let client = &cluster.members[m];
        let queued = cluster.queued_records(m);
        let mut held = 0;
        for tp in client.owned.iter().filter(|tp| !except.contains(tp)) {
            let fetched = client.fetch.get(tp).copied().unwrap_or(0);
            let mut from = self.settled.get(tp).copied().unwrap_or(0);
            while from < fetched && is_settled(tp, from) {
                from += 1;
            }
            self.settled.insert(tp.clone(), from);
            held += (from..fetched).filter(|o| !is_settled(tp, *o) && !queued.contains(&(tp.clone(), *o))).count();
        }
        held
    }

    /// Everything is done: each record stored once or dead-lettered once as
    /// its nature says, every commit caught up, nothing paused, nothing in memory.
    pub fn done(&self) -> Result<(), String> {
        let cluster = self.cluster.borrow();
        let db = self.db.borrow();
        for (tp, log) in &cluster.logs {
            let c = cluster.committed.get(tp).copied().unwrap_or(0);
            if c != log.len() as i64 {
                return Err(format!("{}/{} committed {c} of {}", tp.topic, tp.partition, log.len()));
            }
        }
        if !cluster.is_stable() {
            return Err("rebalance in progress".into());
        }
        for (m, member) in self.members.iter().enumerate() {
            if member.pipeline.is_none() {
                return Err(format!("member {m} is down"));
            }
            let client = &cluster.members[m];
            if !client.joined {
                return Err(format!("member {m} is not in the group"));
            }
            if let Some(tp) = client.owned.intersection(&client.paused).next() {
                return Err(format!("I3: member {m} keeps {}/{} paused", tp.topic, tp.partition));
            }
            if member.heartbeat.assigned() != client.owned.len() as i64 {
                return Err(format!(
                    "member {m} reports {} partitions, owns {}",
                    member.heartbeat.assigned(),
                    client.owned.len()
                ));
            }
        }
        for (p, nature) in &self.produced {
            let (stored, dead) = (db.stored.contains(p), db.dead.contains_key(p));
            let ok = if nature.is_stored() { stored && !dead } else { dead && !stored };
            if !ok {
                return Err(format!(
                    "{}/{}@{} ({nature:?}): stored={stored} dead={dead}",
                    p.0.topic, p.0.partition, p.1
                ));
            }
            let applied = db.applied.get(p).copied().unwrap_or(0);
            if nature.is_stored() && applied != 1 {
                return Err(format!("I7: {}/{}@{} applied {applied} times", p.0.topic, p.0.partition, p.1));
            }
        }
        Ok(())
    }
}
