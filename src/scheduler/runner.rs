//! One job's runs: [`JobRunner::run`] keeps the rules in one place (no
//! overlap, the lease for exclusive jobs, the ledger, panics caught), and
//! remembers the last run for the web console and the overdue metric.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Job, JobContext, JobReport, Trigger};
use crate::config::parse_cron;
use crate::db::{self, job_leases, job_runs};
use crate::lease;
use crate::metrics;

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
    cron: String,
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
        let cron = job.schedule(&ctx.settings);
        let lease_for = (period_of(&cron) / 2).max(Duration::from_secs(1));
        JobRunner {
            job,
            ctx,
            cron,
            running: AtomicBool::new(false),
            lease_for,
            last_tick: Mutex::new(Utc::now()),
            last_run: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &'static str {
        self.job.name()
    }

    pub fn schedule(&self) -> &str {
        &self.cron
    }

    pub fn last_run(&self) -> Option<LastRun> {
        self.last_run.lock().ok().and_then(|r| r.clone())
    }

    /// The next tick after now.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        next_run(&self.cron)
    }

    /// How long past its due tick the job has not started here: the first
    /// occurrence after the last tick that started a run is due, and now is
    /// later. A run still going, or ticks skipped for overlap, count as late.
    pub fn overdue(&self, now: DateTime<Utc>) -> Duration {
        let Ok(since) = self.last_tick.lock().map(|t| *t) else { return Duration::ZERO };
        let due = parse_cron(&self.cron).ok().and_then(|c| c.find_next_occurrence(&since, false).ok());
        due.and_then(|due| (now - due).to_std().ok()).unwrap_or(Duration::ZERO)
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
        if trigger == Trigger::Tick {
            if let Ok(mut t) = self.last_tick.lock() {
                *t = Utc::now();
            }
        }
        let started_at = Utc::now();
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
        if let Ok(mut last) = self.last_run.lock() {
            *last = Some(LastRun {
                started: started_at,
                duration: elapsed,
                trigger,
                outcome: label,
                detail: error.or(details).unwrap_or_default().to_string(),
            });
        }
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
