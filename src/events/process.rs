//! The service's start and stop, as the process lives them.

use super::Event;

/// A step of the process's life: migrations applied, topics created, the
/// broker awaited, running, a signal, shutting down, stopped.
pub enum Lifecycle<'a> {
    MigrationsApplied(&'a [String]),
    TopicsCreated { names: &'a [String], partitions: i32 },
    TopicExists(&'a str),
    BrokerUnreachable { servers: &'a str, attempt: u32, retry_in_ms: u128, error: &'a str },
    BrokerNamedNone { attempt: u32 },
    ConsumerOff,
    Running,
    Signal(&'static str),
    SignalsNotWatched,
    ShuttingDown { timeout_ms: u128 },
    StoppedDuringStart(&'a str),
    Stopped,
}

impl Event for Lifecycle<'_> {
    fn emit(self) {
        match self {
            Lifecycle::MigrationsApplied(names) => log::info!("event=migrations_applied names={}", names.join(",")),
            Lifecycle::TopicsCreated { names, partitions } => {
                log::info!("event=topics_created names={} partitions={partitions}", names.join(","))
            }
            Lifecycle::TopicExists(name) => log::info!("event=topic_exists name={name}"),
            Lifecycle::BrokerUnreachable { servers, attempt, retry_in_ms, error } => log::warn!(
                "event=kafka_unreachable servers={servers} attempt={attempt} retry_in_ms={retry_in_ms} error={error:?}"
            ),
            Lifecycle::BrokerNamedNone { attempt } => {
                log::warn!("event=kafka_unreachable attempt={attempt} error=\"metadata named no broker\"")
            }
            Lifecycle::ConsumerOff => log::info!("event=consumer_off why=\"KAFKA_ENABLED=false\""),
            Lifecycle::Running => log::info!("event=running"),
            Lifecycle::Signal(name) => log::info!("event=signal name={name}"),
            Lifecycle::SignalsNotWatched => log::error!("event=signals_not_watched"),
            Lifecycle::ShuttingDown { timeout_ms } => log::info!("event=shutting_down timeout_ms={timeout_ms}"),
            Lifecycle::StoppedDuringStart(e) => log::info!("event=stopped_during_start error={e:?}"),
            Lifecycle::Stopped => log::info!("event=stopped"),
        }
    }
}
