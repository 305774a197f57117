//! The pipeline's sink in production. Each call is one database
//! transaction: the consumer modules' writes (through the router), the
//! batch's dead letters, and the next offset of each of its partitions in
//! `consumer_offsets`. A batch is therefore applied exactly once: a crash
//! or a failure rolls back its writes and its offsets together, and the
//! next owner of a partition reads from the offsets the database holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::record::{Record, TopicPartition};
use crate::common::shutdown::StopRequest;
use crate::config::Settings;
use crate::consume::applied::Applied;
use crate::consume::handler::{db_failure_kind, HandlerContext, Rejection};
use crate::consume::router::{DispatchError, Router};
use crate::consume::sink::{Failure, FailureKind, Sink, Stored};
use crate::db::consumer_offsets::{self, Advance, Span};
use crate::db::dead_letters::{self, NewDeadLetter};
use crate::db::{checkout, DbConnection, DbError, Pool};
use crate::events::{
    AppliedSkipped, DuplicatesRejected, Event as _, HandlerFailed, PositionReused, RecordDeadLettered, RecordsHandled,
};
use crate::schedule::Wakers;

pub struct DbSink {
    router: Router,
    pool: Pool,
    settings: Arc<Settings>,
    wakers: Wakers,
    /// Database waits end by a stop's drain deadline.
    stop: Arc<StopRequest>,
    /// Partitions whose offset the database holds durably: until then a
    /// partition's batches wait for the WAL flush, so that a lost batch
    /// never leaves only Kafka's (later) committed offset to read from.
    durable: BTreeSet<TopicPartition>,
    /// Partitions whose log restarted below the stored offset, and where.
    rewinds: BTreeMap<TopicPartition, i64>,
    /// What this sink applied: a stored offset found below it means the
    /// database lost committed batches.
    applied: Applied,
    next_verify: Instant,
    /// The ids of the topics read, stored with their partitions' offsets.
    topic_ids: BTreeMap<String, String>,
}

/// How often the stored offsets are compared with what this sink stored.
const VERIFY_EVERY: Duration = Duration::from_secs(5);

impl From<diesel::result::Error> for Failure {
    fn from(e: diesel::result::Error) -> Self {
        failure("database", DbError::Query(e))
    }
}

fn failure(what: &str, e: DbError) -> Failure {
    Failure { kind: db_failure_kind(&e), message: format!("{what}: {e}") }
}

/// The records of each partition: offsets in order (the pipeline hands them so).
fn spans(records: &[Record]) -> BTreeMap<TopicPartition, Span> {
    // Borrowed keys, and one fingerprint per partition: this runs over every record.
    let mut ends: BTreeMap<(&str, i32), (i64, &Record)> = BTreeMap::new();
    for r in records {
        ends.entry((&r.topic, r.partition))
            .and_modify(|(first, last)| (*first, *last) = ((*first).min(r.offset), r))
            .or_insert((r.offset, r));
    }
    ends.into_iter()
        .map(|((topic, partition), (first, last))| {
            let span = Span { first, next: last.offset + 1, last_fingerprint: last.fingerprint() };
            (TopicPartition::new(topic, partition), span)
        })
        .collect()
}

impl DbSink {
    pub fn new(router: Router, pool: Pool, settings: Arc<Settings>, wakers: Wakers, stop: Arc<StopRequest>) -> Self {
        DbSink {
            router,
            pool,
            settings,
            wakers,
            stop,
            durable: BTreeSet::new(),
            rewinds: BTreeMap::new(),
            applied: Applied::default(),
            next_verify: Instant::now(),
            topic_ids: BTreeMap::new(),
        }
    }

