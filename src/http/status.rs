//! What the probes and the console report, kept current by background tasks
//! so that no request waits on the database or the broker: liveness every
//! second, readiness and the operator's pauses every two (readiness more often until first ready),
//! the console's [`History`] every ten, this copy's partitions' lag every fifteen, and the gauges derived from them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::history::{self, History, PartitionSample, Readings, Sample};
use crate::common::locks::{lock, read, write};
use crate::common::record::TopicPartition;
use crate::common::shutdown::Shutdown;
use crate::config::Settings;
use crate::consume::heartbeat::{PartitionView, RetryingBatch};
use crate::consume::operator_pauses::OperatorPauses;
use crate::consume::supervisor::{Restart, Supervisor};
use crate::db::Pool;
use crate::events::{Event as _, Sampled};
use crate::schedule::{JobContext, JobRunner, OffJob};

/// The scheduler counts as stopped when no tick started for this long
/// (the supervision job ticks every 5 s).
const SCHEDULER_SILENCE: Duration = Duration::from_secs(20);
const LIVENESS_EVERY: Duration = Duration::from_secs(1);
const READINESS_EVERY: Duration = Duration::from_secs(2);
const READINESS_EVERY_UNTIL_READY: Duration = Duration::from_millis(200);
const LAG_EVERY: Duration = Duration::from_secs(15);
/// Symbols whose moving average `/metrics` shows, at most.
const MOVING_AVERAGES_EXPORTED: i64 = 100;
/// A probe result older than this is a problem in itself: its refresher is stuck.
const STALE_AFTER: Duration = Duration::from_secs(10);

/// Connections of the HTTP endpoint's own pool: the console's, the API's,
/// the actions' and the background checks' database work.
pub const HTTP_POOL_SIZE: u32 = 2;

/// What the service is made of, as the status reads it.
pub struct Sources {
    pub settings: Arc<Settings>,
    /// The service's pool (the consumer's and the jobs'): its gauges only.
    pub pool: Pool,
    /// The HTTP endpoint's own connections ([`HTTP_POOL_SIZE`]): whatever its
    /// clients do, they cannot take the consumer's.
    pub http_pool: Pool,
    pub supervisor: Option<Arc<Mutex<Supervisor>>>,
    pub jobs: Arc<JobContext>,
    pub runners: Vec<Arc<JobRunner>>,
    /// The registered jobs that are off with these settings, and why.
    pub jobs_off: Vec<OffJob>,
    /// The partitions an operator paused, kept as the database says.
    pub operator_pauses: Arc<OperatorPauses>,
}

#[derive(Debug, Clone, Default)]
struct Probe {
    problems: Vec<String>,
    at: Option<Instant>,
}

/// The consumer thread as the console shows it.
#[derive(Debug, Clone)]
pub struct ConsumerView {
    pub alive: bool,
    pub since_poll: Option<Duration>,
    /// Since Kafka last confirmed a commit, and since the database last committed a batch.
    pub since_commit: Option<Duration>,
    pub since_stored: Option<Duration>,
    pub retrying_for: Option<Duration>,
    /// Each lane's batch in hand, and how long it has been retrying.
    pub in_hand_by_lane: Vec<(usize, Duration, RetryingBatch)>,
    pub restarts: u64,
    pub recent_restarts: Vec<Restart>,
    pub assignment: Vec<TopicPartition>,
    /// The assigned partitions as the pipeline last described them.
    pub partitions: Vec<PartitionView>,
}

pub struct Status {
    pub sources: Sources,
    /// The price API's fetches under way.
    pub(super) prices: super::prices::Fetches,
    admin: Option<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>,
    live: RwLock<Probe>,
    ready: RwLock<Probe>,
    ever_ready: AtomicBool,
    history: Mutex<History>,
    /// Made at the first lag reading.
    lag_reader: Mutex<Option<crate::kafka::LagReader>>,
    /// The last reading: lag by (topic, partition), of this copy's partitions.
    lag: Mutex<Vec<(TopicPartition, i64)>>,
}

impl Status {
    pub fn new(sources: Sources) -> Arc<Status> {
        let admin =
            if sources.settings.kafka_enabled { crate::kafka::admin_client(&sources.settings).ok() } else { None };
        Arc::new(Status {
            sources,
            prices: Default::default(),
            admin,
            live: RwLock::default(),
            ready: RwLock::default(),
            ever_ready: AtomicBool::new(false),
            history: Mutex::default(),
            lag_reader: Mutex::default(),
            lag: Mutex::default(),
        })
    }

