//! The embedded scheduler: runs every registered [`Job`] on its cron
//! expression (6 fields, seconds first, UTC) with tokio-cron-scheduler.
//!
//! Every run goes through [`JobRunner::run`], which keeps the rules in one
//! place: a run never overlaps itself (the tick is skipped and counted), an
//! exclusive job first takes its lease in `job_leases` (one copy per tick),
//! every run is recorded in `job_runs`, and a panicking job is recorded as
//! failed and runs again at its next tick.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::config::{parse_cron, Settings};
use crate::db::{self, job_leases, job_runs, DbConnection, Pool};
use crate::handler::Wakers;
use crate::lease;
use crate::metrics;
use crate::notifier::Notifier;
use crate::shutdown::Shutdown;
use crate::supervisor::Supervisor;

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
    pub notifier: Box<dyn Notifier>,
    /// This copy's identity in `job_leases` and notification claims.
    pub holder: String,
    /// The consumer thread's supervisor (absent when Kafka is disabled or for `jobs run`).
    pub supervisor: Option<Arc<Mutex<Supervisor>>>,
    pub shutdown: Shutdown,
    /// When a cron tick last started a run (any job): the scheduler's pulse.
    pub last_tick: Mutex<Option<Instant>>,
    /// Leases held by the runs going on, by job.
    pub leases: lease::Held,
}

impl JobContext {
    pub fn new(
        settings: Arc<Settings>,
        pool: Pool,
        supervisor: Option<Arc<Mutex<Supervisor>>>,
        shutdown: Shutdown,
    ) -> Self {
        JobContext {
            notifier: crate::notifier::from_settings(&settings),
            settings,
            pool,
            holder: holder_id(),
            supervisor,
            shutdown,
            last_tick: Mutex::new(None),
            leases: lease::Held::default(),
        }
    }

    /// Runs `write` in one transaction that first checks the lease the run
    /// of `job` holds, if it holds one: a run that lost its lease writes nothing.
    pub fn fenced<T>(
        &self,
        job: &str,
        conn: &mut DbConnection,
        write: impl FnOnce(&mut DbConnection) -> Result<T, db::DbError>,
    ) -> Result<T, JobError> {
        use diesel::Connection as _;
        let lease = self.leases.get(job);
        let done = conn.transaction::<_, db::DbError, _>(|c| {
            if let Some(l) = &lease {
                if !job_leases::holds(c, l)? {
                    return Ok(None);
                }
            }
            write(c).map(Some)
        })?;
        done.ok_or_else(|| JobError::LeaseLost(job.to_string()))
    }

    /// Time since the scheduler last ticked; `None` before the first tick.
    pub fn since_tick(&self) -> Option<Duration> {
        self.last_tick.lock().ok().and_then(|t| t.map(|t| t.elapsed()))
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
    /// The cron expression (6 fields, seconds first, UTC).
    fn schedule(&self, settings: &Settings) -> String;
    /// Blocking body; runs on tokio's blocking pool.
    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError>;
    /// Whether only one copy of the service may run it per tick (lease).
    /// Jobs about this process itself (supervision) say no.
    fn exclusive(&self) -> bool {
        true
    }
    /// Whether its runs are recorded in `job_runs`. Jobs that must run while
    /// the database is away (supervision) say no: they never wait for it.
    fn recorded(&self) -> bool {
        true
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Tick,
    /// Woken by new work (e.g. new notifications); no lease needed.
    Wake,
    /// `cronsumer jobs run NAME`.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Ok(JobReport),
    Failed(String),
    /// The previous run is still going.
    SkippedOverlap,
    /// Another copy holds the lease for this tick.
    SkippedLease,
}

pub struct JobRunner {
    job: Arc<dyn Job>,
    ctx: Arc<JobContext>,
    running: AtomicBool,
    lease_for: Duration,
}

/// Frees the overlap guard however the run ends.
struct Running<'a>(&'a AtomicBool);
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The interval between the next two occurrences of `cron` (for lease length).
pub fn period_of(cron: &str) -> Duration {
    let Ok(c) = parse_cron(cron) else {
        return Duration::from_secs(60);
    };
    let now = Utc::now();
    match c.find_next_occurrence(&now, false).and_then(|a| c.find_next_occurrence(&a, false).map(|b| (a, b))) {
        Ok((a, b)) => (b - a).to_std().unwrap_or(Duration::from_secs(60)),
        Err(_) => Duration::from_secs(60),
    }
}

/// The next time `cron` fires after now.
pub fn next_run(cron: &str) -> Option<chrono::DateTime<Utc>> {
    parse_cron(cron).ok()?.find_next_occurrence(&Utc::now(), false).ok()
}

impl JobRunner {
    pub fn new(job: Arc<dyn Job>, ctx: Arc<JobContext>) -> Self {
        // Held for half a period: long enough that no other copy runs the same
        // tick, short enough that a copy that died hands over by the next one.
        let lease_for = (period_of(&job.schedule(&ctx.settings)) / 2).max(Duration::from_secs(1));
        JobRunner { job, ctx, running: AtomicBool::new(false), lease_for }
    }

