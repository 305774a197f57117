//! The producer behind `cronsumer produce` and dead-letter replay: acks=all,
//! idempotence, lz4 compression, and every delivery report checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;

use crate::config::Settings;
use crate::panics::lock;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
    #[error("{failed} of {sent} record(s) not delivered to {topic}; first error: {first}")]
    NotDelivered { topic: String, sent: u64, failed: u64, first: String },
    #[error("cannot queue a record for {topic}: {source}")]
    Enqueue { topic: String, source: KafkaError },
    #[error("records to {topic} still undelivered after {secs} s (is the broker up?)")]
    FlushTimeout { topic: String, secs: u64 },
}

/// Counts delivery reports.
#[derive(Default)]
pub struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                lock(&self.first_error).get_or_insert_with(|| e.to_string());
            }
        }
    }
}

pub struct RecordProducer {
    producer: BaseProducer<Deliveries>,
    sent: u64,
}

/// How long `finish` waits for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

impl RecordProducer {
    pub fn new(settings: &Settings) -> Result<Self, ProduceError> {
        let producer = crate::kafka::create(settings, &crate::kafka::producer_config(settings), Deliveries::default())
            .map_err(ProduceError::Create)?;
        Ok(RecordProducer { producer, sent: 0 })
    }

    /// Queues one record, waiting while the local queue is full.
    pub fn send(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<(), ProduceError> {
        loop {
            let mut record = BaseRecord::to(topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((source, _)) => return Err(ProduceError::Enqueue { topic: topic.into(), source }),
            }
        }
    }

    /// Records delivered so far.
    pub fn delivered(&self) -> u64 {
        self.producer.poll(Duration::ZERO);
        self.producer.context().delivered.load(Ordering::Relaxed)
    }

    /// Waits for every delivery report; fails if any record was not delivered.
    pub fn finish(self, topic: &str) -> Result<u64, ProduceError> {
        if self.producer.flush(FLUSH_TIMEOUT).is_err() {
            return Err(ProduceError::FlushTimeout { topic: topic.into(), secs: FLUSH_TIMEOUT.as_secs() });
        }
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = lock(&ctx.first_error).clone().unwrap_or_default();
            return Err(ProduceError::NotDelivered { topic: topic.into(), sent: self.sent, failed, first });
        }
        Ok(ctx.delivered.load(Ordering::Relaxed))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("being replayed now, or replayed already")]
    Taken,
}

/// How long a replay holds its dead letters: past the producer's longest
/// flush, after which a replay that died frees them.
const REPLAY_HOLD: Duration = Duration::from_secs(120);

/// Produces dead letters back to their topics, and marks them replayed once
/// every one is confirmed delivered; returns how many were. Each is claimed
/// first, so that two replays at once produce it once (those another replay
/// holds, or replayed already, are left out: [`ReplayError::Taken`] when
/// none is left). No database connection is held while producing.
pub fn replay(
    settings: &Settings,
    pool: &crate::db::Pool,
    targets: &[crate::db::dead_letters::DeadLetter],
) -> Result<u64, ReplayError> {
    use crate::db::{checkout, dead_letters};
    let ids: Vec<i64> = targets.iter().map(|d| d.id).collect();
    let claimed = dead_letters::claim_replay(&mut *checkout(pool, None)?, &ids, REPLAY_HOLD)?;
    if claimed.is_empty() {
        return Err(ReplayError::Taken);
    }
    let produced = (|| {
        let mut producer = RecordProducer::new(settings)?;
        for d in targets.iter().filter(|d| claimed.binary_search(&d.id).is_ok()) {
            producer.send(&d.topic, d.key.as_deref(), d.payload.as_deref().unwrap_or_default())?;
        }
        producer.finish("the dead letters' topics")
    })();
    dead_letters::replay_done(&mut *checkout(pool, None)?, &claimed, produced.is_ok())?;
    Ok(produced?)
}
