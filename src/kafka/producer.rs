//! The producer behind `cronsumer produce` and dead-letter replay: acks=all,
//! idempotence, lz4 compression, and every delivery report checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;

use crate::common::locks::lock;
use crate::config::Settings;

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
