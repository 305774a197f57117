//! The outbox publisher: takes unpublished `outbox` rows to Kafka with the
//! idempotent producer (`acks=all`, `KAFKA_PRODUCER_COMPRESSION`, each row's
//! key) and marks each published from its delivery report.
//!
//! It sends in waves of at most one row per key, each wave waiting for its
//! reports, so a key's rows reach the topic in the order they were written:
//! none can overtake one that failed, whatever the broker does. A key whose
//! row fails waits (1 s doubling to a minute) with its later rows; the other
//! keys go on; rows stay until delivered. A crash after delivery and before
//! marking sends those rows again: consumers tell them by the event's
//! identity.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig};
use rdkafka::ClientContext;

use crate::common::backoff::Backoff;
use crate::common::locks::lock;
use crate::config::Settings;
use crate::db::outbox::{self, OutboxRow};
use crate::db::{DbConnection, DbError};
use crate::events::{Event as _, OutboxFailed, OutboxPublished};

/// The name of the job that runs the publisher: writers of outbox rows wake it.
pub const JOB: &str = "publish_outbox";

/// Rows read per round.
const SCAN: i64 = 1000;
/// How long the broker may take to confirm a row before the attempt fails.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A wave's reports come within the message timeout; past this, it is purged.
const WAVE_TIMEOUT: Duration = Duration::from_secs(15);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Delivery reports, by outbox row id.
#[derive(Default)]
struct Reports(Mutex<Vec<(i64, Result<(), String>)>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<i64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<i64>) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        lock(&self.0).push((*id, outcome));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot create the Kafka producer: {0}")]
    Producer(KafkaError),
    #[error("{rows} outbox row(s) not delivered ({error}); their keys wait {} ms", retry_in.as_millis())]
    Undelivered { rows: usize, error: String, retry_in: Duration },
    #[error("the publisher lost its lease (another copy publishes now): nothing more was sent or marked")]
    LeaseLost,
}

/// The publisher's writes go through its run's fence: `write` runs in one
/// transaction that first checks that the run still holds the publisher's
/// lease; `Ok(false)` when it was lost (nothing written).
pub type Fence<'a> =
    &'a dyn Fn(&mut DbConnection, &mut dyn FnMut(&mut DbConnection) -> Result<(), DbError>) -> Result<bool, DbError>;

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub rows: usize,
    /// Rows wait only for keys whose last attempt failed: the soonest retry.
    pub waiting: Option<Duration>,
}

/// One per process: its producer lives across runs (a connection kept),
/// and a key whose row failed waits before its next attempt.
#[derive(Default)]
pub struct Publisher {
    producer: Mutex<Option<BaseProducer<Reports>>>,
    /// Keys whose last attempt failed: their backoff and when they may be sent again.
    retry: Mutex<HashMap<String, (Backoff, Instant)>>,
}

impl Publisher {
    /// Publishes the unpublished rows, wave by wave, until none is left that
    /// may be sent now or `stop` says so. A key whose row fails is left out
    /// for the rest of the run, its later rows with it, and waits (1 s
    /// doubling to a minute); the other keys go on. Each wave is sent only
    /// while the run holds its lease, and marked through `fence`: a run that
    /// lost its lease sends and marks nothing more, so two copies never
    /// publish the same rows side by side.
    pub fn run(
        &self,
        settings: &Settings,
        conn: &mut DbConnection,
        fence: Fence<'_>,
        stop: impl Fn() -> bool,
    ) -> Result<Published, PublishError> {
        let mut guard = lock(&self.producer);
        let producer = match &mut *guard {
            Some(p) => p,
            empty @ None => {
                let mut config = crate::kafka::producer_config(settings);
                config.set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string());
                empty.insert(
                    crate::kafka::create(settings, &config, Reports::default()).map_err(PublishError::Producer)?,
                )
            }
        };
        let mut waiting = self.waiting_keys();
        let (mut published, mut failed) = (0, Vec::new());
        while !stop() {
            let mut rows = outbox::unpublished(conn, SCAN)?;
            rows.retain(|r| !waiting.contains_key(&r.key));
            if rows.is_empty() {
                break;
            }
            while !rows.is_empty() && !stop() {
                if !fence(conn, &mut |_| Ok(()))? {
                    return Err(PublishError::LeaseLost);
                }
                let (delivered, failures) = send_wave(producer, &first_of_each_key(&rows));
                #[cfg(feature = "fault-injection")]
                after_delivery(delivered.len());
                let marked = fence(conn, &mut |c| {
                    outbox::mark_published(c, &delivered)?;
                    failures.iter().try_for_each(|(row, error)| outbox::mark_failed(c, row.id, error))
                })?;
                if !marked {
                    // Its rows go out again from the lease's new holder: consumers tell them by identity.
                    return Err(PublishError::LeaseLost);
                }
                published += delivered.len();
                for (row, error) in failures {
                    waiting.insert(row.key.clone(), self.key_failed(&row.key));
                    failed.push(error);
                }
                let sent: HashSet<i64> = delivered.iter().copied().collect();
                self.keys_delivered(rows.iter().filter(|r| sent.contains(&r.id)).map(|r| r.key.as_str()));
                rows.retain(|r| !sent.contains(&r.id) && !waiting.contains_key(&r.key));
            }
        }
        if published > 0 {
            OutboxPublished { rows: published }.emit();
        }
        let soonest = waiting.values().min().copied();
        match failed.first() {
            None => Ok(Published { rows: published, waiting: soonest }),
            Some(error) => {
                // A fresh producer next time: an idempotent one may be stuck on a fatal error.
                *guard = None;
                let retry_in = soonest.unwrap_or_default();
                OutboxFailed { rows: failed.len(), retry_in, error }.emit();
                Err(PublishError::Undelivered { rows: failed.len(), error: error.clone(), retry_in })
            }
        }
    }

    /// Keys still waiting after a failure, with the time left.
    fn waiting_keys(&self) -> HashMap<String, Duration> {
        let now = Instant::now();
        lock(&self.retry)
            .iter()
            .filter_map(|(key, (_, at))| Some((key.clone(), at.checked_duration_since(now).filter(|d| !d.is_zero())?)))
            .collect()
    }

    /// Counts a failed attempt of `key`; returns its wait before the next.
    fn key_failed(&self, key: &str) -> Duration {
        let mut retry = lock(&self.retry);
        let (backoff, at) =
            retry.entry(key.to_string()).or_insert_with(|| (Backoff::new(RETRY_FIRST, RETRY_MAX), Instant::now()));
        let wait = backoff.next_delay();
        *at = Instant::now() + wait;
        wait
    }

    fn keys_delivered<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        let mut retry = lock(&self.retry);
        for key in keys {
            retry.remove(key);
        }
    }
}

