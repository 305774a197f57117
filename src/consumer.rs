//! The consumer thread: one std thread owning an rdkafka `BaseConsumer`. Each
//! step ([`BatchConsumer::run_once`]) polls, feeds the batcher, and when a
//! batch closes hands it to the router and commits its offsets, only after
//! every handler succeeded or dead-lettered its bad records.
//!
//! Commits go out asynchronously, at most every 200 ms while records stream
//! in and at once when the stream goes quiet, and synchronously before
//! partitions are revoked and at shutdown; they only ever cover handled records.
//!
//! A transient failure keeps the batch in hand and retries it with capped
//! backoff while the assigned partitions are paused and polling goes on, so
//! the group membership survives an outage of any length and nothing is
//! skipped. On revocation the batch in hand is finished and committed before
//! the partitions go. A handler panic ends the thread with an error and
//! commits nothing past the batch before it; the supervisor restarts it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::backoff::Backoff;
use crate::batcher::{Batcher, SystemClock};
use crate::config::Settings;
use crate::db::Pool;
use crate::handler::{Consumer, HandlerContext, Wakers};
use crate::heartbeat::Heartbeat;
use crate::metrics;
use crate::record::Record;
use crate::router::{DispatchError, Router};

/// Longest single poll: keeps the shutdown flag and the batch clock responsive.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// Retry delays for a batch that failed transiently.
const RETRY_INITIAL: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Longest time handled records wait for their commit while records stream in.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How long a revocation may spend finishing the batch in hand.
const REVOKE_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(KafkaError),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe { topics: Vec<String>, source: KafkaError },
    #[error(transparent)]
    Panicked(DispatchError),
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Polled, maybe handled a batch; call again.
    Continue,
    /// Shutdown was asked for and the batch in hand is finished.
    Stopped,
}

/// A batch that failed transiently, waiting for its next attempt.
struct InHand {
    records: Vec<Record>,
    backoff: Backoff,
    retry_at: Instant,
}

/// Everything between the poll and the commit, shared with the rebalance
/// callback (which runs on this same thread, inside `poll`).
struct Pipeline {
    batcher: Batcher<SystemClock>,
    in_hand: Option<InHand>,
    router: Router,
    pool: Pool,
    max_record_bytes: usize,
    heartbeat: Arc<Heartbeat>,
    wakers: Wakers,
    paused: bool,
    /// A handler panic seen inside a rebalance callback, reported by the next step.
    panicked: Option<DispatchError>,
    /// Next offsets of handled records, not committed yet.
    uncommitted: BTreeMap<(String, i32), i64>,
    last_commit: Instant,
}

/// When handled offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitWhen {
    /// Asynchronously, at most every [`COMMIT_EVERY`] while records stream in.
    Throttled,
    /// Asynchronously, now: the stream went quiet.
    Idle,
    /// Synchronously, now: partitions are leaving or the thread is ending.
    Sync,
}

/// The outcome of handling one batch.
enum Handled {
    Done,
    Retry(String),
}

impl Pipeline {
    /// Handles `batch`, stores its dead letters and marks its offsets for the
    /// next commit. A transient failure returns the reason (nothing marked);
    /// a panic is an error.
    fn handle(&mut self, consumer: &BaseConsumer<Ctx>, batch: &[Record]) -> Result<Handled, DispatchError> {
        let m = metrics::get();
        let mut ctx = HandlerContext::new(&self.pool, self.max_record_bytes);
        let dispatched = match self.router.dispatch(batch, &mut ctx) {
            Ok(d) => d,
            Err(DispatchError::Failed { topic, source }) => {
                m.handler_errors.with_label_values(&[&topic]).inc();
                return Ok(Handled::Retry(format!("topic={topic}: {source}")));
            }
            Err(e @ DispatchError::Panicked { .. }) => {
                if let DispatchError::Panicked { topic, .. } = &e {
                    m.handler_panics.with_label_values(&[topic]).inc();
                }
                // The thread ends here. Whatever else is in memory must not be
                // handled (and committed past this batch) by the revocation that
                // closing the client triggers: the next thread reads it again.
                self.batcher.discard(|_, _| true);
                self.in_hand = None;
                return Err(e);
            }
        };
        let (rejected, wake) = ctx.into_parts();
        if !rejected.is_empty() {
            let stored = self
                .pool
                .get()
                .map_err(crate::db::DbError::Pool)
                .and_then(|mut c| crate::db::dead_letters::insert_all(&mut c, &rejected));
            if let Err(e) = stored {
                return Ok(Handled::Retry(format!("storing dead letters: {e}")));
            }
            for d in &rejected {
                m.dead_letters.with_label_values(&[&d.topic]).inc();
            }
        }
        for r in batch {
            let next = self.uncommitted.entry((r.topic.clone(), r.partition)).or_insert(r.offset + 1);
            *next = (*next).max(r.offset + 1);
        }
        self.commit(consumer, CommitWhen::Throttled);
        for (topic, n) in &dispatched.handled {
            m.records_consumed.with_label_values(&[topic]).inc_by(*n as u64);
        }
        if dispatched.unrouted > 0 {
            for r in batch.iter().filter(|r| !dispatched.handled.contains_key(&r.topic)) {
                m.unrouted_records.with_label_values(&[&r.topic]).inc();
            }
        }
        m.batches.inc();
        m.batch_size.observe(batch.len() as f64);
        self.heartbeat.handled(batch.len());
        for job in wake {
            self.wakers.wake(job);
        }
        Ok(Handled::Done)
    }

