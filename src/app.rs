//! `cronsumer run`: migrates the database, waits for the broker and checks
//! the topics, then runs the consumer thread (under its supervisor), the
//! scheduler and the HTTP endpoint until the shutdown signal; then lets the
//! running jobs and the batch in hand finish (bounded by `SHUTDOWN_TIMEOUT_MS`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::Settings;
use crate::consumer::ConsumerSetup;
use crate::http::{self, Sources, Status};
use crate::panics::lock;
use crate::registry::Registry;
use crate::scheduler::{JobContext, Scheduler, Wakers};
use crate::shutdown::Shutdown;
use crate::supervisor::Supervisor;
use crate::{db, kafka};

/// Waits for the broker, then checks (or creates) `topics`.
pub fn prepare_kafka(settings: &Settings, topics: &[String], shutdown: &Shutdown) -> Result<(), kafka::SetupError> {
    let admin = kafka::admin_client(settings)?;
    let metadata = kafka::wait_for_broker(settings, &admin, &|| shutdown.is_triggered())?;
    let created = kafka::ensure_topics(&admin, &metadata, topics, settings.kafka_auto_create_topics)?;
    if !created.is_empty() {
        log::info!("created missing topics: {}", created.join(", "));
    }
    Ok(())
}

/// Runs the service, with the user's consumer modules and jobs, until
/// `shutdown` is triggered.
pub fn run(settings: Settings, shutdown: Shutdown, registry: Registry) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let (pool, applied) = db::connect_and_migrate(&settings.database_url, settings.database_pool_size)?;
    if !applied.is_empty() {
        log::info!("applied migrations: {}", applied.join(", "));
    }
    let jobs = (registry.jobs)();
    let wakers = Wakers::of(&jobs);
    let topics = registry.topics(&settings);
    let mut supervisor = None;
    if settings.kafka_enabled {
        prepare_kafka(&settings, &topics, &shutdown)?;
        let setup = ConsumerSetup {
            settings: settings.clone(),
            pool: pool.clone(),
            modules: registry.consumers,
            extra_topics: Vec::new(),
            wakers: wakers.clone(),
            panics: Default::default(),
        };
        let mut s = Supervisor::new(setup);
        s.start().context("cannot start the consumer thread")?;
        supervisor = Some(Arc::new(Mutex::new(s)));
    } else {
        log::info!("KAFKA_ENABLED=false: the consumer thread is not started");
    }
    let ctx = Arc::new(
        JobContext::new(settings.clone(), pool.clone(), supervisor.clone(), shutdown.clone())
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
        });
        status.start(&shutdown);
        http::serve(settings.http_addr, http::routes(status), shutdown.clone())
            .await
            .context("cannot start the HTTP endpoint (HTTP_ADDR)")?;
        log::info!("cronsumer running");
        shutdown.wait().await;
        let by = shutdown.deadline(settings.shutdown_timeout);
        log::info!("shutting down timeout_ms={}", settings.shutdown_timeout.as_millis());
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
    log::info!("stopped");
    result
}

/// Triggers `shutdown` on SIGINT or SIGTERM (from a small thread of its own).
pub fn watch_signals(shutdown: Shutdown) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                log::error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM received"),
                _ = int.recv() => log::info!("SIGINT received"),
            }
            shutdown.trigger();
        })
    })?;
    Ok(())
}
