//! `send_notifications` (`NOTIFICATIONS_CRON`, default every 30 s, and woken
//! by the consumer whenever it stores new notifications): claims due rows in
//! chunks without writing them (on PostgreSQL a session advisory lock per
//! row, so copies send side by side and a copy that dies frees its rows at
//! once; on SQLite the job's lease, taken on every run, makes one sender per
//! database), delivers them through the notifier (up to its parallelism at
//! once, `NOTIFY_CONCURRENCY` for the webhook), and writes each row once,
//! when its delivery ends: `sent`, a retry scheduled with exponential
//! backoff (no sooner than a `Retry-After`), or `failed` after
//! `NOTIFICATIONS_MAX_ATTEMPTS`. Those writes are batched: within
//! [`MARK_EVERY`] of a delivery and at each chunk's end, in one fenced
//! transaction. Rows not attempted (a stop, an open breaker) are let go
//! unwritten. Drains everything that is due. A crash resends at most the
//! deliveries in flight and those delivered in the last [`MARK_EVERY`].

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::notifier::{Delivery, Notifier};
use crate::common::backoff::Backoff;
use crate::config::cron::{CronError, Schedule};
use crate::config::{Backend, Settings};
use crate::db::notifications::{Notification, Outcome};
use crate::db::{self, notifications, DbConnection};
use crate::events::{Event as _, NotificationAttemptFailed, NotificationResult, NotificationsDone};
use crate::schedule::{Job, JobContext, JobError, JobReport};

/// The job, with the notifier it delivers through (one per process: the
/// webhook's breaker outlives each run).
pub struct SendNotifications {
    notifier: Box<dyn Notifier>,
    /// SQLite: one sender per database, by the job's lease on every run.
    leased: bool,
}

impl SendNotifications {
    pub fn new(settings: &Settings) -> Self {
        let leased = Backend::of_url(&settings.database_url).is_ok_and(|b| b == Backend::Sqlite);
        SendNotifications { notifier: super::notifier::from_settings(settings), leased }
    }
}

pub const NAME: &str = "send_notifications";

/// Rows claimed per round trip.
const CHUNK: i64 = 200;
/// Longest delay between attempts.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// Longest time a delivered row waits to be marked `sent`.
pub const MARK_EVERY: Duration = Duration::from_millis(250);

/// When attempt number `attempts` (1-based, just failed) should be retried.
pub fn retry_delay(settings: &Settings, attempts: i32) -> Duration {
    Backoff::delay_for(settings.notifications_retry_base, RETRY_MAX, attempts.max(1) as u32 - 1)
}

/// A run's connection: the claims it holds (advisory locks of its
/// session) are let go when it is dropped, whatever ended the run, before
/// the connection goes back to the pool.
struct Claiming(db::Conn);

impl Drop for Claiming {
    fn drop(&mut self) {
        let _ = notifications::unclaim_all(&mut self.0);
    }
}

impl Deref for Claiming {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        &self.0
    }
}

impl DerefMut for Claiming {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.0
    }
}

impl Job for SendNotifications {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schedule(&self, settings: &Settings) -> Result<Schedule, CronError> {
        Ok(settings.notifications_cron.clone())
    }

    fn wakeable(&self) -> bool {
        true
    }

    fn exclusive(&self) -> bool {
        self.leased
    }

    fn lease_every_run(&self) -> bool {
        self.leased
    }

    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let mut conn = Claiming(ctx.db()?);
        // Retry and defer times are the database's: copies whose clocks
        // disagree still agree on when a row is due.
        let skew = db::clock(&mut conn)? - db::now();
        let mut tally = Tally::default();
        let mut outcomes = Outcomes::default();
        while !ctx.shutdown.is_triggered() {
            let rows = notifications::claim_due(&mut conn, CHUNK)?;
            if rows.is_empty() {
                break;
            }
            let finished = deliver_chunk(ctx, &*self.notifier, &mut conn, &rows, skew, &mut outcomes, &mut tally)?;
            outcomes.flush(ctx, &mut conn, &mut tally)?;
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            notifications::unclaim(&mut conn, &ids)?;
            // An open breaker defers every row: the rest waits for the next run.
            // A short chunk was all that was due (rows stored since wake the job again).
            if !finished || tally.deferred > 0 || (rows.len() as i64) < CHUNK {
                break;
            }
        }
        let mut report = if tally.sent + tally.retried + tally.failed == 0 {
            String::new()
        } else {
            format!("sent={} retried={} failed={}", tally.sent, tally.retried, tally.failed)
        };
        if tally.deferred > 0 {
            report = format!("{report} deferred={} (webhook breaker open)", tally.deferred).trim().to_string();
        }
        Ok(JobReport::new(report))
    }
}

#[derive(Default)]
struct Tally {
    sent: usize,
    retried: usize,
    failed: usize,
    /// Not attempted: the endpoint's breaker was open.
    deferred: usize,
}

/// What a chunk's delivery loop waits for next.
enum Next {
    Delivered(usize, Delivery),
    /// Nothing finished within a tick: time to write what waits.
    Idle,
    Done,
}

