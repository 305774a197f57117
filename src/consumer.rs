//! The consumer thread: one std thread that runs the [`Pipeline`] against
//! Kafka through [`RdBroker`], the rdkafka side of the broker seam.
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
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::broker::{Broker, CommitMode, Event, Start, Tp};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::db::Pool;
use crate::handler::Consumer;
use crate::handlers::Handlers;
use crate::heartbeat::Heartbeat;
use crate::panics::lock;
use crate::pipeline::Pipeline;
use crate::poison::PoisonLedger;
use crate::record::Record;
use crate::router::Router;
use crate::scheduler::Wakers;
use crate::shutdown::StopRequest;
use crate::sink::Panicked;
use crate::topic_ids::TopicIds;

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(KafkaError),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe { topics: Vec<String>, source: KafkaError },
    #[error(transparent)]
    Panicked(Panicked),
}

/// Longest wait for the answer to a synchronous commit.
const SYNC_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Queues rebalances and commit answers for [`RdBroker::poll`].
pub struct Ctx {
    events: Mutex<VecDeque<Event>>,
    /// Set while the client closes: rebalances are then completed at once.
    closing: AtomicBool,
}

impl Ctx {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        // Each update is one push or pop: a poisoned lock holds consistent data.
        lock(&self.events)
    }
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

fn tpl_of(tps: &[Tp]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in tps {
        tpl.add_partition(t, *p);
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
                log::warn!("rebalance while closing failed: {e}");
            }
            return;
        }
        let tps = tps_of(tpl);
        let event = if assign {
            Event::Assigned(tps)
        } else if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && !consumer.assignment_lost() {
            Event::Revoked(tps)
        } else {
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                log::error!("rebalance error: {}", rdkafka::error::RDKafkaErrorCode::from(err));
            }
            Event::Lost(tps)
        };
        self.queue().push_back(event);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let offsets = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect();
        self.queue().push_back(Event::Committed { offsets, result: result.map_err(|e| e.to_string()) });
    }
}

/// Sends an asynchronous commit whose answer comes back through the
/// consumer's queue, to [`Ctx::commit_callback`]. (rust-rdkafka's own
/// asynchronous commit asks for no answer, so none ever came:
/// fede1024/rust-rdkafka#856.)
fn commit_with_answer(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) -> Result<(), String> {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: the client and the list outlive the call; librdkafka keeps its
    // own reference to the queue for the answer, so ours is released at once.
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return Err("the consumer has no queue (not in a group)".into());
        }
        let err = rd::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    match err {
        rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        e => Err(rdkafka::error::RDKafkaErrorCode::from(e).to_string()),
    }
}

/// The broker seam over an rdkafka `BaseConsumer`.
pub struct RdBroker {
    consumer: BaseConsumer<Ctx>,
    /// A synchronous commit waits no later than a stop's deadline.
    stop: Arc<StopRequest>,
    /// Partitions the pipeline paused.
    paused: BTreeSet<Tp>,
    /// Records polled while a synchronous commit is awaited, above which
    /// the rest of the assignment is paused until the answer (one batch:
    /// this keeps the pipeline's memory bound).
    wait_queue_cap: usize,
    topics: Vec<String>,
    ids: TopicIds,
}

