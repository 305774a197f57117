//! Each console section's data, declared once: the page renders it as HTML
//! ([`super::console`]) and `/api/<section>` serves it as JSON
//! ([`super::api`]). Built from the status (no wait on the broker) and, for
//! the sections that show rows, reads from the HTTP endpoint's own pool.

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use super::html::read;
use super::status::Status;
use crate::db::{job_runs, notifications, predictions};

const NOTIFICATIONS_SHOWN: i64 = 20;
/// Runs of each job shown.
pub const RUNS_SHOWN: i64 = 20;
const PREDICTION_KEYS_SHOWN: usize = 20;

pub(super) fn time(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn secs(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
}

#[derive(Serialize)]
pub struct Overview {
    pub healthy: bool,
    pub ready: bool,
    /// What makes it unhealthy, then what makes it not ready.
    pub problems: Vec<String>,
    pub not_ready: Vec<String>,
    /// Partitions an operator paused (not a fault: the service stays healthy).
    pub paused_by_operator: Vec<PausedPartition>,
}

#[derive(Serialize)]
pub struct PausedPartition {
    pub topic: String,
    pub partition: i32,
    pub since: String,
}

pub fn overview(s: &Status) -> Overview {
    let (problems, not_ready) = (s.liveness(), s.readiness());
    let paused = s.sources.operator_pauses.get().into_iter();
    Overview {
        healthy: problems.is_empty(),
        ready: not_ready.is_empty(),
        problems,
        not_ready,
        paused_by_operator: paused
            .map(|(tp, at)| PausedPartition { topic: tp.topic, partition: tp.partition, since: time(at) })
            .collect(),
    }
}

#[derive(Serialize, Clone)]
pub struct InHand {
    pub lane: usize,
    pub first: String,
    pub records: usize,
    pub attempt: u32,
    pub retrying_for_s: f64,
    pub why: String,
}

#[derive(Serialize, Default)]
pub struct PartitionRow {
    pub topic: String,
    pub partition: i32,
    /// `None`: paused by an operator and not assigned to this copy.
    pub lane: Option<usize>,
    /// `operator`, `retrying`, `memory` (see the README), or `None`.
    pub paused: Option<&'static str>,
    pub paused_by_operator_since: Option<String>,
    pub in_memory: usize,
    pub lag: Option<i64>,
    pub seconds_behind: Option<f64>,
    /// The next offset after the last handled record: the database's stored offset.
    pub handled: Option<i64>,
    /// The offset Kafka last confirmed committed.
    pub committed: Option<i64>,
    /// Its lane's batch in hand, while that is retried.
    pub in_hand: Option<InHand>,
}

#[derive(Serialize)]
pub struct Restart {
    pub at: String,
    pub cause: &'static str,
    pub detail: String,
}

#[derive(Serialize, Default)]
pub struct Consumer {
    /// False with `KAFKA_ENABLED=false`.
    pub on: bool,
    pub running: bool,
    pub lanes: usize,
    pub last_poll_s_ago: Option<f64>,
    pub last_commit_database_s_ago: Option<f64>,
    pub last_commit_kafka_s_ago: Option<f64>,
    pub in_hand: Vec<InHand>,
    pub partitions: Vec<PartitionRow>,
    pub restarts: u64,
    pub recent_restarts: Vec<Restart>,
}

pub fn consumer(s: &Status) -> Consumer {
    let lanes = s.lanes();
    let mut paused = s.sources.operator_pauses.get();
    let Some(c) = s.consumer() else { return Consumer { lanes, ..Consumer::default() } };
    let in_hand: Vec<InHand> = c
        .in_hand_by_lane
        .iter()
        .map(|(lane, for_, h)| InHand {
            lane: *lane,
            first: h.first.clone(),
            records: h.records,
            attempt: h.attempts,
            retrying_for_s: secs(Some(*for_)).unwrap_or_default(),
            why: h.reason.clone(),
        })
        .collect();
    let samples = s.partition_samples(&c);
    let mut partitions: Vec<PartitionRow> = c
        .partitions
        .iter()
        .map(|v| {
            let tp = crate::common::record::TopicPartition::new(v.topic.clone(), v.partition);
            let sample = samples.iter().find(|p| p.topic == v.topic && p.partition == v.partition);
            PartitionRow {
                topic: v.topic.clone(),
                partition: v.partition,
                lane: Some(v.lane),
                paused: v.paused,
                paused_by_operator_since: paused.remove(&tp).map(time),
                in_memory: v.in_memory,
                lag: sample.map(|p| p.lag),
                seconds_behind: sample.and_then(|p| p.seconds_behind),
                handled: v.handled,
                committed: v.committed,
                in_hand: in_hand.iter().find(|h| h.lane == v.lane).cloned(),
            }
        })
        .collect();
    // Paused partitions this copy does not hold (another copy's, or none's now).
    partitions.extend(paused.into_iter().map(|(tp, at)| PartitionRow {
        topic: tp.topic,
        partition: tp.partition,
        paused: Some("operator"),
        paused_by_operator_since: Some(time(at)),
        ..PartitionRow::default()
    }));
    Consumer {
        on: true,
        running: c.alive,
        lanes,
        last_poll_s_ago: secs(c.since_poll),
        last_commit_database_s_ago: secs(c.since_stored),
        last_commit_kafka_s_ago: secs(c.since_commit),
        in_hand,
        partitions,
        restarts: c.restarts,
        recent_restarts: c
            .recent_restarts
            .iter()
            .map(|r| Restart {
                at: r.at.to_rfc3339_opts(SecondsFormat::Secs, true),
                cause: r.cause,
                detail: r.detail.clone(),
            })
            .collect(),
    }
}

#[derive(Serialize)]
pub struct Run {
    pub started_at: String,
    pub outcome: String,
    pub duration_ms: Option<i64>,
    pub detail: Option<String>,
}

#[derive(Serialize)]
pub struct Job {
    pub name: String,
    pub schedule: String,
    /// Why it is off (`None`: on).
    pub off: Option<String>,
    pub next_run: Option<String>,
    /// Its last runs from `job_runs`, oldest first (every copy's).
    pub runs: Vec<Run>,
}

#[derive(Serialize)]
pub struct Jobs {
    pub jobs: Vec<Job>,
    /// Why the runs could not be read (`None`: they were).
    pub error: Option<String>,
}

pub fn jobs(s: &Status) -> Jobs {
    let names: Vec<&'static str> = s.sources.runners.iter().map(|r| r.name()).collect();
    let runs = read(s, |c| names.iter().map(|n| job_runs::list(c, Some(n), RUNS_SHOWN)).collect::<Result<Vec<_>, _>>());
    let (runs, error) = match runs {
        Ok(r) => (r, None),
        Err(e) => (vec![vec![]; names.len()], Some(e)),
    };
    let mut jobs: Vec<Job> = s
        .sources
        .runners
        .iter()
        .zip(runs)
        .map(|(r, rows)| Job {
            name: r.name().to_string(),
            schedule: r.schedule().as_str().to_string(),
            off: None,
            next_run: r.next_run().map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            runs: rows
                .into_iter()
                .rev()
                .map(|run| Run {
                    started_at: time(run.started_at),
                    duration_ms: run.finished_at.map(|f| (f - run.started_at).num_milliseconds()),
                    outcome: run.outcome,
                    detail: run.error.or(run.details),
                })
                .collect(),
        })
        .collect();
    jobs.extend(s.sources.jobs_off.iter().map(|off| Job {
        name: off.name.to_string(),
        schedule: off.schedule.clone(),
        off: Some(off.why.clone()),
        next_run: None,
        runs: vec![],
    }));
    Jobs { jobs, error }
}

#[derive(Serialize)]
pub struct Notification {
    pub id: i64,
    pub event: String,
    pub users: String,
    pub message: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

impl From<notifications::Notification> for Notification {
    fn from(n: notifications::Notification) -> Self {
        Notification {
            id: n.id,
            event: n.event,
            users: n.users,
            message: n.message,
            status: n.status,
            attempts: n.attempts,
            last_error: n.last_error,
            created_at: time(n.created_at),
            sent_at: n.sent_at.map(time),
        }
    }
}

#[derive(Serialize)]
pub struct Notifications {
    pub by_status: BTreeMap<String, i64>,
    pub failed: Vec<Notification>,
    /// The latest delivered.
    pub latest_sent: Vec<Notification>,
    pub error: Option<String>,
}

pub fn notifications(s: &Status) -> Notifications {
    let found = read(s, |c| {
        let counts = notifications::count_by_status(c)?;
        let failed = notifications::list(c, Some(notifications::FAILED), NOTIFICATIONS_SHOWN)?;
        Ok((counts, failed, notifications::list(c, Some(notifications::SENT), NOTIFICATIONS_SHOWN)?))
    });
    match found {
        Ok((counts, failed, latest_sent)) => Notifications {
            by_status: counts.into_iter().collect(),
            failed: failed.into_iter().map(Notification::from).collect(),
            latest_sent: latest_sent.into_iter().map(Notification::from).collect(),
            error: None,
        },
        Err(e) => Notifications { by_status: BTreeMap::new(), failed: vec![], latest_sent: vec![], error: Some(e) },
    }
}

#[derive(Serialize)]
pub struct Predictions {
    /// False until `PREDICT_URL` is set.
    pub on: bool,
    pub model: String,
    pub url: Option<String>,
    pub protocol: String,
    /// Calls to the model server by answer.
    pub calls: BTreeMap<String, u64>,
    pub mean_latency_ms: Option<f64>,
    pub refused_records: u64,
    pub breaker_open: bool,
    pub stored: i64,
    /// The newest prediction of each key.
    pub latest: Vec<Value>,
    pub error: Option<String>,
}

pub fn predictions(s: &Status) -> Predictions {
    let settings = &s.sources.settings;
    let m = crate::common::metrics::get();
    // Every answer seen: any HTTP status, timeout, connection.
    let calls = crate::common::metrics::counters_by(&m.model_calls, "status");
    let calls = calls.into_iter().filter(|(_, n)| *n > 0.0).map(|(status, n)| (status, n as u64)).collect();
    let count = m.model_latency.get_sample_count();
    let mut view = Predictions {
        on: settings.predict_url.is_some(),
        model: settings.predict_model.clone(),
        url: settings.predict_url.as_deref().map(crate::config::redact::url),
        protocol: format!("{:?}", settings.predict_protocol).to_lowercase(),
        calls,
        mean_latency_ms: (count > 0).then(|| m.model_latency.get_sample_sum() / count as f64 * 1000.0),
        refused_records: m.model_refused_records.get(),
        breaker_open: m.model_breaker_open.get() == 1,
        stored: 0,
        latest: vec![],
        error: None,
    };
    if !view.on {
        return view;
    }
    match read(s, |c| Ok((predictions::count(c)?, predictions::recent(c, None, 500)?))) {
        Ok((stored, rows)) => {
            let mut seen = std::collections::BTreeSet::new();
            view.stored = stored;
            view.latest = rows
                .iter()
                .filter(|p| seen.insert(p.key.clone()))
                .take(PREDICTION_KEYS_SHOWN)
                .map(super::predictions::shown)
                .collect();
        }
        Err(e) => view.error = Some(e),
    }
    view
}

/// The history's samples, with when the history was read.
#[derive(Serialize)]
pub struct History {
    pub now: String,
    pub every_s: u64,
    pub samples: Vec<super::history::Sample>,
}

pub fn history(s: &Status) -> History {
    History {
        now: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        every_s: super::history::EVERY.as_secs(),
        samples: s.history(),
    }
}
