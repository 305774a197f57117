//! [`KafkaBroker`]: the rdkafka side of the broker seam, a `BaseConsumer`
//! as the pipeline asks of Kafka.
//!
//! rdkafka delivers rebalances inside `poll`. The context only queues them
//! as events; the pipeline handles each one when `poll` returns it, in order
//! with the records, and then completes it (assign or unassign), so the
//! revoked partitions are still ours while their batch is finished and
//! committed. A handler panic ends the thread without committing past the
//! last handled batch; the supervisor restarts it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::common::locks::lock;
use crate::common::record::{Record, TopicPartition};
use crate::common::shutdown::StopRequest;
use crate::config::Settings;
use crate::consume::broker::{Broker, BrokerError, BrokerErrorKind, CommitMode, Polled, Start};
use crate::consume::kafka_error::{broker_error, call_failed};
use crate::consume::topic_ids::TopicIds;
use crate::events::{ClientCallFailed, Event as _, Subscribed};

/// The consumer's client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(KafkaError),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe { topics: Vec<String>, source: KafkaError },
}

/// Longest wait for the answer to a synchronous commit.
const SYNC_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Queues rebalances and commit answers for [`KafkaBroker::poll`].
pub struct Ctx {
    events: Mutex<VecDeque<Polled>>,
    /// Set while the client closes: rebalances are then completed at once.
    closing: AtomicBool,
}

impl Ctx {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Polled>> {
        // Each update is one push or pop: a poisoned lock holds consistent data.
        lock(&self.events)
    }
}

/// A polled message, owned and detached from the client.
fn record_of(m: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        timestamp: m.timestamp().to_millis(),
    }
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| TopicPartition::new(e.topic(), e.partition())).collect()
}

fn tpl_of(tps: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for tp in tps {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}

fn cooperative(consumer: &BaseConsumer<Ctx>) -> bool {
    matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative)
}

/// Completes a rebalance the way rdkafka's default handler does.
fn complete(consumer: &BaseConsumer<Ctx>, assign: bool, tpl: &TopicPartitionList) -> KafkaResult<()> {
    match (assign, cooperative(consumer)) {
        (true, true) => consumer.incremental_assign(tpl),
        (true, false) => consumer.assign(tpl),
        (false, true) => consumer.incremental_unassign(tpl),
        (false, false) => consumer.unassign(),
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if self.closing.load(Ordering::SeqCst) {
            if let Err(e) = complete(consumer, assign, tpl) {
                let call = "complete a rebalance while closing";
                call_failed(call, &tps_of(tpl), e, false);
            }
            return;
        }
        let tps = tps_of(tpl);
        let event = if assign {
            Polled::Assigned(tps)
        } else if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && !consumer.assignment_lost() {
            Polled::Revoked(tps)
        } else {
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                let error = rdkafka::error::RDKafkaErrorCode::from(err).to_string();
                let kind = BrokerErrorKind::Refused.as_str();
                ClientCallFailed { call: "rebalance", partitions: &tps, kind, error: &error, serious: true }.emit();
            }
            Polled::Lost(tps)
        };
        self.queue().push_back(event);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let offsets = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((TopicPartition::new(e.topic(), e.partition()), o)),
                _ => None,
            })
            .collect();
        self.queue().push_back(Polled::Committed { offsets, result: result.map_err(broker_error) });
    }
}

/// Sends an asynchronous commit whose answer comes back through the
/// consumer's queue, to [`Ctx::commit_callback`]. (rust-rdkafka's own
/// asynchronous commit asks for no answer, so none ever came:
/// fede1024/rust-rdkafka#856.)
fn commit_with_answer(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) -> Result<(), BrokerError> {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: the client and the list outlive the call; librdkafka keeps its
    // own reference to the queue for the answer, so ours is released at once.
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return Err(BrokerError::new(BrokerErrorKind::Client, "the consumer has no queue (not in a group)"));
        }
        let err = rd::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    match err {
        rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        e => Err(broker_error(KafkaError::ConsumerCommit(e.into()))),
    }
}