    /// Retries the batch in hand if its time has come. Returns true when
    /// nothing is left in hand.
    fn retry_in_hand(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<bool, DispatchError> {
        let Some(mut held) = self.in_hand.take() else {
            return Ok(true);
        };
        if Instant::now() < held.retry_at {
            self.in_hand = Some(held);
            return Ok(false);
        }
        match self.handle(consumer, &held.records)? {
            Handled::Done => {
                log::info!("batch recovered after {} retries, records={}", held.backoff.attempts(), held.records.len());
                self.heartbeat.set_retrying(None);
                self.set_paused(consumer, false);
                Ok(true)
            }
            Handled::Retry(reason) => {
                let delay = held.backoff.next_delay();
                log::warn!(
                    "batch retry failed first={} records={} attempt={} retry_in_ms={} error={reason}",
                    held.records[0].position(),
                    held.records.len(),
                    held.backoff.attempts(),
                    delay.as_millis()
                );
                self.heartbeat.set_retrying(Some(reason));
                held.retry_at = Instant::now() + delay;
                self.in_hand = Some(held);
                Ok(false)
            }
        }
    }

    /// Handles the next batch from the batcher when it is ready (or, with
    /// `force`, whatever is waiting).
    fn handle_ready(&mut self, consumer: &BaseConsumer<Ctx>, force: bool) -> Result<(), DispatchError> {
        if self.in_hand.is_some() || self.batcher.is_empty() || !(force || self.batcher.is_ready()) {
            return Ok(());
        }
        let batch = self.batcher.take();
        if let Handled::Retry(reason) = self.handle(consumer, &batch)? {
            let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
            let delay = backoff.next_delay();
            log::warn!(
                "batch failed, keeping it uncommitted first={} records={} retry_in_ms={} error={reason}",
                batch[0].position(),
                batch.len(),
                delay.as_millis()
            );
            self.heartbeat.set_retrying(Some(reason));
            self.set_paused(consumer, true);
            self.in_hand = Some(InHand { records: batch, backoff, retry_at: Instant::now() + delay });
        }
        Ok(())
    }

    /// Pauses fetching while a batch is retried (polling goes on, so the
    /// group keeps us), and resumes once it is through.
    fn set_paused(&mut self, consumer: &BaseConsumer<Ctx>, paused: bool) {
        if self.paused == paused {
            return;
        }
        let result = consumer.assignment().and_then(|a| if paused { consumer.pause(&a) } else { consumer.resume(&a) });
        match result {
            Ok(()) => self.paused = paused,
            Err(e) => log::warn!("cannot {} partitions: {e}", if paused { "pause" } else { "resume" }),
        }
    }

    /// Commits the next offsets of every handled record (never more). A
    /// failed commit is logged, not fatal: the records come again and the
    /// handlers are idempotent.
    fn commit(&mut self, consumer: &BaseConsumer<Ctx>, when: CommitWhen) {
        if self.uncommitted.is_empty() || (when == CommitWhen::Throttled && self.last_commit.elapsed() < COMMIT_EVERY) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.uncommitted {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                log::error!("cannot build commit for topic={topic} partition={partition}: {e}");
                return;
            }
        }
        let mode = if when == CommitWhen::Sync { CommitMode::Sync } else { CommitMode::Async };
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                metrics::get().commits.inc();
                for ((topic, partition), offset) in &self.uncommitted {
                    log::debug!("commit topic={topic} partition={partition} offset={offset} mode={mode:?}");
                }
                self.uncommitted.clear();
                self.last_commit = Instant::now();
                self.heartbeat.committed();
            }
            Err(e) => {
                metrics::get().commit_errors.inc();
                log::warn!("commit failed (records will be redelivered, handlers are idempotent): {e}");
            }
        }
    }

    /// Finishes everything in memory (in hand and waiting) until `deadline`,
    /// retrying transient failures. Returns false if something is left.
    fn drain(&mut self, consumer: &BaseConsumer<Ctx>, deadline: Instant) -> Result<bool, DispatchError> {
        loop {
            if let Some(held) = &mut self.in_hand {
                held.retry_at = held.retry_at.min(deadline);
                let wait = held.retry_at.saturating_duration_since(Instant::now());
                std::thread::sleep(wait);
                self.retry_in_hand(consumer)?;
            } else if !self.batcher.is_empty() {
                self.handle_ready(consumer, true)?;
            } else {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(self.in_hand.is_none() && self.batcher.is_empty());
            }
        }
    }
}

