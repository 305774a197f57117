//! `send_notifications` (`NOTIFICATIONS_CRON`, default every 30 s, and woken
//! by the consumer whenever it stores new notifications): claims due rows in
//! chunks, delivers them through the notifier (up to its parallelism at once,
//! `NOTIFY_CONCURRENCY` for the webhook), and marks each `sent` within
//! [`MARK_EVERY`] of its delivery, schedules a retry with exponential backoff
//! (no sooner than a `Retry-After`), or marks it `failed` after
//! `NOTIFICATIONS_MAX_ATTEMPTS`. Drains everything that is due. A crash
//! resends at most the deliveries in flight and those delivered in the last
//! [`MARK_EVERY`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::cron::{CronError, Schedule};
use crate::db::notifications::Notification;
use crate::db::{self, notifications, DbConnection};
use crate::events::{Event as _, NotificationAttemptFailed, NotificationResult, NotificationsDone};
use crate::notifier::Delivery;
use crate::scheduler::{Job, JobContext, JobError, JobReport};

pub struct SendNotifications;

pub const NAME: &str = "send_notifications";

/// Rows claimed per round trip.
const CHUNK: i64 = 200;
/// How long a claim lasts unless renewed; a sender that died hands its rows
/// over after this (the next run requeues them).
const CLAIM_FOR: Duration = Duration::from_secs(30);
/// How often a sender renews the claims of the chunk it delivers.
const CLAIM_RENEW_EVERY: Duration = Duration::from_secs(10);
/// Deliveries stop this long before the claim ends, so no row is ever sent
/// after its claim could have passed to another copy (one webhook timeout + margin).
const CLAIM_MARGIN: Duration = Duration::from_secs(15);
/// Longest delay between attempts.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// Longest time a delivered row waits to be marked `sent`.
pub const MARK_EVERY: Duration = Duration::from_millis(250);

