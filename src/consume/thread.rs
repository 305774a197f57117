//! The consumer thread: one std thread that runs the [`Pipeline`] against
//! Kafka through [`KafkaBroker`] until it is asked to stop, then finishes and
//! commits what is in memory and leaves the group. A handler panic ends the
//! thread without committing past the last handled batch; the supervisor
//! restarts it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::db_sink::{DbOffsets, DbSink};
use super::handler::{topic_of, Handler};
use super::heartbeat::Heartbeat;
use super::kafka_broker::{ClientError, KafkaBroker};
use super::operator_pauses::OperatorPauses;
use super::pipeline::{Pipeline, Ticked};
use super::poison::PoisonLedger;
use super::router::Router;
use super::sink::Panicked;
use super::workers::{Inline, Lanes, Threads};
use crate::common::clock::SystemClock;
use crate::common::shutdown::StopRequest;
use crate::config::Settings;
use crate::db::Pool;
use crate::events::{ConsumerEnded, Event as _};
use crate::schedule::Wakers;

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start the lanes' threads: {0}")]
    Lanes(std::io::Error),
    #[error(transparent)]
    Panicked(Panicked),
}

/// Everything the consumer thread needs, cheap to clone for each restart.
#[derive(Clone)]
pub struct ConsumerSetup {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    /// The topics' handlers (`consumers/`); called once per (re)start for fresh instances.
    pub modules: fn() -> Vec<Box<dyn Handler>>,
    /// Topics subscribed beyond those of the modules (records are committed unhandled).
    pub extra_topics: Vec<String>,
    pub wakers: Wakers,
    /// Failure counts that outlive a thread (the poison rule).
    pub poison: PoisonLedger,
    /// The partitions an operator paused (they outlive a thread too).
    pub operator_pauses: Arc<OperatorPauses>,
}

/// Runs the pipeline until `stop`, then finishes and commits what is in
/// memory and leaves the group, by the stop's deadline. With one lane the
/// batches are handled on this thread; with more, on a worker thread each.
fn run(setup: &ConsumerSetup, heartbeat: Arc<Heartbeat>, stop: &Arc<StopRequest>) -> Result<(), ConsumerError> {
    let s = &setup.settings;
    let sink = || {
        let router = Router::new((setup.modules)(), |m| topic_of(m, s));
        DbSink::new(router, setup.pool.clone(), s.clone(), setup.wakers.clone(), stop.clone())
    };
    let mut topics = Router::new((setup.modules)(), |m| topic_of(m, s)).topics();
    topics.extend(setup.extra_topics.iter().cloned());
    let mut broker = KafkaBroker::subscribe(s, &topics, stop.clone())?;
    let mut offsets = DbOffsets::new(setup.pool.clone(), &s.kafka_group_id, stop.clone());
    let (size, timeout) = (s.consumer_batch_size, s.consumer_batch_timeout);
    let own = own_batches(setup);
    let pauses = &setup.operator_pauses;
    let result = match s.consumer_lanes() {
        1 => {
            let lanes = Inline::new(sink(), setup.poison.clone());
            let pipeline = Pipeline::new(size, timeout, SystemClock, heartbeat, lanes).with_batches(own);
            drive(pipeline.with_stop(stop.clone()).with_operator_pauses(pauses.clone()), &mut broker, &mut offsets)
        }
        n => {
            let lanes = Threads::start(n, &setup.poison, |_| Box::new(sink())).map_err(ConsumerError::Lanes)?;
            let pipeline = Pipeline::new(size, timeout, SystemClock, heartbeat, lanes).with_batches(own);
            drive(pipeline.with_stop(stop.clone()).with_operator_pauses(pauses.clone()), &mut broker, &mut offsets)
        }
    };
    broker.close();
    if result.is_ok() {
        ConsumerEnded { error: None, unstored: false }.emit();
    }
    result
}

/// The topics of the modules that are on and batch their own way, with
/// their size and timeout (`CONSUMER_BATCH_SIZE_<MODULE>`).
fn own_batches(setup: &ConsumerSetup) -> BTreeMap<String, (usize, Duration)> {
    let s = &setup.settings;
    let shared = (s.consumer_batch_size, s.consumer_batch_timeout);
    let own = |m: &dyn Handler| Some((topic_of(m, s)?, s.module_batch(m.name())));
    (setup.modules)().iter().filter_map(|m| own(m.as_ref())).filter(|(_, batch)| *batch != shared).collect()
}

/// Ticks the pipeline until it stopped or a handler panicked. After a panic
/// the records in memory go with the pipeline: the next thread reads them again.
fn drive<L: Lanes>(
    mut pipeline: Pipeline<SystemClock, L>,
    broker: &mut KafkaBroker,
    offsets: &mut DbOffsets,
) -> Result<(), ConsumerError> {
    loop {
        match pipeline.tick(broker, offsets) {
            Ok(Ticked::Running) => {}
            Ok(Ticked::Stopped { unstored }) => {
                if unstored {
                    ConsumerEnded { error: None, unstored: true }.emit();
                }
                return Ok(());
            }
            Err(p) => return Err(ConsumerError::Panicked(p)),
        }
    }
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
            ConsumerEnded { error: Some(&e.to_string()), unstored: false }.emit();
        }
        result
    })
}
