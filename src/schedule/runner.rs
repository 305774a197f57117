//! One job's runs: [`JobRunner::run`] keeps the rules in one place (no
//! overlap, the lease for exclusive jobs, the ledger, panics caught), and
//! remembers the last run for the web console and the overdue metric.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Job, JobContext, JobError, JobReport, Trigger};
use crate::common::locks::lock;
use crate::config::cron::Schedule;
use crate::db::{self, job_leases, job_runs};
use crate::events::{Event as _, JobFinished, JobOutcome, RunNotRecorded};
use crate::schedule::lease;

/// A finished run, as this copy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    pub started: DateTime<Utc>,
    pub duration: Duration,
    pub trigger: Trigger,
    /// `ok` or `failed`.
    pub outcome: &'static str,
    pub detail: String,
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
    schedule: Schedule,
    running: AtomicBool,
    lease_for: Duration,
    /// When a tick last started a run here (at first: when the runner was made).
    last_tick: Mutex<DateTime<Utc>>,
    last_run: Mutex<Option<LastRun>>,
}

/// Frees the overlap guard however the run ends.
struct Running<'a>(&'a AtomicBool);
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl JobRunner {
    /// A runner for `job` on its schedule, which must parse.
    pub fn new(job: Arc<dyn Job>, ctx: Arc<JobContext>) -> Result<Self, JobError> {
        let schedule = job
            .schedule(&ctx.settings)
            .map_err(|e| JobError::Other(format!("job {} has a bad schedule: expected {e}", job.name())))?;
        // Held for half a period: long enough that no other copy runs the same
        // tick, short enough that a copy that died hands over by the next one.
        let lease_for = (schedule.period() / 2).max(Duration::from_secs(1));
        Ok(JobRunner {
            job,
            ctx,
            schedule,
            running: AtomicBool::new(false),
            lease_for,
            last_tick: Mutex::new(Utc::now()),
            last_run: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &'static str {
        self.job.name()
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn last_run(&self) -> Option<LastRun> {
        lock(&self.last_run).clone()
    }

    /// The next tick after now.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        self.schedule.next_after(Utc::now())
    }

    /// How long past its due tick the job has not started here: the first
    /// occurrence after the last tick that started a run is due, and now is
    /// later. A run still going, or ticks skipped for overlap, count as late.
    pub fn overdue(&self, now: DateTime<Utc>) -> Duration {
        let since = *lock(&self.last_tick);
        self.schedule.next_after(since).and_then(|due| (now - due).to_std().ok()).unwrap_or(Duration::ZERO)
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Runs the job once under the guard, lease and ledger rules.
    pub fn run(&self, trigger: Trigger) -> RunOutcome {
        let name = self.job.name();
        let skipped = |outcome, detail: &str| {
            JobFinished { job: name, trigger: trigger.as_str(), outcome, elapsed: None, detail }.emit()
        };
        if trigger == Trigger::Tick {
            *lock(&self.ctx.last_tick) = Some(Instant::now());
        }
        if self.running.swap(true, Ordering::SeqCst) {
            skipped(JobOutcome::SkippedOverlap, "the previous run is still going");
            return RunOutcome::SkippedOverlap;
        }
        let _guard = Running(&self.running);
        if trigger == Trigger::Tick {
            *lock(&self.last_tick) = Utc::now();
        }
        let started_at = Utc::now();
        let ctx = &self.ctx;
        // Wake-ups can come many times a second under load: they take no lease
        // (unless the job leases every run), are counted in the metrics, and
        // enter the ledger only when they fail.
        let ledger = trigger != Trigger::Wake && self.job.recorded();
        let exclusive = self.job.exclusive() && (trigger == Trigger::Tick || self.job.lease_every_run());
        let mut run_id = None;
        let mut held = None;
        if ledger || exclusive {
            let mut conn = match ctx.pool.get() {
                Ok(c) => c,
                Err(e) => {
                    let why = format!("database unavailable: {e}");
                    skipped(JobOutcome::Failed, &why);
                    return RunOutcome::Failed(why);
                }
            };
            if exclusive {
                match job_leases::acquire(&mut conn, name, &ctx.holder, self.lease_for) {
                    Ok(Some(l)) => held = Some(l),
                    Ok(None) => {
                        skipped(JobOutcome::SkippedLease, "another copy holds the lease");
                        return RunOutcome::SkippedLease;
                    }
                    Err(e) => {
                        let why = format!("cannot take lease: {e}");
                        skipped(JobOutcome::Failed, &why);
                        return RunOutcome::Failed(why);
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
            // A job leased on every run gives its lease up when done, so that
            // a copy woken next does not wait for it to expire.
            k.stop(self.job.lease_every_run());
            ctx.leases.remove(name);
        }
        let elapsed = started.elapsed();
        let outcome = match result {
            Ok(Ok(report)) => RunOutcome::Ok(report),
            Ok(Err(e)) => RunOutcome::Failed(e.to_string()),
            Err(panic) => RunOutcome::Failed(format!("panicked: {}", crate::common::panic_message(panic.as_ref()))),
        };
        let (label, error, details) = match &outcome {
            RunOutcome::Ok(r) => (JobOutcome::Ok, None, Some(r.details.as_str())),
            RunOutcome::Failed(e) => (JobOutcome::Failed, Some(e.as_str()), None),
            _ => unreachable!("skips return early"),
        };
        let detail = error.or(details).unwrap_or_default();
        *lock(&self.last_run) = Some(LastRun {
            started: started_at,
            duration: elapsed,
            trigger,
            outcome: label.as_str(),
            detail: detail.to_string(),
        });
        JobFinished { job: name, trigger: trigger.as_str(), outcome: label, elapsed: Some(elapsed), detail }.emit();
        let label = label.as_str();
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
                RunNotRecorded { job: name, error: &e.to_string() }.emit();
            }
        }
        outcome
    }
}

fn start_run(conn: &mut db::DbConnection, name: &str, holder: &str) -> Option<i64> {
    match job_runs::start(conn, name, holder) {
        Ok(id) => Some(id),
        Err(e) => {
            RunNotRecorded { job: name, error: &e.to_string() }.emit();
            None
        }
    }
}
