//! The embedded scheduler: runs every registered [`Job`] on its cron
//! expression (6 fields, seconds first, UTC) with tokio-cron-scheduler.
//!
//! Every run goes through [`JobRunner::run`], which keeps the rules in one
//! place: a run never overlaps itself (the tick is skipped and counted), an
//! exclusive job first takes its lease in `job_leases` (one copy per tick),
//! every run is recorded in `job_runs`, and a panicking job is recorded as
//! failed and runs again at its next tick.
//!
//! Inside: the [`Job`] contract, its context and the scheduler (here), one
//! job's runs ([`JobRunner`]), the lease keeper ([`lease`]) and the store's
//! own jobs ([`maintenance`]). The parts register their jobs themselves (the
//! sender with delivery, supervision with the consumer): this part names
//! none of them. It may use `common`, `events`, `config`, `db` and `kafka`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::common::locks::lock;
use crate::common::shutdown::Shutdown;
use crate::config::cron::{CronError, Schedule};
use crate::config::Settings;
use crate::db::{self, job_leases, DbConnection, Pool};
use crate::events::{Event as _, JobRegistered, SchedulerStopped};

pub(crate) mod lease;
pub(crate) mod maintenance;
mod runner;
pub use runner::{JobRunner, LastRun, RunOutcome};

/// What a finished run reports for the ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub details: String,
}

impl JobReport {
    pub fn new(details: impl Into<String>) -> Self {
        JobReport { details: details.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("job {0} lost its lease (another copy runs it now): nothing more was written")]
    LeaseLost(String),
    #[error("{0}")]
    Other(String),
}

/// Everything a job may use.
pub struct JobContext {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    /// This copy's identity in `job_leases` and notification claims.
    pub holder: String,
    pub shutdown: Shutdown,
    /// When a cron tick last started a run (any job): the scheduler's pulse.
    pub last_tick: Mutex<Option<Instant>>,
    /// Leases held by the runs going on, by job.
    pub leases: lease::Held,
    /// The topics the consumer modules read (for reports such as lag).
    pub topics: Vec<String>,
    /// Wakes jobs that are [`Job::wakeable`] (work for them was written).
    pub wakers: Wakers,
}

impl JobContext {
    pub fn new(settings: Arc<Settings>, pool: Pool, shutdown: Shutdown) -> Self {
        JobContext {
            settings,
            pool,
            holder: holder_id(),
            shutdown,
            last_tick: Mutex::new(None),
            leases: lease::Held::default(),
            topics: Vec::new(),
            wakers: Wakers::default(),
        }
    }

    pub fn with_wakers(mut self, wakers: Wakers) -> Self {
        self.wakers = wakers;
        self
    }

    pub fn with_topics(mut self, topics: Vec<String>) -> Self {
        self.topics = topics;
        self
    }

    /// Runs `write` in one transaction that first checks the lease the run
    /// of `job` holds, if it holds one: a run that lost its lease writes nothing.
    pub fn fenced<T>(
        &self,
        job: &str,
        conn: &mut DbConnection,
        write: impl FnOnce(&mut DbConnection) -> Result<T, db::DbError>,
    ) -> Result<T, JobError> {
        self.fenced_write(job, conn, write)?.ok_or_else(|| JobError::LeaseLost(job.to_string()))
    }

    /// [`Self::fenced`], saying `None` when the lease was lost. The
    /// transaction is a write one from its start (immediate on SQLite), so
    /// its check and its writes see one state.
    pub fn fenced_write<T>(
        &self,
        job: &str,
        conn: &mut DbConnection,
        write: impl FnOnce(&mut DbConnection) -> Result<T, db::DbError>,
    ) -> Result<Option<T>, db::DbError> {
        let lease = self.leases.get(job);
        db::transaction(conn, false, |c| {
            if let Some(l) = &lease {
                if !job_leases::holds(c, l)? {
                    return Ok(None);
                }
            }
            write(c).map(Some)
        })
    }

    /// A pooled connection, as `HandlerContext::db()` gives handlers theirs.
    pub fn db(&self) -> Result<db::Conn, JobError> {
        Ok(self.pool.get().map_err(db::DbError::Pool)?)
    }

    /// Time since the scheduler last ticked; `None` before the first tick.
    pub fn since_tick(&self) -> Option<Duration> {
        lock(&self.last_tick).map(|t| t.elapsed())
    }
}

/// `hostname-pid-nonce`: unique per running copy.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "cronsumer".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100_000)
        .unwrap_or(0);
    format!("{host}-{}-{nonce}", std::process::id())
}

pub trait Job: Send + Sync {
    fn name(&self) -> &'static str;
    /// When it runs: a cron expression (6 fields, seconds first, UTC), as
    /// `"0 */5 * * * *".parse()` or a setting's parsed value. A schedule that
    /// does not parse stops the service at start, naming the job.
    fn schedule(&self, settings: &Settings) -> Result<Schedule, CronError>;
    /// Blocking body; runs on tokio's blocking pool.
    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError>;
    /// Whether only one copy of the service may run it per tick (lease).
    /// Jobs about this process itself (supervision) say no.
    fn exclusive(&self) -> bool {
        true
    }
    /// Why it does not run with these settings (`None`: it runs). A job
    /// that is off is not scheduled; the start, `jobs list` and the console
    /// say so, with this reason.
    fn off(&self, _settings: &Settings) -> Option<String> {
        None
    }
    /// Whether an exclusive job takes its lease on every run, not only on
    /// ticks: woken and manual runs too (a publisher that must keep order).
    fn lease_every_run(&self) -> bool {
        false
    }
    /// Whether the consumer's modules may wake it to run now (as
    /// `send_notifications` is when new notifications are stored), besides
    /// its cron ticks.
    fn wakeable(&self) -> bool {
        false
    }
    /// Whether its runs are recorded in `job_runs`. Jobs that must run while
    /// the database is away (supervision) say no: they never wait for it.
    fn recorded(&self) -> bool {
        true
    }
}

