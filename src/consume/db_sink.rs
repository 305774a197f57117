//! The database as the consumer's sink in production: what the polling
//! thread reads ([`DbOffsets`]), and each lane's transactions ([`DbSink`]).
//! A lane's call is one database transaction: the consumer modules' writes
//! (through the router), the batch's dead letters, and the next offset of
//! each of its partitions in `consumer_offsets`. A batch is therefore
//! applied exactly once: a crash or a failure rolls back its writes and its
//! offsets together, and the next owner of a partition reads from the
//! offsets the database holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::record::{Record, TopicPartition};
use crate::common::shutdown::StopRequest;
use crate::config::Settings;
use crate::consume::handler::{db_failure_kind, HandlerContext, Rejection};
use crate::consume::positions::PartitionState;
use crate::consume::router::{DispatchError, Router};
use crate::consume::sink::{Failure, FailureKind, LaneSink, Sink, Stored, Txn};
use crate::db::consumer_offsets::{self, spans, Advance};
use crate::db::dead_letters::{self, NewDeadLetter};
use crate::db::{checkout, DbConnection, DbError, Pool};
use crate::events::{
    AppliedSkipped, DuplicatesRejected, Event as _, HandlerFailed, PositionReused, RecordDeadLettered, RecordsHandled,
};
use crate::schedule::Wakers;

impl From<diesel::result::Error> for Failure {
    fn from(e: diesel::result::Error) -> Self {
        failure("database", DbError::Query(e))
    }
}

fn failure(what: &str, e: DbError) -> Failure {
    Failure::new(db_failure_kind(&e), format!("{what}: {e}"))
}

/// The group's stored offsets, as the polling thread reads them.
pub struct DbOffsets {
    pool: Pool,
    group: String,
    /// Database waits end by a stop's drain deadline.
    stop: Arc<StopRequest>,
}

impl DbOffsets {
    pub fn new(pool: Pool, group: &str, stop: Arc<StopRequest>) -> Self {
        DbOffsets { pool, group: group.to_string(), stop }
    }

    fn conn(&self) -> Result<crate::db::Conn, Failure> {
        checkout(&self.pool, self.stop.drain_by()).map_err(|e| failure("offsets", e))
    }
}

impl Sink for DbOffsets {
    fn positions(&mut self, tps: &[TopicPartition]) -> Result<Vec<Option<Stored>>, Failure> {
        consumer_offsets::positions(&mut *self.conn()?, &self.group, tps).map_err(|e| failure("offsets", e))
    }

    fn offsets(&mut self) -> Result<Vec<(TopicPartition, i64)>, Failure> {
        consumer_offsets::list(&mut *self.conn()?, &self.group).map_err(|e| failure("offsets", e))
    }
}

/// A lane's transactions: its own router (fresh module instances), the pool.
pub struct DbSink {
    router: Router,
    pool: Pool,
    settings: Arc<Settings>,
    wakers: Wakers,
    stop: Arc<StopRequest>,
}

impl DbSink {
    pub fn new(router: Router, pool: Pool, settings: Arc<Settings>, wakers: Wakers, stop: Arc<StopRequest>) -> Self {
        DbSink { router, pool, settings, wakers, stop }
    }

