//! `cronsumer run`: migrates the database, waits for the broker and checks
//! the topics, then runs the consumer thread (under its supervisor), the
//! scheduler and the HTTP endpoint until the shutdown signal; then lets the
//! running jobs and the batch in hand finish (bounded by `SHUTDOWN_TIMEOUT_MS`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::common::locks::lock;
use crate::common::shutdown::Shutdown;
use crate::config::Settings;
use crate::consume::operator_pauses::OperatorPauses;
use crate::consume::supervise::SuperviseConsumer;
use crate::consume::supervisor::Supervisor;
use crate::consume::thread::ConsumerSetup;
use crate::deliver::sender::SendNotifications;
use crate::events::{Event as _, Lifecycle};
use crate::http::{self, Sources, Status};
use crate::market::fetch_prices::FetchPrices;
use crate::market::publish_outbox::PublishOutbox;
use crate::registry::Registry;
use crate::schedule::maintenance::{Maintenance15m, Maintenance5m};
use crate::schedule::{Job, JobContext, Scheduler, Wakers};
use crate::{db, kafka};

/// Waits for the broker, then checks (or creates) `topics`.
pub fn prepare_kafka(settings: &Settings, topics: &[String], shutdown: &Shutdown) -> Result<(), kafka::SetupError> {
    let admin = kafka::admin_client(settings)?;
    let metadata = kafka::wait_for_broker(settings, &admin, &|| shutdown.is_triggered())?;
    // Each topic created is told as it is.
    kafka::ensure_topics(&admin, &metadata, topics, settings.kafka_auto_create_topics)?;
    Ok(())
}

/// Runs the service, with the user's consumer modules and jobs, until
/// `shutdown` is triggered.
pub fn run(settings: Settings, shutdown: Shutdown, registry: Registry) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let (pool, applied) = db::connect_and_migrate(&settings.database_url, settings.database_pool_size)?;
    if !applied.is_empty() {
        Lifecycle::MigrationsApplied(&applied).emit();
    }
    let topics = registry.topics(&settings);
    // The consumer wakes jobs (new notifications: send them), and supervision is a job.
    let wakers = Wakers::of(&jobs(&settings, &registry, None));
    let mut supervisor = None;
    // Paused before the first assignment: a paused partition handles nothing after a restart.
    let operator_pauses = Arc::new(OperatorPauses::default());
    operator_pauses.load(&mut *db::checkout(&pool, None)?)?;
    if settings.kafka_enabled {
        prepare_kafka(&settings, &topics, &shutdown)?;
        let setup = ConsumerSetup {
            settings: settings.clone(),
            pool: pool.clone(),
            modules: registry.consumers,
            extra_topics: Vec::new(),
            wakers: wakers.clone(),
            poison: Default::default(),
            operator_pauses: operator_pauses.clone(),
        };
        let mut s = Supervisor::new(setup);
        s.start().context("cannot start the consumer thread")?;
        supervisor = Some(Arc::new(Mutex::new(s)));
    } else {
        Lifecycle::ConsumerOff.emit();
    }
    let jobs = jobs(&settings, &registry, supervisor.clone());
    let ctx = Arc::new(
        JobContext::new(settings.clone(), pool.clone(), shutdown.clone())
            .with_topics(topics)
            .with_wakers(wakers.clone()),
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(async {
        let scheduler = Scheduler::start(jobs, ctx.clone(), &wakers).await?;
        let status = Status::new(Sources {
            settings: settings.clone(),
            http_pool: db::connect(&settings.database_url, http::HTTP_POOL_SIZE)?,
            pool,
            supervisor: supervisor.clone(),
            jobs: ctx,
            runners: scheduler.runners().to_vec(),
            jobs_off: scheduler.off().to_vec(),
            operator_pauses,
        });
        status.start(&shutdown);
        http::serve(settings.http_addr, http::routes(status), shutdown.clone())
            .await
            .context("cannot start the HTTP endpoint (HTTP_ADDR)")?;
        Lifecycle::Running.emit();
        shutdown.wait().await;
        let by = shutdown.deadline(settings.shutdown_timeout);
        Lifecycle::ShuttingDown { timeout_ms: settings.shutdown_timeout.as_millis() }.emit();
        // The consumer finishes its batch while running jobs finish theirs, all by one deadline.
        if let Some(s) = &supervisor {
            lock(s).request_stop(by);
        }
        scheduler.stop(by).await;
        Ok::<_, anyhow::Error>(())
    });
    let by = shutdown.deadline(settings.shutdown_timeout);
    if let Some(s) = &supervisor {
        lock(s).stop(by);
    }
    // Blocking job runs still going are abandoned (their claims expire).
    rt.shutdown_timeout(by.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)));
    Lifecycle::Stopped.emit();
    result
}

/// Every job this process runs: the service's own, registered by their
/// parts (the sender, maintenance, supervision of the consumer thread when
/// there is one, the market-data producer), then the user's from `jobs/`.
pub fn jobs(settings: &Settings, registry: &Registry, supervisor: Option<Arc<Mutex<Supervisor>>>) -> Vec<Arc<dyn Job>> {
    let mut jobs: Vec<Arc<dyn Job>> = vec![
        Arc::new(SendNotifications::new(settings)),
        Arc::new(Maintenance5m),
        Arc::new(Maintenance15m),
        Arc::new(SuperviseConsumer::new(supervisor)),
        Arc::new(FetchPrices),
        Arc::new(PublishOutbox::default()),
    ];
    jobs.extend((registry.jobs)());
    jobs
}

/// Triggers `shutdown` on SIGINT or SIGTERM (from a small thread of its own).
pub fn watch_signals(shutdown: Shutdown) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                Lifecycle::SignalsNotWatched.emit();
                return;
            };
            tokio::select! {
                _ = term.recv() => Lifecycle::Signal("SIGTERM").emit(),
                _ = int.recv() => Lifecycle::Signal("SIGINT").emit(),
            }
            shutdown.trigger();
        })
    })?;
    Ok(())
}