    /// Starts the background refreshers on the current tokio runtime.
    pub fn start(self: &Arc<Self>, shutdown: &Shutdown) {
        // Each check returns when it wants to run next.
        let every = |status: &Arc<Status>, check: fn(&Status) -> Duration| {
            let (status, shutdown) = (status.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    let s = status.clone();
                    // The checks block (locks, the database, the broker): off the async workers.
                    let next = tokio::task::spawn_blocking(move || check(&s)).await.unwrap_or(LIVENESS_EVERY);
                    tokio::select! {
                        _ = tokio::time::sleep(next) => {}
                        _ = shutdown.wait() => return,
                    }
                }
            });
        };
        every(self, |s| {
            let problems = s.check_liveness();
            *write(&s.live) = Probe { problems, at: Some(Instant::now()) };
            s.update_gauges();
            LIVENESS_EVERY
        });
        every(self, |s| {
            let problems = s.check_readiness();
            // Until first ready, look often: start-up is timed to the first 200.
            if problems.is_empty() {
                s.ever_ready.store(true, Ordering::Relaxed);
            }
            let first = !s.ever_ready.load(Ordering::Relaxed);
            let next = if first { READINESS_EVERY_UNTIL_READY } else { READINESS_EVERY };
            *write(&s.ready) = Probe { problems, at: Some(Instant::now()) };
            s.refresh_pauses();
            next
        });
        every(self, |s| {
            s.sample_history();
            s.sample_store();
            history::EVERY
        });
        if self.sources.settings.kafka_enabled {
            every(self, |s| {
                s.sample_lag();
                LAG_EVERY
            });
        }
    }

    /// Problems that make the service unhealthy (empty: healthy), as last checked.
    pub fn liveness(&self) -> Vec<String> {
        Self::read(&self.live, "liveness")
    }

    /// Problems that make the service not ready (empty: ready), as last checked.
    pub fn readiness(&self) -> Vec<String> {
        Self::read(&self.ready, "readiness")
    }

    fn read(probe: &RwLock<Probe>, what: &str) -> Vec<String> {
        let p = read(probe).clone();
        match p.at {
            None => vec![format!("{what} not checked yet")],
            Some(at) if at.elapsed() > STALE_AFTER => {
                vec![format!("{what} last checked {} s ago (its check is stuck)", at.elapsed().as_secs())]
            }
            Some(_) => p.problems,
        }
    }

    /// The history's samples, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        lock(&self.history).samples()
    }

    /// The consumer thread now (`None` with `KAFKA_ENABLED=false`).
    pub fn consumer(&self) -> Option<ConsumerView> {
        let s = self.sources.supervisor.as_ref()?;
        let s = lock(s);
        let hb = s.heartbeat();
        Some(ConsumerView {
            alive: s.is_alive(),
            since_poll: hb.as_ref().and_then(|h| h.since_poll()),
            since_commit: hb.as_ref().and_then(|h| h.since_commit()),
            since_stored: hb.as_ref().and_then(|h| h.since_stored()),
            retrying_for: hb.as_ref().and_then(|h| h.retrying_for()),
            in_hand_by_lane: hb.as_ref().map(|h| h.in_hand_by_lane()).unwrap_or_default(),
            restarts: s.restarts(),
            recent_restarts: s.recent_restarts(),
            assignment: hb.as_ref().map(|h| h.assignment()).unwrap_or_default(),
            partitions: hb.as_ref().map(|h| h.partitions()).unwrap_or_default(),
        })
    }

    fn check_liveness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let settings = &self.sources.settings;
        if let Some(s) = &self.sources.supervisor {
            let s = lock(s);
            if !s.is_alive() {
                problems.push("consumer thread is not running".to_string());
                // While its restart waits, the ended thread's heartbeat says why it was stopped.
                problems.extend(s.heartbeat().and_then(|hb| hb.client_problem(settings.consumer_stall_timeout)));
            } else if let Some(hb) = s.heartbeat() {
                problems.extend(hb.problems(settings.consumer_stall_timeout));
            }
        }
        if let Some(age) = self.sources.jobs.since_tick().filter(|age| *age > SCHEDULER_SILENCE) {
            problems.push(format!("scheduler has not ticked for {} s", age.as_secs()));
        }
        problems
    }

    fn check_readiness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match crate::db::checkout(&self.sources.http_pool, None) {
            Ok(mut c) => {
                if let Err(e) = crate::db::ping(&mut c) {
                    problems.push(format!("database does not answer: {e}"));
                }
            }
            Err(e) => problems.push(format!("database unreachable: {e}")),
        }
        if let Some(admin) = &self.admin {
            if let Err(e) = admin.inner().fetch_metadata(None, Duration::from_secs(2)) {
                problems.push(format!("broker unreachable: {e}"));
            }
            let assigned =
                self.sources.supervisor.as_ref().and_then(|s| lock(s).heartbeat()).map(|hb| hb.assigned()).unwrap_or(0);
            if assigned == 0 {
                problems.push("no partitions assigned".to_string());
            }
        }
        problems
    }

    /// Takes the operator's pauses from the database (another copy's console
    /// may have changed them); the database away, they stay as they were.
    fn refresh_pauses(&self) {
        let Ok(mut conn) = crate::db::checkout(&self.sources.http_pool, None) else { return };
        if self.sources.operator_pauses.load(&mut conn).is_ok() {
            let paused: Vec<TopicPartition> = self.sources.operator_pauses.get().into_keys().collect();
            Sampled::OperatorPauses(&paused).emit();
        }
    }

    /// Each assigned partition's lag (last read) and how far behind it is in time.
    pub fn partition_samples(&self, c: &ConsumerView) -> Vec<PartitionSample> {
        let now = chrono::Utc::now();
        c.assignment
            .iter()
            .filter_map(|tp| {
                let lag = self.lag_of(tp)?;
                let view = c.partitions.iter().find(|v| v.topic == tp.topic && v.partition == tp.partition);
                let seconds_behind = history::seconds_behind(lag, view.and_then(|v| v.oldest_in_memory_ms), now);
                Some(PartitionSample { topic: tp.topic.clone(), partition: tp.partition, lag, seconds_behind })
            })
            .collect()
    }

    fn sample_history(&self) {
        let partitions = self.consumer().map(|c| self.partition_samples(&c)).unwrap_or_default();
        let counts = crate::db::checkout(&self.sources.http_pool, None)
            .ok()
            .and_then(|mut c| crate::db::notifications::count_by_status(&mut c).ok())
            .unwrap_or_default();
        lock(&self.history).sample(Readings {
            lanes: self.lanes(),
            partitions,
            notifications_by_status: counts.into_iter().collect(),
            model_on: self.sources.settings.predict_url.is_some(),
        });
    }

    /// The consumer's lanes (none with `KAFKA_ENABLED=false`).
    pub fn lanes(&self) -> usize {
        let settings = &self.sources.settings;
        if settings.kafka_enabled {
            settings.consumer_lanes()
        } else {
            0
        }
    }

    /// The outbox backlog and the symbols' moving averages, into their gauges
    /// (the averages of the symbols updated last, so that hostile input
    /// cannot grow the metrics without bound).
    fn sample_store(&self) {
        let Ok(mut conn) = crate::db::checkout(&self.sources.http_pool, None) else { return };
        if let Ok(n) = crate::db::outbox::pending(&mut conn) {
            Sampled::OutboxPending(n).emit();
        }
        if let Ok(averages) = crate::db::price_stats::moving_averages(&mut conn, MOVING_AVERAGES_EXPORTED) {
            Sampled::MovingAverages(&averages).emit();
        }
    }

    /// The lag of the partitions this copy holds, into `cronsumer_consumer_lag`
    /// (each copy exports its own, so a sum over copies counts each partition once).
    fn sample_lag(&self) {
        let mut reader = lock(&self.lag_reader);
        if reader.is_none() {
            match crate::kafka::LagReader::new(&self.sources.settings) {
                Ok(r) => *reader = Some(r),
                Err(e) => return Sampled::LagNotRead(&e.to_string()).emit(),
            }
        }
        let Some(r) = reader.as_ref() else { return };
        let parts = match r.read(&self.sources.jobs.topics) {
            Ok(parts) => parts,
            // The readiness probe names an unreachable broker; this stays quiet.
            Err(e) => return log::debug!("lag not read: {e}"),
        };
        let mine = self.consumer().map(|c| c.assignment).unwrap_or_default();
        let lag: Vec<(TopicPartition, i64)> = parts
            .into_iter()
            .map(|p| (TopicPartition::new(p.topic, p.partition), p.lag))
            .filter(|(tp, _)| mine.contains(tp))
            .collect();
        Sampled::Lag(&lag).emit();
        *lock(&self.lag) = lag;
    }

    /// The last lag reading of a partition this copy holds.
    pub fn lag_of(&self, tp: &TopicPartition) -> Option<i64> {
        let lag = lock(&self.lag);
        lag.iter().find(|(t, _)| t == tp).map(|(_, l)| *l)
    }

    /// The gauges that describe state rather than count events.
    fn update_gauges(&self) {
        let settings = &self.sources.settings;
        if let Some(c) = self.consumer() {
            let polling = c.since_poll.is_some_and(|age| age <= settings.consumer_stall_timeout);
            let retrying_for = c.retrying_for.map_or(0.0, |d| d.as_secs_f64());
            Sampled::Consumer { group: &settings.kafka_group_id, up: c.alive && polling, retrying_for }.emit();
        }
        let now = chrono::Utc::now();
        for r in &self.sources.runners {
            Sampled::JobOverdue { job: r.name(), seconds: r.overdue(now).as_secs_f64() }.emit();
        }
        let state = self.sources.pool.state();
        Sampled::Pool { idle: state.idle_connections, active: state.connections - state.idle_connections }.emit();
    }
}
