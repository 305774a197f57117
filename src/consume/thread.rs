//! The consumer thread: one std thread that runs the [`Pipeline`] against
//! Kafka through [`KafkaBroker`] until it is asked to stop, then finishes and
//! commits what is in memory and leaves the group. A handler panic ends the
//! thread without committing past the last handled batch; the supervisor
//! restarts it.

use std::sync::Arc;

use super::db_sink::DbSink;
use super::handler::Handler;
use super::heartbeat::Heartbeat;
use super::kafka_broker::{ClientError, KafkaBroker};
use super::pipeline::Pipeline;
use super::poison::PoisonLedger;
use super::router::Router;
use super::sink::Panicked;
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
}

/// Runs the pipeline until `stop`, then finishes and commits what is in
/// memory and leaves the group, by the stop's deadline.
fn run(setup: &ConsumerSetup, heartbeat: Arc<Heartbeat>, stop: &Arc<StopRequest>) -> Result<(), ConsumerError> {
    let s = &setup.settings;
    let router = Router::new((setup.modules)(), |t| s.topic(t));
    let mut topics = router.topics();
    topics.extend(setup.extra_topics.iter().cloned());
    let mut sink = DbSink::new(router, setup.pool.clone(), s.clone(), setup.wakers.clone(), stop.clone());
    let mut broker = KafkaBroker::subscribe(s, &topics, stop.clone())?;
    let mut pipeline =
        Pipeline::new(s.consumer_batch_size, s.consumer_batch_timeout, SystemClock, setup.poison.clone(), heartbeat)
            .with_stop(stop.clone());
    let result = loop {
        if let Some(drain_by) = stop.drain_by() {
            match pipeline.finish(&mut broker, &mut sink, drain_by) {
                Ok(true) => break Ok(()),
                Ok(false) => {
                    ConsumerEnded { error: None, unstored: true }.emit();
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
    if result.is_ok() {
        ConsumerEnded { error: None, unstored: false }.emit();
    }
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
            ConsumerEnded { error: Some(&e.to_string()), unstored: false }.emit();
        }
        result
    })
}