/// The broker seam over an rdkafka `BaseConsumer`.
pub struct KafkaBroker {
    consumer: BaseConsumer<Ctx>,
    /// A synchronous commit waits no later than a stop's deadline.
    stop: Arc<StopRequest>,
    /// Partitions the pipeline paused.
    paused: BTreeSet<TopicPartition>,
    /// Records polled while a synchronous commit is awaited, above which
    /// the rest of the assignment is paused until the answer (one batch:
    /// this keeps the pipeline's memory bound).
    wait_queue_cap: usize,
    topics: Vec<String>,
    ids: TopicIds,
}

impl KafkaBroker {
    /// Creates the client and subscribes to `topics`.
    pub fn subscribe(
        settings: &Settings,
        topics: &[String],
        stop: Arc<StopRequest>,
    ) -> Result<KafkaBroker, ClientError> {
        let ctx = Ctx { events: Mutex::new(VecDeque::new()), closing: AtomicBool::new(false) };
        let consumer: BaseConsumer<Ctx> = crate::kafka::create(settings, &crate::kafka::consumer_config(settings), ctx)
            .map_err(ClientError::Create)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|source| ClientError::Subscribe { topics: topics.to_vec(), source })?;
        Subscribed { group: &settings.kafka_group_id, topics }.emit();
        Ok(KafkaBroker {
            consumer,
            stop,
            paused: BTreeSet::new(),
            wait_queue_cap: settings.consumer_batch_size.max(1),
            topics: topics.to_vec(),
            ids: TopicIds::default(),
        })
    }

    /// The assigned partitions of topics recreated since the last check,
    /// already set to read from their new beginning.
    fn recreated(&mut self) -> Option<Polled> {
        let changed = self.ids.changed(self.consumer.client().native_ptr(), &self.topics);
        if changed.is_empty() {
            return None;
        }
        let assigned = self.consumer.assignment().map(|a| tps_of(&a)).unwrap_or_default();
        let tps: Vec<TopicPartition> = assigned.into_iter().filter(|tp| changed.contains(&tp.topic)).collect();
        for TopicPartition { topic: t, partition: p } in &tps {
            if let Err(e) = self.consumer.seek(t, *p, Offset::Beginning, Duration::from_secs(1)) {
                let (call, partitions) = ("seek to a recreated log's beginning", &[TopicPartition::new(t, *p)]);
                call_failed(call, partitions, e, true);
            }
        }
        (!tps.is_empty()).then_some(Polled::Reset(tps))
    }

    fn poll_client(&self, timeout: Duration) -> Option<Polled> {
        self.consumer.poll(timeout).map(|m| match m {
            Ok(m) => Polled::Record(record_of(&m)),
            Err(e) => Polled::Error(broker_error(e)),
        })
    }

    /// Leaves the group: rebalances still queued, and those closing brings,
    /// are completed without the pipeline (nothing more is committed).
    pub fn close(self) {
        let ctx = self.consumer.context();
        ctx.closing.store(true, Ordering::SeqCst);
        let pending: Vec<Polled> = ctx.queue().drain(..).collect();
        for event in pending {
            let done = match event {
                Polled::Assigned(tps) => complete(&self.consumer, true, &tpl_of(&tps)),
                Polled::Revoked(tps) | Polled::Lost(tps) => complete(&self.consumer, false, &tpl_of(&tps)),
                _ => Ok(()),
            };
            if let Err(e) = done {
                let call = "complete a pending rebalance while closing";
                call_failed(call, &[], e, false);
            }
        }
        self.consumer.unsubscribe();
        // Dropping the client closes it (leaves the group, waits for the revoke).
    }

    /// Polls until the answer to the commit of `offsets`; pauses the
    /// partitions not paused yet (into `held`) once a batch of records waits.
    fn await_commit(
        &mut self,
        offsets: &[(TopicPartition, i64)],
        held: &mut Vec<TopicPartition>,
    ) -> Result<(), BrokerError> {
        let mut want = offsets.to_vec();
        want.sort();
        let deadline = self.stop.by().map_or(Instant::now() + SYNC_COMMIT_TIMEOUT, |by| {
            by.clamp(Instant::now(), Instant::now() + SYNC_COMMIT_TIMEOUT)
        });
        loop {
            let mut queue = self.consumer.context().queue();
            let answer = queue.iter().position(|e| match e {
                Polled::Committed { offsets, .. } => {
                    let mut got = offsets.clone();
                    got.sort();
                    got == want
                }
                _ => false,
            });
            if let Some(Polled::Committed { result, .. }) = answer.and_then(|i| queue.remove(i)) {
                return result;
            }
            let waiting = queue.iter().filter(|e| matches!(e, Polled::Record(_))).count();
            drop(queue);
            if held.is_empty() && waiting >= self.wait_queue_cap {
                let assigned = self.consumer.assignment().map(|a| tps_of(&a)).unwrap_or_default();
                *held = assigned.into_iter().filter(|tp| !self.paused.contains(tp)).collect();
                if let Err(e) = self.consumer.pause(&tpl_of(held)) {
                    let call = "pause during a commit wait";
                    call_failed(call, held, e, false);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BrokerError::new(BrokerErrorKind::Timeout, "commit not confirmed in time"));
            }
            let polled = self.poll_client(left.min(Duration::from_millis(100)));
            self.consumer.context().queue().extend(polled);
        }
    }
}