/// Wake-up handles of scheduled jobs, by job name, so a handler can ask a job
/// to run now instead of at its next tick (new notifications → send them).
#[derive(Clone, Default)]
pub struct Wakers(HashMap<&'static str, Arc<tokio::sync::Notify>>);

impl Wakers {
    /// A handle for each job that says it is [`Job::wakeable`].
    pub fn of(jobs: &[Arc<dyn Job>]) -> Wakers {
        Wakers(jobs.iter().filter(|j| j.wakeable()).map(|j| (j.name(), Arc::default())).collect())
    }

    pub fn get(&self, job: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.0.get(job).cloned()
    }

    pub fn wake(&self, job: &str) {
        if let Some(n) = self.0.get(job) {
            n.notify_one();
        }
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Tick,
    /// Woken by new work (e.g. new notifications); no lease needed, unless
    /// the job says [`Job::lease_every_run`].
    Wake,
    /// `cronsumer jobs run NAME`.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Tick => "tick",
            Trigger::Wake => "wake",
            Trigger::Manual => "manual",
        }
    }
}

/// A registered job that is off with these settings, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffJob {
    pub name: &'static str,
    pub schedule: String,
    pub why: String,
}

/// The running scheduler; [`Scheduler::stop`] ends it.
pub struct Scheduler {
    inner: tokio_cron_scheduler::JobScheduler,
    runners: Vec<Arc<JobRunner>>,
    off: Vec<OffJob>,
}

impl Scheduler {
    /// Registers every job on its cron expression, plus wake-ups for the jobs
    /// that have a waker, and starts ticking.
    pub async fn start(jobs: Vec<Arc<dyn Job>>, ctx: Arc<JobContext>, wakers: &Wakers) -> Result<Scheduler, JobError> {
        let inner = tokio_cron_scheduler::JobScheduler::new().await.map_err(|e| JobError::Other(e.to_string()))?;
        let (mut runners, mut off) = (Vec::new(), Vec::new());
        for job in jobs {
            if let Some(why) = job.off(&ctx.settings) {
                let schedule = job.schedule(&ctx.settings).map(|s| s.as_str().to_string()).unwrap_or_default();
                JobRegistered { job: job.name(), cron: &schedule, off: Some(&why) }.emit();
                off.push(OffJob { name: job.name(), schedule, why });
                continue;
            }
            let runner = Arc::new(JobRunner::new(job, ctx.clone())?);
            let cron = runner.schedule().clone();
            let r = runner.clone();
            let cron_job = tokio_cron_scheduler::Job::new_async_tz(cron.as_str(), Utc, move |_, _| {
                let r = r.clone();
                Box::pin(async move {
                    let _ = tokio::task::spawn_blocking(move || r.run(Trigger::Tick)).await;
                })
            })
            .map_err(|e| JobError::Other(format!("job {} has a bad schedule {cron:?}: {e}", runner.name())))?;
            inner.add(cron_job).await.map_err(|e| JobError::Other(e.to_string()))?;
            if let Some(notify) = wakers.get(runner.name()) {
                tokio::spawn(wake_loop(runner.clone(), notify, ctx.shutdown.clone()));
            }
            JobRegistered { job: runner.name(), cron: cron.as_str(), off: None }.emit();
            runners.push(runner);
        }
        inner.start().await.map_err(|e| JobError::Other(e.to_string()))?;
        Ok(Scheduler { inner, runners, off })
    }

    pub fn runners(&self) -> &[Arc<JobRunner>] {
        &self.runners
    }

    /// The registered jobs that are off with these settings.
    pub fn off(&self) -> &[OffJob] {
        &self.off
    }

    /// Stops new ticks, then waits (up to `timeout`) for running jobs to finish.
    pub async fn stop(mut self, deadline: Instant) {
        let error = self.inner.shutdown().await.err().map(|e| e.to_string());
        while self.runners.iter().any(|r| r.is_running()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let still_running: Vec<&str> = self.runners.iter().filter(|r| r.is_running()).map(|r| r.name()).collect();
        SchedulerStopped { error: error.as_deref(), still_running: &still_running }.emit();
    }
}

/// Wake-ups that come sooner than this after a woken run started are
/// folded into one run: under a steady stream the job runs a few times a
/// second over many batches' work, not once per batch (each run costs its
/// claims and marks whatever it finds).
pub const WAKE_SPACING: Duration = Duration::from_millis(200);

/// Runs the job whenever it is woken, until shutdown; a wake that finds a run
/// going waits for it and runs again, so no new work waits for the next tick.
async fn wake_loop(runner: Arc<JobRunner>, notify: Arc<tokio::sync::Notify>, shutdown: Shutdown) {
    let mut last_start: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = shutdown.wait() => return,
        }
        if let Some(due) = last_start.map(|t| t + WAKE_SPACING).filter(|due| *due > Instant::now()) {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = shutdown.wait() => return,
            }
        }
        loop {
            last_start = Some(Instant::now());
            let r = runner.clone();
            match tokio::task::spawn_blocking(move || r.run(Trigger::Wake)).await {
                Ok(RunOutcome::SkippedOverlap) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => break,
            }
            if shutdown.is_triggered() {
                return;
            }
        }
    }
}
