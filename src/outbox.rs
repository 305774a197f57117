//! The outbox publisher: takes unpublished `outbox` rows to Kafka with the
//! idempotent producer (`acks=all`, `KAFKA_PRODUCER_COMPRESSION`, each row's
//! key) and marks each published from its delivery report.
//!
//! It sends in waves of at most one row per key, each wave waiting for its
//! reports, so a key's rows reach the topic in the order they were written:
//! none can overtake one that failed, whatever the broker does. A failure
//! ends the run and the next attempt waits (1 s doubling to a minute); rows
//! stay until delivered. A crash after delivery and before marking sends
//! those rows again: consumers tell them by the event's identity.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig};
use rdkafka::ClientContext;

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::db::outbox::{self, OutboxRow};
use crate::db::{DbConnection, DbError};
use crate::events::{Event as _, OutboxFailed, OutboxPublished};
use crate::panics::lock;

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
    #[error("{rows} outbox row(s) not delivered ({error}); next attempt in {} ms", retry_in.as_millis())]
    Undelivered { rows: usize, error: String, retry_in: Duration },
}

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub rows: usize,
    /// The run waited: the last attempt failed and its backoff has not passed.
    pub waiting: Option<Duration>,
}

/// One per process: its producer lives across runs (a connection kept), and
/// its backoff spaces attempts while the broker is away.
#[derive(Default)]
pub struct Publisher {
    producer: Mutex<Option<BaseProducer<Reports>>>,
    retry: Mutex<Option<(Backoff, Instant)>>,
}

impl Publisher {
    /// Publishes every unpublished row, wave by wave, until none is left,
    /// `stop` says so, or a row is not delivered.
    pub fn run(
        &self,
        settings: &Settings,
        conn: &mut DbConnection,
        stop: impl Fn() -> bool,
    ) -> Result<Published, PublishError> {
        if let Some(wait) = self.waiting() {
            return Ok(Published { rows: 0, waiting: Some(wait) });
        }
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
        let mut published = 0;
        while !stop() {
            let rows = outbox::unpublished(conn, SCAN)?;
            if rows.is_empty() {
                break;
            }
            let (delivered, failed) = send_wave(producer, &first_of_each_key(&rows));
            #[cfg(feature = "fault-injection")]
            crate::fault_injection::after_delivery(delivered.len());
            outbox::mark_published(conn, &delivered)?;
            published += delivered.len();
            OutboxPublished { rows: delivered.len() }.emit();
            if let Some((_, first_error)) = failed.first() {
                for (id, error) in &failed {
                    outbox::mark_failed(conn, *id, error)?;
                }
                let retry_in = self.failed();
                let error = first_error.clone();
                OutboxFailed { rows: failed.len(), retry_in, error: &error }.emit();
                return Err(PublishError::Undelivered { rows: failed.len(), error, retry_in });
            }
            *lock(&self.retry) = None;
        }
        Ok(Published { rows: published, waiting: None })
    }

    /// The time left before the next attempt after a failure.
    fn waiting(&self) -> Option<Duration> {
        let retry = lock(&self.retry);
        let (_, at) = retry.as_ref()?;
        at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Counts a failed attempt; returns the wait before the next.
    fn failed(&self) -> Duration {
        let mut retry = lock(&self.retry);
        let (backoff, at) = retry.get_or_insert_with(|| (Backoff::new(RETRY_FIRST, RETRY_MAX), Instant::now()));
        let wait = backoff.next_delay();
        *at = Instant::now() + wait;
        wait
    }
}

/// The oldest row of each key, oldest first.
fn first_of_each_key(rows: &[OutboxRow]) -> Vec<&OutboxRow> {
    let mut keys = HashSet::new();
    rows.iter().filter(|r| keys.insert(r.key.as_str())).collect()
}

/// Sends the rows and waits for their reports: (delivered ids, failed ids with why).
fn send_wave(producer: &BaseProducer<Reports>, wave: &[&OutboxRow]) -> (Vec<i64>, Vec<(i64, String)>) {
    let mut failed = Vec::new();
    let mut sent = 0;
    for r in wave {
        loop {
            let record = BaseRecord::with_opaque_to(&r.topic, Box::new(r.id)).key(&r.key).payload(&r.payload);
            match producer.send(record) {
                Ok(()) => sent += 1,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(50));
                    continue;
                }
                Err((e, _)) => failed.push((r.id, format!("cannot queue: {e}"))),
            }
            break;
        }
    }
    let deadline = Instant::now() + WAVE_TIMEOUT;
    while lock(&producer.context().0).len() < sent && Instant::now() < deadline {
        producer.poll(Duration::from_millis(50));
    }
    if lock(&producer.context().0).len() < sent {
        // Nothing may stay in flight past the run: a later run could overtake it.
        producer.purge(PurgeConfig::default().queue().inflight());
        producer.poll(Duration::from_millis(100));
    }
    let mut delivered = Vec::new();
    for (id, outcome) in lock(&producer.context().0).drain(..) {
        match outcome {
            Ok(()) => delivered.push(id),
            Err(e) => failed.push((id, e)),
        }
    }
    let reported: HashSet<i64> = delivered.iter().chain(failed.iter().map(|(id, _)| id)).copied().collect();
    for r in wave.iter().filter(|r| !reported.contains(&r.id)) {
        failed.push((r.id, format!("no delivery report within {} s", WAVE_TIMEOUT.as_secs())));
    }
    (delivered, failed)
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
    fn a_failure_makes_the_next_run_wait_longer_each_time() {
        let p = Publisher::default();
        assert_eq!(p.waiting(), None);
        assert_eq!(p.failed(), RETRY_FIRST);
        assert!(p.waiting().is_some_and(|w| w <= RETRY_FIRST));
        assert_eq!(p.failed(), RETRY_FIRST * 2);
    }
}