impl Broker for KafkaBroker {
    fn poll(&mut self, timeout: Duration) -> Option<Polled> {
        if let Some(e) = self.recreated() {
            return Some(e);
        }
        if let Some(e) = self.consumer.context().queue().pop_front() {
            return Some(e);
        }
        let polled = self.poll_client(timeout);
        // A rebalance served inside this poll comes before what the poll returned.
        let mut queue = self.consumer.context().queue();
        if queue.is_empty() {
            return polled;
        }
        queue.extend(polled);
        queue.pop_front()
    }

    /// A synchronous commit is an asynchronous one whose answer is awaited
    /// for at most [`SYNC_COMMIT_TIMEOUT`] (librdkafka's own waits as long as
    /// the coordinator is away), and not past a stop's deadline; what
    /// polling brings meanwhile stays queued, one batch at most.
    fn commit(&mut self, offsets: &[(TopicPartition, i64)], mode: CommitMode) -> Result<(), BrokerError> {
        let mut tpl = TopicPartitionList::new();
        for (TopicPartition { topic: t, partition: p }, o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o)).map_err(broker_error)?;
        }
        commit_with_answer(&self.consumer, &tpl)?;
        if mode == CommitMode::Async {
            return Ok(());
        }
        let mut held = Vec::new();
        let answer = self.await_commit(offsets, &mut held);
        if !held.is_empty() {
            // librdkafka fetches a resumed partition again from the last record it returned.
            if let Err(e) = self.consumer.resume(&tpl_of(&held)) {
                let call = "resume after a commit wait";
                call_failed(call, &held, e, false);
            }
        }
        answer
    }

    fn pause(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError> {
        self.consumer.pause(&tpl_of(tps)).map_err(broker_error)?;
        self.paused.extend(tps.iter().cloned());
        Ok(())
    }

    fn resume(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError> {
        self.consumer.resume(&tpl_of(tps)).map_err(broker_error)?;
        for tp in tps {
            self.paused.remove(tp);
        }
        Ok(())
    }

    fn assign(&mut self, tps: &[(TopicPartition, Start)]) -> Result<(), BrokerError> {
        let mut tpl = TopicPartitionList::new();
        for (TopicPartition { topic: t, partition: p }, start) in tps {
            let offset = match start {
                Start::At(o) => Offset::Offset(*o),
                // Invalid: the committed offset, else the reset policy.
                Start::Committed => Offset::Invalid,
                Start::Beginning => Offset::Beginning,
            };
            tpl.add_partition_offset(t, *p, offset).map_err(broker_error)?;
        }
        complete(&self.consumer, true, &tpl).map_err(broker_error)
    }

    fn topic_ids(&mut self, topics: &[String]) -> Result<BTreeMap<String, String>, BrokerError> {
        self.ids
            .look(self.consumer.client().native_ptr(), topics)
            .map_err(|e| BrokerError::new(BrokerErrorKind::Unreachable, e))
    }

    fn seek(&mut self, TopicPartition { topic, partition }: &TopicPartition, offset: i64) -> Result<(), BrokerError> {
        let seek = self.consumer.seek(topic, *partition, Offset::Offset(offset), Duration::from_secs(1));
        seek.map_err(broker_error)
    }

    fn unassign(&mut self, tps: &[TopicPartition]) -> Result<(), BrokerError> {
        complete(&self.consumer, false, &tpl_of(tps)).map_err(broker_error)
    }
}