    /// Runs `apply` on the records and moves their partitions' offsets, in
    /// one transaction. The offsets are written first: records applied
    /// already (a lost commit answer, a copy that lost the partition without
    /// knowing yet) are not applied again; `apply` gets the rest.
    fn in_transaction<T>(
        &mut self,
        records: &[Record],
        parts: &BTreeMap<TopicPartition, PartitionState>,
        apply: impl FnOnce(&mut Router, &mut DbConnection, &[Record]) -> Result<T, Failure>,
    ) -> Result<Result<T, (TopicPartition, i64)>, Failure> {
        let spans = spans(records);
        let unknown = PartitionState { mine: None, rewind: None, durable: false, topic_id: None };
        let state = |tp: &TopicPartition| parts.get(tp).unwrap_or(&unknown);
        let mut conn = checkout(&self.pool, self.stop.drain_by()).map_err(|e| failure("database", e))?;
        // A partition's first offset waits for its WAL flush: see `Positions`.
        let durable = self.settings.database_consumer_sync_commit || spans.keys().any(|tp| !state(tp).durable);
        let (group, router) = (&self.settings.kafka_group_id, &mut self.router);
        let mut lost = None;
        let out = crate::db::transaction(&mut conn, !durable, |c| {
            let mut skips = BTreeMap::new();
            for (tp, span) in &spans {
                let s = state(tp);
                if let Some(to) = s.rewind {
                    consumer_offsets::rewind(c, group, tp, to).map_err(|e| failure("offsets", e))?;
                }
                let fingerprint_at =
                    |o: i64| records.iter().find(|r| r.offset == o && tp.holds(r)).map(Record::fingerprint);
                match consumer_offsets::advance(c, group, tp, *span, s.mine, s.topic_id.as_deref(), fingerprint_at)
                    .map_err(|e| failure("offsets", e))?
                {
                    Advance::Moved | Advance::Replaced => {}
                    skip @ Advance::AppliedBelow(_) => _ = skips.insert(tp, skip),
                    Advance::Lost(stored) => {
                        lost = Some((tp.clone(), stored));
                        // Rolls back: nothing is written.
                        return Err(Failure::new(FailureKind::Transient, "lost commits"));
                    }
                }
            }
            if skips.is_empty() {
                return apply(router, c, records);
            }
            let applies = |r: &&Record| skips.get(&r.tp()).is_none_or(|a| a.applies(r.offset));
            let todo: Vec<Record> = records.iter().filter(applies).cloned().collect();
            AppliedSkipped { records: records.len() - todo.len(), first: &records[0].position() }.emit();
            apply(router, c, &todo)
        });
        match lost {
            Some(lost) => Ok(Err(lost)),
            None => out.map(Ok),
        }
    }

    /// The events of dead letters stored by a committed transaction.
    fn stored_dead_letters(&self, rows: &[NewDeadLetter], why: &[Rejection], reused: &[usize]) {
        for d in reused.iter().map(|&i| &rows[i]) {
            PositionReused { topic: &d.topic, partition: d.partition, offset: d.offset, held_by: "dead_letter" }.emit();
        }
        let mut repeats: BTreeMap<&str, usize> = BTreeMap::new();
        for (d, why) in rows.iter().zip(why) {
            RecordDeadLettered { topic: &d.topic, partition: d.partition, offset: d.offset, reason: &d.error }.emit();
            match why {
                Rejection::ReusedPosition => {
                    let held_by = "stored_record";
                    PositionReused { topic: &d.topic, partition: d.partition, offset: d.offset, held_by }.emit()
                }
                Rejection::Repeat => *repeats.entry(d.topic.as_str()).or_default() += 1,
                Rejection::Invalid => {}
            }
        }
        for (topic, records) in repeats {
            DuplicatesRejected { topic, records }.emit();
        }
    }