/// Delivers one claimed chunk, `parallelism` at a time on worker threads
/// (on this thread when a delivery never waits), recording each outcome on
/// this thread and writing them every [`MARK_EVERY`]. Stops early at
/// shutdown, leaving the rows not attempted unwritten; returns false then.
fn deliver_chunk(
    ctx: &JobContext,
    notifier: &dyn Notifier,
    conn: &mut DbConnection,
    rows: &[Notification],
    skew: chrono::Duration,
    outcomes: &mut Outcomes,
    tally: &mut Tally,
) -> Result<bool, JobError> {
    let stop = AtomicBool::new(false);
    let attempted = vec![false; rows.len()];
    let mut chunk = Chunk { ctx, conn, rows, skew, outcomes, tally, attempted, stop: &stop };
    let recorded = if !notifier.waits() {
        // Deliveries that never wait run here, one at a time: a worker thread
        // and a channel hand-off per row would cost more than the delivery.
        let mut i = 0;
        chunk.record_all(|| {
            let Some(n) = rows.get(i).filter(|_| !stop.load(Ordering::SeqCst)) else { return Next::Done };
            i += 1;
            Next::Delivered(i - 1, notifier.deliver(n))
        })
    } else {
        let (workers, next) = (notifier.parallelism().clamp(1, rows.len()), AtomicUsize::new(0));
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<(usize, Delivery)>();
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, stop) = (&next, &stop);
                scope.spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(n) = rows.get(i) else { break };
                        if tx.send((i, notifier.deliver(n))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let result = chunk.record_all(|| match rx.recv_timeout(MARK_EVERY / 5) {
                Ok((i, delivery)) => Next::Delivered(i, delivery),
                Err(mpsc::RecvTimeoutError::Timeout) => Next::Idle,
                Err(mpsc::RecvTimeoutError::Disconnected) => Next::Done,
            });
            // On an error, no new delivery starts; those in flight end on their own.
            stop.store(true, Ordering::SeqCst);
            result
        })
    };
    recorded?;
    Ok(chunk.attempted.iter().all(|a| *a))
}

/// One chunk's delivery, as its outcomes come in.
struct Chunk<'a> {
    ctx: &'a JobContext,
    conn: &'a mut DbConnection,
    rows: &'a [Notification],
    /// The database's clock minus this machine's.
    skew: chrono::Duration,
    outcomes: &'a mut Outcomes,
    tally: &'a mut Tally,
    attempted: Vec<bool>,
    /// Set when no further delivery may start.
    stop: &'a AtomicBool,
}

impl Chunk<'_> {
    /// Records each outcome `next` gives until it is done; between them,
    /// stops deliveries at shutdown and writes what waited [`MARK_EVERY`].
    fn record_all(&mut self, mut next: impl FnMut() -> Next) -> Result<(), JobError> {
        let ctx = self.ctx;
        loop {
            match next() {
                Next::Delivered(i, delivery) => {
                    self.attempted[i] = true;
                    let now = db::now() + self.skew;
                    outcome(ctx, &self.rows[i], delivery, now, self.outcomes, self.tally);
                }
                Next::Idle => {}
                Next::Done => return Ok(()),
            }
            if ctx.shutdown.is_triggered() {
                self.stop.store(true, Ordering::SeqCst);
            }
            if self.outcomes.since.is_some_and(|t| t.elapsed() >= MARK_EVERY) {
                self.outcomes.flush(ctx, self.conn, self.tally)?;
            }
        }
    }
}

/// Outcomes not written yet, and since when the oldest waits.
#[derive(Default)]
struct Outcomes {
    rows: Vec<(i64, Outcome)>,
    since: Option<Instant>,
}

impl Outcomes {
    fn push(&mut self, id: i64, outcome: Outcome) {
        self.since.get_or_insert_with(Instant::now);
        self.rows.push((id, outcome));
    }

    /// Writes them in one transaction, fenced by the run's lease (SQLite;
    /// on PostgreSQL the rows' locks are held on this session): the one
    /// write of each row after its insert.
    fn flush(&mut self, ctx: &JobContext, conn: &mut DbConnection, tally: &mut Tally) -> Result<(), JobError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        ctx.fenced(NAME, conn, |c| notifications::record(c, &self.rows))?;
        let sent = self.rows.iter().filter(|(_, o)| *o == Outcome::Sent).count();
        if sent > 0 {
            tally.sent += sent;
            NotificationsDone { result: NotificationResult::Sent, count: sent }.emit();
        }
        self.rows.clear();
        self.since = None;
        Ok(())
    }
}

/// One delivery's outcome, to be written: sent, a retry with backoff, or
/// failed for good; a deferral (the breaker open) writes nothing.
fn outcome(
    ctx: &JobContext,
    n: &Notification,
    delivery: Delivery,
    now: chrono::NaiveDateTime,
    outcomes: &mut Outcomes,
    tally: &mut Tally,
) {
    let max_attempts = ctx.settings.notifications_max_attempts as i32;
    match delivery {
        Delivery::Sent => outcomes.push(n.id, Outcome::Sent),
        Delivery::Retry { error, after } if n.attempts + 1 < max_attempts => {
            let delay = retry_delay(&ctx.settings, n.attempts + 1).max(after.unwrap_or_default()).min(RETRY_MAX);
            let at = db::after(now, delay);
            tally.retried += 1;
            let retry_at = Some(at.to_string());
            NotificationAttemptFailed { id: n.id, attempt: n.attempts + 1, retry_at, error: &error }.emit();
            outcomes.push(n.id, Outcome::Retry { error, at });
        }
        Delivery::Deferred(_) => {
            tally.deferred += 1;
            NotificationsDone { result: NotificationResult::Deferred, count: 1 }.emit();
        }
        Delivery::Retry { error, .. } | Delivery::Failed(error) => {
            tally.failed += 1;
            NotificationAttemptFailed { id: n.id, attempt: n.attempts + 1, retry_at: None, error: &error }.emit();
            outcomes.push(n.id, Outcome::Failed { error });
        }
    }
}