/// The oldest row of each key, oldest first.
fn first_of_each_key(rows: &[OutboxRow]) -> Vec<&OutboxRow> {
    let mut keys = HashSet::new();
    rows.iter().filter(|r| keys.insert(r.key.as_str())).collect()
}

/// Sends the rows and waits for their reports: the ids delivered, and the
/// rows that were not, with why.
fn send_wave<'a>(producer: &BaseProducer<Reports>, wave: &[&'a OutboxRow]) -> (Vec<i64>, Vec<(&'a OutboxRow, String)>) {
    // Reports of an earlier wave's purged rows are not this wave's.
    lock(&producer.context().0).clear();
    let mut failed = Vec::new();
    for r in wave {
        loop {
            let record = BaseRecord::with_opaque_to(&r.topic, Box::new(r.id)).key(&r.key).payload(&r.payload);
            match producer.send(record) {
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(50));
                    continue;
                }
                Err((e, _)) => failed.push((*r, format!("cannot queue: {e}"))),
                Ok(()) => {}
            }
            break;
        }
    }
    if producer.flush(WAVE_TIMEOUT).is_err() {
        // Nothing may stay in flight past the wave: a later one could overtake it.
        producer.purge(PurgeConfig::default().queue().inflight());
        producer.poll(Duration::from_millis(100));
    }
    let reports: HashMap<i64, Result<(), String>> = lock(&producer.context().0).drain(..).collect();
    let not_queued: HashSet<i64> = failed.iter().map(|(r, _)| r.id).collect();
    let mut delivered = Vec::new();
    for r in wave.iter().filter(|r| !not_queued.contains(&r.id)) {
        match reports.get(&r.id) {
            Some(Ok(())) => delivered.push(r.id),
            Some(Err(e)) => failed.push((*r, e.clone())),
            None => failed.push((*r, format!("no delivery report within {} s", WAVE_TIMEOUT.as_secs()))),
        }
    }
    (delivered, failed)
}

/// Fault injection, in a build with the `fault-injection` feature only: set
/// to `1`, the outbox publisher kills its own process (SIGKILL) after
/// its first delivered wave, before marking the rows published.
#[cfg(feature = "fault-injection")]
pub const KILL_AFTER_DELIVERY_ENV: &str = "CRONSUMER_FAULT_KILL_AFTER_DELIVERY";

/// Called by the publisher between a wave's delivery and its marking.
#[cfg(feature = "fault-injection")]
fn after_delivery(delivered: usize) {
    if delivered > 0 && std::env::var(KILL_AFTER_DELIVERY_ENV).is_ok_and(|v| v == "1") {
        log::warn!("fault injection ({KILL_AFTER_DELIVERY_ENV}): SIGKILL after {delivered} delivered row(s)");
        let _ = std::process::Command::new("kill").args(["-9", &std::process::id().to_string()]).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, key: &str) -> OutboxRow {
        OutboxRow {
            id,
            topic: "t".into(),
            key: key.into(),
            payload: "{}".into(),
            created_at: crate::db::now(),
            published_at: None,
            attempts: 0,
            last_error: None,
        }
    }

    #[test]
    fn a_wave_holds_the_oldest_row_of_each_key() {
        let rows = [row(1, "A"), row(2, "A"), row(3, "B"), row(4, "A"), row(5, "C"), row(6, "B")];
        let ids: Vec<i64> = first_of_each_key(&rows).iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 3, 5]);
    }

    #[test]
    fn a_failed_key_waits_longer_each_time_and_a_delivery_frees_it() {
        let p = Publisher::default();
        assert!(p.waiting_keys().is_empty());
        assert_eq!(p.key_failed("A"), RETRY_FIRST);
        assert_eq!(p.key_failed("A"), RETRY_FIRST * 2);
        assert_eq!(p.key_failed("B"), RETRY_FIRST, "each key has its own backoff");
        let waiting = p.waiting_keys();
        assert!(waiting["A"] <= RETRY_FIRST * 2 && waiting["A"] > RETRY_FIRST, "{waiting:?}");
        p.keys_delivered(["A"].into_iter());
        assert_eq!(p.waiting_keys().keys().collect::<Vec<_>>(), vec!["B"]);
    }
}
