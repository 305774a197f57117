//! The HTTP endpoint's events: connections at its limit, actions.

use super::Event;
use crate::common::metrics;

/// Why the HTTP endpoint closed a connection at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The oldest connection without a request made room for a newcomer.
    Evicted,
    /// Every connection was serving a request: the newcomer was refused.
    Refused,
}

pub struct ConnectionDropped {
    pub reason: DropReason,
}

impl Event for ConnectionDropped {
    fn emit(self) {
        let reason = match self.reason {
            DropReason::Evicted => "evicted",
            DropReason::Refused => "refused",
        };
        metrics::get().http_connections_dropped.with_label_values(&[reason]).inc();
    }
}

/// The endpoint listens, or could not accept a connection (out of file descriptors, usually).
pub struct HttpListening<'a> {
    pub addr: &'a str,
    pub accept_error: Option<&'a str>,
}

impl Event for HttpListening<'_> {
    fn emit(self) {
        match self.accept_error {
            Some(e) => log::warn!("event=http_accept_failed addr={} error={e:?}", self.addr),
            None => log::info!("event=http_listening addr={}", self.addr),
        }
    }
}

/// An action (replay, retry, run a job, unlock) was refused, done, or failed.
pub struct ActionTaken<'a> {
    pub action: &'a str,
    pub outcome: &'static str,
    pub detail: &'a str,
}

impl Event for ActionTaken<'_> {
    fn emit(self) {
        let level = if self.outcome == "done" { log::Level::Info } else { log::Level::Warn };
        log::log!(
            level,
            "event=http_action action={:?} outcome={} detail={:?}",
            self.action,
            self.outcome,
            self.detail
        );
    }
}

/// The gauges that describe state, sampled in the background: the consumer
/// thread (up, how long its batch has retried), each job's lateness, the
/// database pool, the outbox, the symbols' moving averages, this copy's lag.
pub enum Sampled<'a> {
    Consumer {
        group: &'a str,
        up: bool,
        retrying_for: f64,
    },
    JobOverdue {
        job: &'a str,
        seconds: f64,
    },
    Pool {
        idle: u32,
        active: u32,
    },
    OutboxPending(i64),
    MovingAverages(&'a [(String, f64)]),
    Lag(&'a [(crate::common::record::TopicPartition, i64)]),
    LagNotRead(&'a str),
    /// The partitions an operator paused, as the database says.
    OperatorPauses(&'a [crate::common::record::TopicPartition]),
}

impl Event for Sampled<'_> {
    fn emit(self) {
        let m = metrics::get();
        match self {
            Sampled::Consumer { group, up, retrying_for } => {
                m.consumer_up.with_label_values(&[group]).set(i64::from(up));
                m.batch_retrying_seconds.set(retrying_for);
            }
            Sampled::JobOverdue { job, seconds } => m.job_overdue_seconds.with_label_values(&[job]).set(seconds),
            Sampled::Pool { idle, active } => {
                m.db_pool_connections.with_label_values(&["idle"]).set(i64::from(idle));
                m.db_pool_connections.with_label_values(&["active"]).set(i64::from(active));
            }
            Sampled::OutboxPending(n) => m.outbox_pending.set(n),
            Sampled::MovingAverages(averages) => {
                m.price_moving_average.reset();
                for (symbol, value) in averages {
                    m.price_moving_average.with_label_values(&[symbol]).set(*value);
                }
            }
            Sampled::Lag(lag) => {
                // Partitions that left this copy leave the gauge too.
                m.consumer_lag.reset();
                for (tp, l) in lag {
                    m.consumer_lag.with_label_values(&[&tp.topic, &tp.partition.to_string()]).set(*l);
                }
            }
            Sampled::LagNotRead(e) => log::warn!("event=lag_not_read error={e:?}"),
            Sampled::OperatorPauses(paused) => {
                m.partitions_paused.reset();
                for tp in paused {
                    m.partitions_paused.with_label_values(&[&tp.topic, &tp.partition.to_string()]).set(1);
                }
            }
        }
    }
}