/// The rdkafka context: owns the pipeline so the rebalance callback can
/// finish and commit the batch in hand before partitions are revoked.
pub struct Ctx {
    pipeline: Mutex<Pipeline>,
}

impl Ctx {
    fn pipeline(&self) -> MutexGuard<'_, Pipeline> {
        // A poisoned lock only means a panic was caught mid-step; the data is still consistent.
        self.pipeline.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        // A later commit covers the same records; until then they would only be read again.
        if let Err(e) = result {
            metrics::get().commit_errors.inc();
            log::warn!("commit failed: {e}");
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: Vec<(String, i32)> =
                tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
            log::info!("partitions revoked: {}", describe(&revoked));
            let mut p = self.pipeline();
            let deadline = Instant::now() + REVOKE_BUDGET;
            let drained = p.drain(consumer, deadline);
            p.commit(consumer, CommitWhen::Sync);
            match drained {
                Ok(true) => {}
                Ok(false) => {
                    // Still failing: the new owner reads these again from the committed offset.
                    let is_revoked = |t: &str, part: i32| revoked.iter().any(|(rt, rp)| rt == t && *rp == part);
                    let dropped = p.batcher.discard(is_revoked);
                    if let Some(held) = &mut p.in_hand {
                        held.records.retain(|r| !is_revoked(&r.topic, r.partition));
                        if held.records.is_empty() {
                            p.in_hand = None;
                        }
                    }
                    log::warn!("revocation left {dropped}+ uncommitted records to the partitions' next owner");
                }
                Err(e) => p.panicked = Some(e),
            }
            p.paused = false;
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned: Vec<(String, i32)> =
                tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
            log::info!("partitions assigned: {}", describe(&assigned));
            let p = self.pipeline();
            let n = consumer.assignment().map(|a| a.count() as i64).unwrap_or(assigned.len() as i64);
            p.heartbeat.set_assigned(n);
            metrics::get().assigned_partitions.set(n);
        }
    }
}

fn describe(parts: &[(String, i32)]) -> String {
    if parts.is_empty() {
        return "none".into();
    }
    parts.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>().join(",")
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
    /// Panic counts that outlive a thread (the poison rule, see `router`).
    pub panics: crate::router::SharedPanicLedger,
}

pub struct BatchConsumer {
    consumer: BaseConsumer<Ctx>,
    stop: Arc<AtomicBool>,
    shutdown_timeout: Duration,
    batch_size: usize,
    heartbeat: Arc<Heartbeat>,
}

