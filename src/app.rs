//! `cronsumer run`: migrates the database, waits for the broker and checks
//! the topics, then runs the consumer thread (under its supervisor) until the
//! shutdown signal, and finally lets the batch in hand finish and commit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Settings;
use crate::consumer::ConsumerSetup;
use crate::handler::Wakers;
use crate::shutdown::Shutdown;
use crate::supervisor::Supervisor;
use crate::{consumers, db, kafka};

/// How often the consumer thread's health is checked.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// The topics the consumer registry needs, with `KAFKA_TOPIC_PREFIX`.
pub fn required_topics(settings: &Settings) -> Vec<String> {
    consumers::registry()
        .iter()
        .map(|m| settings.topic(m.topic()))
        .collect()
}

/// Waits for the broker, then checks (or creates) the required topics.
pub fn prepare_kafka(settings: &Settings, shutdown: &Shutdown) -> Result<(), kafka::SetupError> {
    let admin = kafka::admin_client(settings)?;
    let metadata = kafka::wait_for_broker(settings, &admin, &|| shutdown.is_triggered())?;
    let created = kafka::ensure_topics(
        settings,
        &admin,
        &metadata,
        &required_topics(settings),
        settings.kafka.auto_create_topics,
    )?;
    if !created.is_empty() {
        log::info!("created missing topics: {}", created.join(", "));
    }
    Ok(())
}

/// Runs the service until `shutdown` is triggered.
pub fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let (pool, applied) =
        db::connect_and_migrate(&settings.database_url, settings.database_pool_size)?;
    if !applied.is_empty() {
        log::info!("applied migrations: {}", applied.join(", "));
    }
    let mut supervisor = None;
    if settings.kafka.enabled {
        prepare_kafka(&settings, &shutdown)?;
        let setup = ConsumerSetup {
            settings: settings.clone(),
            pool: pool.clone(),
            modules: consumers::registry,
            extra_topics: Vec::new(),
            wakers: Wakers::default(),
        };
        let mut s = Supervisor::new(setup);
        s.start().context("cannot start the consumer thread")?;
        supervisor = Some(s);
    } else {
        log::info!("KAFKA_ENABLED=false: the consumer thread is not started");
    }
    log::info!("cronsumer running");
    while !shutdown.is_triggered() {
        std::thread::sleep(SUPERVISE_EVERY.min(Duration::from_millis(200)));
        if let Some(s) = supervisor.as_mut() {
            s.check();
        }
    }
    log::info!("shutting down");
    if let Some(mut s) = supervisor {
        s.stop();
    }
    log::info!("stopped");
    Ok(())
}

/// Triggers `shutdown` on SIGINT or SIGTERM (from a small thread of its own).
pub fn watch_signals(shutdown: Shutdown) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
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