impl RdBroker {
    /// Creates the client and subscribes to `topics`.
    pub fn subscribe(
        settings: &Settings,
        topics: &[String],
        stop: Arc<StopRequest>,
    ) -> Result<RdBroker, ConsumerError> {
        let ctx = Ctx { events: Mutex::new(VecDeque::new()), closing: AtomicBool::new(false) };
        let consumer: BaseConsumer<Ctx> = crate::kafka::create(settings, &crate::kafka::consumer_config(settings), ctx)
            .map_err(ConsumerError::Create)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|source| ConsumerError::Subscribe { topics: topics.to_vec(), source })?;
        log::info!("consumer subscribed group={} topics={}", settings.kafka_group_id, topics.join(","));
        Ok(RdBroker {
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
    fn recreated(&mut self) -> Option<Event> {
        let changed = self.ids.changed(self.consumer.client().native_ptr(), &self.topics);
        if changed.is_empty() {
            return None;
        }
        let assigned = self.consumer.assignment().map(|a| tps_of(&a)).unwrap_or_default();
        let tps: Vec<Tp> = assigned.into_iter().filter(|(t, _)| changed.contains(t)).collect();
        for (t, p) in &tps {
            if let Err(e) = self.consumer.seek(t, *p, Offset::Beginning, Duration::from_secs(1)) {
                log::error!("cannot read recreated topic={t} partition={p} from its beginning: {e}");
            }
        }
        (!tps.is_empty()).then_some(Event::Reset(tps))
    }

    fn poll_client(&self, timeout: Duration) -> Option<Event> {
        self.consumer.poll(timeout).map(|m| match m {
            Ok(m) => Event::Record(Record::from_message(&m)),
            Err(e) => Event::Error(e.to_string()),
        })
    }

    /// Leaves the group: rebalances still queued, and those closing brings,
    /// are completed without the pipeline (nothing more is committed).
    pub fn close(self) {
        let ctx = self.consumer.context();
        ctx.closing.store(true, Ordering::SeqCst);
        let pending: Vec<Event> = ctx.queue().drain(..).collect();
        for event in pending {
            let done = match event {
                Event::Assigned(tps) => complete(&self.consumer, true, &tpl_of(&tps)),
                Event::Revoked(tps) | Event::Lost(tps) => complete(&self.consumer, false, &tpl_of(&tps)),
                _ => Ok(()),
            };
            if let Err(e) = done {
                log::warn!("cannot complete a pending rebalance while closing: {e}");
            }
        }
        self.consumer.unsubscribe();
        // Dropping the client closes it (leaves the group, waits for the revoke).
    }

    /// Polls until the answer to the commit of `offsets`; pauses the
    /// partitions not paused yet (into `held`) once a batch of records waits.
    fn await_commit(&mut self, offsets: &[(Tp, i64)], held: &mut Vec<Tp>) -> Result<(), String> {
        let mut want = offsets.to_vec();
        want.sort();
        let deadline = self.stop.by().map_or(Instant::now() + SYNC_COMMIT_TIMEOUT, |by| {
            by.clamp(Instant::now(), Instant::now() + SYNC_COMMIT_TIMEOUT)
        });
        loop {
            let mut queue = self.consumer.context().queue();
            let answer = queue.iter().position(|e| match e {
                Event::Committed { offsets, .. } => {
                    let mut got = offsets.clone();
                    got.sort();
                    got == want
                }
                _ => false,
            });
            if let Some(Event::Committed { result, .. }) = answer.and_then(|i| queue.remove(i)) {
                return result;
            }
            let waiting = queue.iter().filter(|e| matches!(e, Event::Record(_))).count();
            drop(queue);
            if held.is_empty() && waiting >= self.wait_queue_cap {
                let assigned = self.consumer.assignment().map(|a| tps_of(&a)).unwrap_or_default();
                *held = assigned.into_iter().filter(|tp| !self.paused.contains(tp)).collect();
                if let Err(e) = self.consumer.pause(&tpl_of(held)) {
                    log::warn!("cannot pause partitions during a commit wait partitions={held:?} error={e}");
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("commit not confirmed in time".into());
            }
            let polled = self.poll_client(left.min(Duration::from_millis(100)));
            self.consumer.context().queue().extend(polled);
        }
    }
}

impl Broker for RdBroker {
    fn poll(&mut self, timeout: Duration) -> Option<Event> {
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
    fn commit(&mut self, offsets: &[(Tp, i64)], mode: CommitMode) -> Result<(), String> {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o)).map_err(|e| e.to_string())?;
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
                log::warn!("cannot resume partitions after a commit wait partitions={held:?} error={e}");
            }
        }
        answer
    }

    fn pause(&mut self, tps: &[Tp]) -> Result<(), String> {
        self.consumer.pause(&tpl_of(tps)).map_err(|e| e.to_string())?;
        self.paused.extend(tps.iter().cloned());
        Ok(())
    }