    /// The handlers' writes of `batch`.
    fn handle(&mut self, batch: &[Record], parts: &BTreeMap<TopicPartition, PartitionState>) -> Result<Txn, Failure> {
        let settings = self.settings.clone();
        let done = self.in_transaction(batch, parts, |router, c, batch| {
            let mut ctx = HandlerContext::new(c, &settings);
            let dispatched = match router.dispatch(batch, &mut ctx) {
                Ok(d) => d,
                Err(DispatchError::Failed { topic, source }) => {
                    HandlerFailed { topic: &topic, panicked: false }.emit();
                    let failure = Failure::new(source.kind(), format!("topic={topic}: {source}"));
                    return Err(Failure { retry_after: source.retry_after(), ..failure });
                }
                Err(DispatchError::Panicked { topic, message, .. }) => {
                    HandlerFailed { topic: &topic, panicked: true }.emit();
                    return Err(Failure::new(FailureKind::Panic, message));
                }
            };
            let (rejected, wake) = ctx.into_parts();
            let (rejected, why): (Vec<NewDeadLetter>, Vec<Rejection>) = rejected.into_iter().unzip();
            let stored = dead_letters::insert_all(c, &rejected).map_err(|e| failure("storing dead letters", e))?;
            Ok((dispatched, (rejected, why), stored.reused, wake))
        })?;
        let (dispatched, (rejected, why), reused, wake) = match done {
            Ok(done) => done,
            Err((tp, stored)) => return Ok(Txn::Lost(tp, stored)),
        };
        self.stored_dead_letters(&rejected, &why, &reused);
        let mut unrouted = BTreeMap::new();
        if dispatched.unrouted > 0 {
            for r in batch.iter().filter(|r| !dispatched.handled.contains_key(&r.topic)) {
                *unrouted.entry(r.topic.as_str()).or_default() += 1;
            }
        }
        RecordsHandled { by_topic: &dispatched.handled, unrouted }.emit();
        for job in wake {
            self.wakers.wake(job);
        }
        Ok(Txn::Committed)
    }

    /// `record`'s dead letter, with `reason`.
    fn dead_letter(
        &mut self,
        record: &Record,
        parts: &BTreeMap<TopicPartition, PartitionState>,
        reason: &str,
    ) -> Result<Txn, Failure> {
        let rows = [NewDeadLetter::of(record, reason)];
        let done = self.in_transaction(std::slice::from_ref(record), parts, |_, c, todo| {
            // Empty: its dead letter was stored by a commit whose answer was lost.
            (!todo.is_empty())
                .then(|| dead_letters::insert_all(c, &rows).map_err(|e| failure("storing a dead letter", e)))
                .transpose()
        })?;
        match done {
            Ok(stored) => {
                if let Some(stored) = stored {
                    self.stored_dead_letters(&rows, &[Rejection::Invalid], &stored.reused);
                }
                Ok(Txn::Committed)
            }
            Err((tp, stored)) => Ok(Txn::Lost(tp, stored)),
        }
    }
}

impl LaneSink for DbSink {
    fn apply(
        &mut self,
        records: &[Record],
        parts: &BTreeMap<TopicPartition, PartitionState>,
        dead_letter: Option<&str>,
    ) -> Result<Txn, Failure> {
        match (dead_letter, records) {
            (Some(reason), [record]) => self.dead_letter(record, parts, reason),
            (Some(_), _) => Err(Failure::new(FailureKind::Unknown, "a dead letter is one record")),
            (None, _) => self.handle(records, parts),
        }
    }

    fn healthy(&mut self) -> bool {
        checkout(&self.pool, self.stop.drain_by()).and_then(|mut c| crate::db::ping(&mut c)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::consumer_offsets::Span;

    fn rec(t: &str, p: i32, o: i64) -> Record {
        Record { topic: t.into(), partition: p, offset: o, key: None, payload: None, timestamp: None }
    }

    #[test]
    fn spans_run_from_the_first_record_to_one_past_the_last_of_each_partition() {
        let batch = [rec("a", 0, 7), rec("a", 1, 3), rec("a", 0, 9), rec("b", 0, 0)];
        let span = |first, next, r: &Record| Span { first, next, last_fingerprint: r.fingerprint() };
        let spans: Vec<(TopicPartition, Span)> = spans(&batch).into_iter().collect();
        assert_eq!(
            spans,
            vec![
                (TopicPartition::new("a", 0), span(7, 10, &batch[2])),
                (TopicPartition::new("a", 1), span(3, 4, &batch[1])),
                (TopicPartition::new("b", 0), span(0, 1, &batch[3]))
            ]
        );
    }
}