    pub fn name(&self) -> &'static str {
        self.job.name()
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Runs the job once under the guard, lease and ledger rules.
    pub fn run(&self, trigger: Trigger) -> RunOutcome {
        let name = self.job.name();
        let m = metrics::get();
        if trigger == Trigger::Tick {
            if let Ok(mut t) = self.ctx.last_tick.lock() {
                *t = Some(Instant::now());
            }
        }
        if self.running.swap(true, Ordering::SeqCst) {
            m.job_runs.with_label_values(&[name, "skipped_overlap"]).inc();
            if trigger == Trigger::Tick {
                log::warn!("job={name} tick skipped: the previous run is still going");
            }
            return RunOutcome::SkippedOverlap;
        }
        let _guard = Running(&self.running);
        let ctx = &self.ctx;
        // Wake-ups can come many times a second under load: they take no lease,
        // are counted in the metrics, and enter the ledger only when they fail.
        let ledger = trigger != Trigger::Wake && self.job.recorded();
        let exclusive = self.job.exclusive() && trigger == Trigger::Tick;
        let mut run_id = None;
        let mut held = None;
        if ledger || exclusive {
            let mut conn = match ctx.pool.get() {
                Ok(c) => c,
                Err(e) => {
                    m.job_runs.with_label_values(&[name, "failed"]).inc();
                    log::error!("job={name} cannot start: database unavailable: {e}");
                    return RunOutcome::Failed(format!("database unavailable: {e}"));
                }
            };
            if exclusive {
                match job_leases::acquire(&mut conn, name, &ctx.holder, self.lease_for) {
                    Ok(Some(l)) => held = Some(l),
                    Ok(None) => {
                        m.job_runs.with_label_values(&[name, "skipped_lease"]).inc();
                        log::debug!("job={name} tick skipped: another copy holds the lease");
                        return RunOutcome::SkippedLease;
                    }
                    Err(e) => {
                        m.job_runs.with_label_values(&[name, "failed"]).inc();
                        log::error!("job={name} cannot take its lease: {e}");
                        return RunOutcome::Failed(format!("cannot take lease: {e}"));
                    }
                }
            }
            if ledger {
                run_id = start_run(&mut conn, name, &ctx.holder);
            }
            // The job gets its own connections; this one is only for the lease and ledger.
        }
        let keeper = held.map(|l| {
            ctx.leases.insert(l.clone());
            lease::Keeper::start(ctx.pool.clone(), l, self.lease_for)
        });
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| self.job.run(ctx)));
        if let Some(k) = keeper {
            k.stop();
            ctx.leases.remove(name);
        }
        let elapsed = started.elapsed();
        let outcome = match result {
            Ok(Ok(report)) => RunOutcome::Ok(report),
            Ok(Err(e)) => RunOutcome::Failed(e.to_string()),
            Err(panic) => RunOutcome::Failed(format!("panicked: {}", crate::router::panic_message(panic.as_ref()))),
        };
        let (label, error, details) = match &outcome {
            RunOutcome::Ok(r) => ("ok", None, Some(r.details.as_str())),
            RunOutcome::Failed(e) => ("failed", Some(e.as_str()), None),
            _ => unreachable!("skips return early"),
        };
        m.job_runs.with_label_values(&[name, label]).inc();
        m.job_duration.with_label_values(&[name]).observe(elapsed.as_secs_f64());
        match &outcome {
            RunOutcome::Failed(e) => {
                log::error!("job={name} failed after {} ms: {e}", elapsed.as_millis())
            }
            RunOutcome::Ok(r) if !r.details.is_empty() => {
                log::info!("job={name} ok in {} ms: {}", elapsed.as_millis(), r.details)
            }
            _ => log::debug!("job={name} ok in {} ms", elapsed.as_millis()),
        }
        let run_id = match (run_id, &outcome) {
            (None, RunOutcome::Failed(_)) if !ledger && self.job.recorded() => {
                ctx.pool.get().ok().and_then(|mut c| start_run(&mut c, name, &ctx.holder))
            }
            _ => run_id,
        };
        if let Some(id) = run_id {
            let recorded = ctx
                .pool
                .get()
                .map_err(db::DbError::Pool)
                .and_then(|mut c| job_runs::finish(&mut c, id, label, error, details));
            if let Err(e) = recorded {
                log::warn!("job={name} outcome not recorded: {e}");
            }
        }
        outcome
    }
}