    fn resume(&mut self, tps: &[Tp]) -> Result<(), String> {
        self.consumer.resume(&tpl_of(tps)).map_err(|e| e.to_string())?;
        for tp in tps {
            self.paused.remove(tp);
        }
        Ok(())
    }

    fn assign(&mut self, tps: &[(Tp, Start)]) -> Result<(), String> {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), start) in tps {
            let offset = match start {
                Start::At(o) => Offset::Offset(*o),
                // Invalid: the committed offset, else the reset policy.
                Start::Committed => Offset::Invalid,
                Start::Beginning => Offset::Beginning,
            };
            tpl.add_partition_offset(t, *p, offset).map_err(|e| e.to_string())?;
        }
        complete(&self.consumer, true, &tpl).map_err(|e| e.to_string())
    }

    fn topic_ids(&mut self, topics: &[String]) -> Result<BTreeMap<String, String>, String> {
        self.ids.look(self.consumer.client().native_ptr(), topics)
    }

    fn seek(&mut self, (topic, partition): &Tp, offset: i64) -> Result<(), String> {
        let seek = self.consumer.seek(topic, *partition, Offset::Offset(offset), Duration::from_secs(1));
        seek.map_err(|e| e.to_string())
    }

    fn unassign(&mut self, tps: &[Tp]) -> Result<(), String> {
        complete(&self.consumer, false, &tpl_of(tps)).map_err(|e| e.to_string())
    }
}

/// Everything the consumer thread needs, cheap to clone for each restart.
#[derive(Clone)]
pub struct ConsumerSetup {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    /// Consumer modules; called once per (re)start for fresh instances.
    pub modules: fn() -> Vec<Box<dyn Consumer>>,
    /// Topics subscribed beyond those of the modules (records are committed unhandled).
    pub extra_topics: Vec<String>,
    pub wakers: Wakers,
    /// Failure counts that outlive a thread (the poison rule).
    pub panics: PoisonLedger,
}

/// Runs the pipeline until `stop`, then finishes and commits what is in
/// memory and leaves the group, by the stop's deadline.
fn run(setup: &ConsumerSetup, heartbeat: Arc<Heartbeat>, stop: &Arc<StopRequest>) -> Result<(), ConsumerError> {
    let s = &setup.settings;
    let router = Router::new((setup.modules)(), |t| s.topic(t));
    let mut topics = router.topics();
    topics.extend(setup.extra_topics.iter().cloned());
    let mut sink = Handlers::new(router, setup.pool.clone(), s.clone(), setup.wakers.clone(), stop.clone());
    let mut broker = RdBroker::subscribe(s, &topics, stop.clone())?;
    let mut pipeline =
        Pipeline::new(s.consumer_batch_size, s.consumer_batch_timeout, SystemClock, setup.panics.clone(), heartbeat)
            .with_stop(stop.clone());
    let result = loop {
        if let Some(drain_by) = stop.drain_by() {
            match pipeline.finish(&mut broker, &mut sink, drain_by) {
                Ok(true) => break Ok(()),
                Ok(false) => {
                    log::warn!("stop deadline reached with records not stored; they will be consumed again");
                    break Ok(());
                }
                Err(p) => break Err(ConsumerError::Panicked(p)),
            }
        }
        if let Err(p) = pipeline.run_once(&mut broker, &mut sink) {
            break Err(ConsumerError::Panicked(p));
        }
    };
    // After a panic the records in memory go with the pipeline: the next thread reads them again.
    drop(pipeline);
    broker.close();
    log::info!("consumer stopped");
    result
}

/// Starts the consumer thread.
pub fn spawn(
    setup: ConsumerSetup,
    heartbeat: Arc<Heartbeat>,
    stop: Arc<StopRequest>,
) -> std::io::Result<std::thread::JoinHandle<Result<(), ConsumerError>>> {
    std::thread::Builder::new().name("consumer".into()).spawn(move || {
        let result = run(&setup, heartbeat, &stop);
        if let Err(e) = &result {
            log::error!("consumer thread ended: {e}");
        }
        result
    })
}