    /// Runs `apply` on the records and moves their partitions' offsets, in
    /// one transaction. The offsets are written first: records applied
    /// already (a lost commit answer, a copy that lost the partition without
    /// knowing yet) are not applied again; `apply` gets the rest.
    fn in_transaction<T>(
        &mut self,
        records: &[Record],
        apply: impl FnOnce(&mut Router, &mut DbConnection, &[Record]) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let spans = spans(records);
        let mut conn = checkout(&self.pool, self.stop.drain_by()).map_err(|e| failure("database", e))?;
        let durable = self.settings.database_consumer_sync_commit || spans.keys().any(|tp| !self.durable.contains(tp));
        let (group, rewinds, applied, router, ids) =
            (&self.settings.kafka_group_id, &self.rewinds, &self.applied, &mut self.router, &self.topic_ids);
        let mut lost = None;
        let out = crate::db::transaction(&mut conn, !durable, |c| {
            let mut applied_below = BTreeMap::new();
            for (tp, span) in &spans {
                let rewind = rewinds.get(tp).copied();
                if let Some(to) = rewind {
                    consumer_offsets::rewind(c, group, tp, to).map_err(|e| failure("offsets", e))?;
                }
                let fingerprint_at = |o: i64| {
                    let same = |r: &&Record| r.offset == o && r.partition == tp.partition && r.topic == tp.topic;
                    records.iter().find(same).map(Record::fingerprint)
                };
                let mine = if rewind.is_some() { None } else { applied.expected(tp, span.first) };
                let topic_id = ids.get(&tp.topic).map(String::as_str);
                match consumer_offsets::advance(c, group, tp, *span, mine, topic_id, fingerprint_at)
                    .map_err(|e| failure("offsets", e))?
                {
                    Advance::Moved => {}
                    Advance::AppliedBelow(stored) => _ = applied_below.insert(tp, stored),
                    Advance::Lost(stored) => {
                        lost = Some((tp.clone(), stored));
                        return Err(Failure {
                            kind: FailureKind::Transient,
                            message: format!(
                                "the database lost committed batches of {}/{} (a crash before their WAL flush?): \
                                 its offset went back from {} to {stored}; reading them again",
                                tp.topic,
                                tp.partition,
                                mine.unwrap_or_default()
                            ),
                        });
                    }
                }
            }
            if applied_below.is_empty() {
                return apply(router, c, records);
            }
            let todo: Vec<Record> =
                records.iter().filter(|r| applied_below.get(&r.tp()).is_none_or(|&s| r.offset >= s)).cloned().collect();
            AppliedSkipped { records: records.len() - todo.len(), first: &records[0].position() }.emit();
            apply(router, c, &todo)
        });
        if let Some((tp, stored)) = lost {
            // What is expected stays until the pipeline takes this, and drops
            // what it holds: until then no later record can move past the gap.
            self.applied.lost(tp, stored);
        }
        let out = out?;
        for (tp, span) in &spans {
            self.rewinds.remove(tp);
            self.durable.insert(tp.clone());
            self.applied.stored(tp, span.next);
        }
        Ok(out)
    }