fn start_run(conn: &mut db::DbConnection, name: &str, holder: &str) -> Option<i64> {
    match job_runs::start(conn, name, holder) {
        Ok(id) => Some(id),
        Err(e) => {
            log::warn!("job={name} run not recorded: {e}");
            None
        }
    }
}

/// The running scheduler; [`Scheduler::stop`] ends it.
pub struct Scheduler {
    inner: tokio_cron_scheduler::JobScheduler,
    runners: Vec<Arc<JobRunner>>,
}

impl Scheduler {
    /// Registers every job on its cron expression, plus wake-ups for the jobs
    /// that have a waker, and starts ticking.
    pub async fn start(jobs: Vec<Arc<dyn Job>>, ctx: Arc<JobContext>, wakers: &Wakers) -> Result<Scheduler, JobError> {
        let inner = tokio_cron_scheduler::JobScheduler::new().await.map_err(|e| JobError::Other(e.to_string()))?;
        let mut runners = Vec::new();
        for job in jobs {
            let cron = job.schedule(&ctx.settings);
            let runner = Arc::new(JobRunner::new(job, ctx.clone()));
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
            log::info!("scheduled job={} cron={cron:?}", runner.name());
            runners.push(runner);
        }
        inner.start().await.map_err(|e| JobError::Other(e.to_string()))?;
        Ok(Scheduler { inner, runners })
    }

    pub fn runners(&self) -> &[Arc<JobRunner>] {
        &self.runners
    }

    /// Stops new ticks, then waits (up to `timeout`) for running jobs to finish.
    pub async fn stop(mut self, deadline: Instant) {
        if let Err(e) = self.inner.shutdown().await {
            log::warn!("scheduler shutdown: {e}");
        }
        while self.runners.iter().any(|r| r.is_running()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for r in self.runners.iter().filter(|r| r.is_running()) {
            log::warn!("job={} still running at shutdown timeout", r.name());
        }
    }
}

/// Runs the job whenever it is woken, until shutdown; a wake that finds a run
/// going waits for it and runs again, so no new work waits for the next tick.
async fn wake_loop(runner: Arc<JobRunner>, notify: Arc<tokio::sync::Notify>, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = shutdown.wait() => return,
        }
        loop {
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