/// When attempt number `attempts` (1-based, just failed) should be retried.
pub fn retry_delay(settings: &Settings, attempts: i32) -> Duration {
    Backoff::delay_for(settings.notifications_retry_base, RETRY_MAX, attempts.max(1) as u32 - 1)
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

    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let mut conn = ctx.db()?;
        // Rows a crashed sender left claimed are due again once their claim expired.
        let requeued = notifications::requeue_expired(&mut conn)?;
        if requeued > 0 {
            log::warn!("requeued {requeued} notification(s) whose claim expired");
        }
        let mut tally = Tally::default();
        while !ctx.shutdown.is_triggered() {
            let claimed_at = Instant::now();
            let rows = notifications::claim_due(&mut conn, &ctx.holder, CHUNK, CLAIM_FOR)?;
            if rows.is_empty() {
                break;
            }
            let finished = deliver_chunk(ctx, &mut conn, &rows, claimed_at, &mut tally)?;
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

/// Delivers one claimed chunk, `parallelism` at a time, recording each
/// outcome on this thread's connection and renewing the chunk's claims
/// every [`CLAIM_RENEW_EVERY`]. Stops early, releasing the rows not
/// attempted, at shutdown or when the claim nears its end unrenewed;
/// returns false then.
fn deliver_chunk(
    ctx: &JobContext,
    conn: &mut DbConnection,
    rows: &[Notification],
    mut claimed_at: Instant,
    tally: &mut Tally,
) -> Result<bool, JobError> {
    let notifier = &*ctx.notifier;
    let workers = notifier.parallelism().clamp(1, rows.len());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut attempted = vec![false; rows.len()];
    let recorded = std::thread::scope(|scope| {
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
        let mut marks = Marks::default();
        let result = (|| {
            loop {
                match rx.recv_timeout(MARK_EVERY / 5) {
                    Ok((i, delivery)) => {
                        attempted[i] = true;
                        record(ctx, conn, &rows[i], delivery, &mut marks, tally)?;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if claimed_at.elapsed() >= CLAIM_RENEW_EVERY {
                    // Renewed from the database's clock; if that fails, the margin below stops us in time.
                    match notifications::renew_claims(conn, &ctx.holder, CLAIM_FOR) {
                        Ok(_) => claimed_at = Instant::now(),
                        Err(e) => log::warn!("cannot renew notification claims: {e}"),
                    }
                }
                if claimed_at.elapsed() + CLAIM_MARGIN >= CLAIM_FOR || ctx.shutdown.is_triggered() {
                    stop.store(true, Ordering::SeqCst);
                }
                marks.flush_if_due(conn, &ctx.holder, tally)?;
            }
            marks.flush(conn, &ctx.holder, tally)
        })();
        // On an error, no new delivery starts; those in flight end on their own.
        stop.store(true, Ordering::SeqCst);
        result
    });
    recorded?;
    let rest: Vec<i64> = rows.iter().zip(&attempted).filter(|(_, a)| !**a).map(|(r, _)| r.id).collect();
    if rest.is_empty() {
        return Ok(true);
    }
    notifications::release(conn, &rest, &ctx.holder, db::now())?;
    Ok(false)
}

/// Delivered rows not marked `sent` yet, and since when the oldest waits.
#[derive(Default)]
struct Marks {
    ids: Vec<i64>,
    since: Option<Instant>,
}

impl Marks {
    fn push(&mut self, id: i64) {
        self.since.get_or_insert_with(Instant::now);
        self.ids.push(id);
    }

    fn flush_if_due(&mut self, conn: &mut DbConnection, holder: &str, tally: &mut Tally) -> Result<(), JobError> {
        match self.since {
            Some(t) if t.elapsed() >= MARK_EVERY => self.flush(conn, holder, tally),
            _ => Ok(()),
        }
    }

    fn flush(&mut self, conn: &mut DbConnection, holder: &str, tally: &mut Tally) -> Result<(), JobError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        notifications::mark_sent_many(conn, &self.ids, holder)?;
        tally.sent += self.ids.len();
        NotificationsDone { result: NotificationResult::Sent, count: self.ids.len() }.emit();
        self.ids.clear();
        self.since = None;
        Ok(())
    }
}

/// Records one delivery's outcome: sent (marked with the next group), a
/// retry with backoff, or failed for good.
fn record(
    ctx: &JobContext,
    conn: &mut DbConnection,
    n: &Notification,
    delivery: Delivery,
    marks: &mut Marks,
    tally: &mut Tally,
) -> Result<(), JobError> {
    let max_attempts = ctx.settings.notifications_max_attempts as i32;
    match delivery {
        Delivery::Sent => marks.push(n.id),
        Delivery::Retry { error, after } if n.attempts + 1 < max_attempts => {
            let delay = retry_delay(&ctx.settings, n.attempts + 1).max(after.unwrap_or_default()).min(RETRY_MAX);
            let at = db::after(db::now(), delay);
            notifications::mark_attempt_failed(conn, n.id, &ctx.holder, &error, Some(at))?;
            tally.retried += 1;
            let retry_at = Some(at.to_string());
            NotificationAttemptFailed { id: n.id, attempt: n.attempts + 1, retry_at, error: &error }.emit();
        }
        Delivery::Deferred(wait) => {
            let at = db::after(db::now(), wait);
            notifications::release(conn, &[n.id], &ctx.holder, at)?;
            tally.deferred += 1;
            NotificationsDone { result: NotificationResult::Deferred, count: 1 }.emit();
        }
        Delivery::Retry { error, .. } | Delivery::Failed(error) => {
            notifications::mark_attempt_failed(conn, n.id, &ctx.holder, &error, None)?;
            tally.failed += 1;
            NotificationAttemptFailed { id: n.id, attempt: n.attempts + 1, retry_at: None, error: &error }.emit();
        }
    }
    Ok(())
}