    /// Compares the stored offsets with what this sink applied (see
    /// [`Applied::verify`]); while the database is away, the next time does.
    fn verify(&mut self) {
        if self.applied.is_empty() {
            return;
        }
        let stored = checkout(&self.pool, self.stop.drain_by())
            .and_then(|mut c| consumer_offsets::list(&mut c, &self.settings.kafka_group_id));
        if let Ok(stored) = stored {
            self.applied.verify(stored);
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
}

impl Sink for DbSink {
    fn positions(&mut self, tps: &[TopicPartition]) -> Result<Vec<Option<Stored>>, Failure> {
        let stored = checkout(&self.pool, self.stop.drain_by())
            .and_then(|mut conn| consumer_offsets::positions(&mut conn, &self.settings.kafka_group_id, tps))
            .map_err(|e| failure("offsets", e));
        let starts: Option<Vec<Option<i64>>> =
            stored.as_ref().ok().map(|s| s.iter().map(|s| s.as_ref().map(|s| s.next)).collect());
        self.applied.assigned(tps, starts.as_deref());
        for (tp, start) in tps.iter().zip(starts.iter().flatten()) {
            if start.is_some() {
                self.durable.insert(tp.clone());
            }
        }
        stored
    }

    fn identify(&mut self, topic_ids: &BTreeMap<String, String>) {
        self.topic_ids.extend(topic_ids.iter().map(|(t, id)| (t.clone(), id.clone())));
    }

    fn released(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.rewinds.remove(tp);
            self.durable.remove(tp);
            self.applied.forget(tp);
        }
    }

    fn rewind(&mut self, tp: &TopicPartition, to: i64) {
        self.rewinds.insert(tp.clone(), to);
        self.applied.forget(tp);
    }

    fn read_again(&mut self) -> Vec<(TopicPartition, i64)> {
        if Instant::now() >= self.next_verify {
            self.next_verify = Instant::now() + VERIFY_EVERY;
            self.verify();
        }
        self.applied.take_again()
    }

    fn handle(&mut self, batch: &[Record]) -> Result<(), Failure> {
        let settings = self.settings.clone();
        let (dispatched, (rejected, why), reused, wake) = self.in_transaction(batch, |router, c, batch| {
            let mut ctx = HandlerContext::new(c, &settings);
            let dispatched = match router.dispatch(batch, &mut ctx) {
                Ok(d) => d,
                Err(DispatchError::Failed { topic, source }) => {
                    HandlerFailed { topic: &topic, panicked: false }.emit();
                    return Err(Failure { kind: source.kind(), message: format!("topic={topic}: {source}") });
                }
                Err(DispatchError::Panicked { topic, message, .. }) => {
                    HandlerFailed { topic: &topic, panicked: true }.emit();
                    return Err(Failure { kind: FailureKind::Panic, message });
                }
            };
            let (rejected, wake) = ctx.into_parts();
            let (rejected, why): (Vec<NewDeadLetter>, Vec<Rejection>) = rejected.into_iter().unzip();
            let stored = dead_letters::insert_all(c, &rejected).map_err(|e| failure("storing dead letters", e))?;
            Ok((dispatched, (rejected, why), stored.reused, wake))
        })?;
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
        Ok(())
    }

    fn dead_letter(&mut self, record: &Record, reason: &str) -> Result<(), Failure> {
        let rows = [NewDeadLetter::of(record, reason)];
        let stored = self.in_transaction(std::slice::from_ref(record), |_, c, todo| {
            // Empty: its dead letter was stored by a commit whose answer was lost.
            (!todo.is_empty())
                .then(|| dead_letters::insert_all(c, &rows).map_err(|e| failure("storing a dead letter", e)))
                .transpose()
        })?;
        if let Some(stored) = stored {
            self.stored_dead_letters(&rows, &[Rejection::Invalid], &stored.reused);
        }
        Ok(())
    }

    fn healthy(&mut self) -> bool {
        checkout(&self.pool, self.stop.drain_by()).and_then(|mut c| crate::db::ping(&mut c)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_run_from_the_first_record_to_one_past_the_last_of_each_partition() {
        let rec = |t: &str, p, o| Record {
            topic: t.into(),
            partition: p,
            offset: o,
            key: None,
            payload: None,
            timestamp: None,
        };
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

    /// What the sink keeps of a partition goes when it leaves: a rewind not
    /// applied yet, its durability and what it applied are the next
    /// assignment's to learn afresh.
    #[test]
    fn a_partition_that_leaves_takes_its_state_with_it() {
        let dir = std::env::temp_dir().join(format!("cronsumer-released-{}", std::process::id()));
        let url = dir.join("t.db").display().to_string();
        let (pool, _) = crate::db::connect_and_migrate(&url, 1).unwrap();
        let settings = Arc::new(Settings::from_vars(Default::default()).unwrap());
        let router = Router::new(vec![], str::to_string);
        let mut sink = DbSink::new(router, pool, settings, Wakers::default(), Arc::default());
        let tp = |p: i32| -> TopicPartition { TopicPartition::new("t", p) };
        let rec = |p: i32, offset: i64| Record {
            topic: "t".into(),
            partition: p,
            offset,
            key: None,
            payload: None,
            timestamp: None,
        };
        sink.handle(&[rec(0, 0), rec(1, 0), rec(1, 1), rec(2, 0)]).unwrap();
        sink.rewind(&tp(0), 0);
        assert_eq!(sink.applied.expected(&tp(1), 2), Some(2));
        sink.released(&[tp(0), tp(1)]);
        assert!(sink.rewinds.is_empty(), "a rewind of a partition that left");
        assert_eq!(sink.durable.iter().collect::<Vec<_>>(), vec![&tp(2)]);
        assert_eq!(sink.applied.expected(&tp(1), 2), None, "what was applied of a partition that left");
        assert_eq!(sink.applied.expected(&tp(2), 1), Some(1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