impl BatchConsumer {
    /// Creates the client and subscribes to every routed topic.
    pub fn new(setup: &ConsumerSetup, heartbeat: Arc<Heartbeat>, stop: Arc<AtomicBool>) -> Result<Self, ConsumerError> {
        let s = &setup.settings;
        let router = Router::new((setup.modules)(), &s.kafka.topic_prefix, setup.panics.clone());
        let mut topics = router.topics();
        topics.extend(setup.extra_topics.iter().cloned());
        let pipeline = Pipeline {
            batcher: Batcher::new(s.consumer.batch_size, s.consumer.batch_timeout, SystemClock),
            in_hand: None,
            router,
            pool: setup.pool.clone(),
            max_record_bytes: s.consumer.max_record_bytes,
            heartbeat: heartbeat.clone(),
            wakers: setup.wakers.clone(),
            paused: false,
            panicked: None,
            uncommitted: BTreeMap::new(),
            last_commit: Instant::now(),
        };
        let consumer: BaseConsumer<Ctx> = crate::kafka::consumer_config(s)
            .create_with_context(Ctx { pipeline: Mutex::new(pipeline) })
            .map_err(ConsumerError::Create)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|source| ConsumerError::Subscribe { topics: topics.clone(), source })?;
        log::info!("consumer subscribed group={} topics={}", s.kafka.group_id, topics.join(","));
        Ok(BatchConsumer {
            consumer,
            stop,
            shutdown_timeout: s.shutdown_timeout,
            batch_size: s.consumer.batch_size,
            heartbeat,
        })
    }

    /// One step: poll (at most ~100 ms), then handle a batch if one closed or
    /// retry the batch in hand if its time came.
    pub fn run_once(&mut self) -> Result<Step, ConsumerError> {
        if self.stop.load(Ordering::SeqCst) {
            self.finish()?;
            return Ok(Step::Stopped);
        }
        let wait = {
            let p = self.consumer.context().pipeline();
            match &p.in_hand {
                Some(held) => held.retry_at.saturating_duration_since(Instant::now()),
                None => p.batcher.time_left().unwrap_or(MAX_POLL_WAIT),
            }
            .min(MAX_POLL_WAIT)
        };
        let mut received = Vec::new();
        let mut next = self.consumer.poll(wait);
        while let Some(result) = next {
            match result {
                Ok(m) => received.push(Record::from_message(&m)),
                Err(e) => {
                    log::warn!("kafka poll error: {e}");
                    break;
                }
            }
            // Drain what is already fetched, up to a batch, without waiting.
            if received.len() >= self.batch_size {
                break;
            }
            next = self.consumer.poll(Duration::ZERO);
        }
        self.heartbeat.polled();
        let idle = received.is_empty();
        let mut p = self.consumer.context().pipeline();
        if let Some(e) = p.panicked.take() {
            p.commit(&self.consumer, CommitWhen::Sync);
            return Err(ConsumerError::Panicked(e));
        }
        for r in received {
            p.batcher.push(r);
        }
        let result = match p.retry_in_hand(&self.consumer) {
            Ok(true) => p.handle_ready(&self.consumer, false),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        // What was handled before a panic is still committed.
        let when = if result.is_err() {
            CommitWhen::Sync
        } else if idle {
            CommitWhen::Idle
        } else {
            CommitWhen::Throttled
        };
        p.commit(&self.consumer, when);
        result.map_err(ConsumerError::Panicked)?;
        Ok(Step::Continue)
    }

    /// Loops [`run_once`](Self::run_once) until shutdown.
    pub fn run(mut self) -> Result<(), ConsumerError> {
        while self.run_once()? == Step::Continue {}
        Ok(())
    }

    /// Stops polling, finishes and commits what is in memory (bounded by
    /// `SHUTDOWN_TIMEOUT_MS`), then leaves the group.
    fn finish(&mut self) -> Result<(), ConsumerError> {
        let deadline = Instant::now() + self.shutdown_timeout;
        let mut p = self.consumer.context().pipeline();
        let drained = p.drain(&self.consumer, deadline);
        p.commit(&self.consumer, CommitWhen::Sync);
        let done = drained.map_err(ConsumerError::Panicked)?;
        if !done {
            log::warn!("shutdown timeout reached with uncommitted records; they will be consumed again on restart");
        }
        drop(p);
        self.consumer.unsubscribe();
        log::info!("consumer stopped");
        Ok(())
    }
}

/// Starts the consumer thread.
pub fn spawn(
    setup: ConsumerSetup,
    heartbeat: Arc<Heartbeat>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<Result<(), ConsumerError>>> {
    std::thread::Builder::new().name("consumer".into()).spawn(move || {
        let result = BatchConsumer::new(&setup, heartbeat, stop).and_then(BatchConsumer::run);
        if let Err(e) = &result {
            log::error!("consumer thread ended: {e}");
        }
        result
    })
}
