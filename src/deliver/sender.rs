//! `send_notifications` (`NOTIFICATIONS_CRON`, default every 30 s, and woken
//! by the consumer whenever it stores new notifications): claims due rows in
//! chunks, delivers them through the notifier (up to its parallelism at once,
//! `NOTIFY_CONCURRENCY` for the webhook), and marks each `sent` within
//! [`MARK_EVERY`] of its delivery (a chunk's last ones in the transaction
//! that claims the next chunk), schedules a retry with exponential backoff
//! (no sooner than a `Retry-After`), or marks it `failed` after
//! `NOTIFICATIONS_MAX_ATTEMPTS`. Drains everything that is due. A crash
//! resends at most the deliveries in flight and those delivered in the last
//! [`MARK_EVERY`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::notifier::{Delivery, Notifier};
use crate::common::backoff::Backoff;
use crate::config::cron::{CronError, Schedule};
use crate::config::Settings;
use crate::db::notifications::Notification;
use crate::db::{self, notifications, DbConnection};
use crate::events::{ClaimsChanged, Event as _, NotificationAttemptFailed, NotificationResult, NotificationsDone};
use crate::schedule::{Job, JobContext, JobError, JobReport};

/// The job, with the notifier it delivers through (one per process: the
/// webhook's breaker outlives each run).
pub struct SendNotifications {
    notifier: Box<dyn Notifier>,
}

impl SendNotifications {
    pub fn new(settings: &Settings) -> Self {
        SendNotifications { notifier: super::notifier::from_settings(settings) }
    }
}

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
        ClaimsChanged { requeued, renew_error: None }.emit();
        // Retry and defer times are the database's, as claims are: copies
        // whose clocks disagree still agree on when a row is due.
        let skew = db::clock(&mut conn)? - db::now();
        let mut tally = Tally::default();
        let mut marks = Marks::default();
        while !ctx.shutdown.is_triggered() {
            let claimed_at = Instant::now();
            // The last chunk's deliveries are marked in the same transaction.
            let rows = notifications::mark_sent_and_claim_due(&mut conn, &marks.ids, &ctx.holder, CHUNK, CLAIM_FOR)?;
            marks.marked(&mut tally);
            if rows.is_empty() {
                break;
            }
            let finished =
                deliver_chunk(ctx, &*self.notifier, &mut conn, &rows, (claimed_at, skew), &mut marks, &mut tally)?;
            // An open breaker defers every row: the rest waits for the next run.
            // A short chunk was all that was due (rows stored since wake the job again).
            if !finished || tally.deferred > 0 || (rows.len() as i64) < CHUNK {
                break;
            }
        }
        marks.flush(&mut conn, &ctx.holder, &mut tally)?;
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
    /// Nothing finished within a tick; time to look at the claim.
    Idle,
    Done,
}

/// Delivers one claimed chunk, `parallelism` at a time on worker threads
/// (on this thread when a delivery never waits), recording each
/// outcome on this thread's connection and renewing the chunk's claims
/// every [`CLAIM_RENEW_EVERY`]. Stops early, releasing the rows not
/// attempted, at shutdown or when the claim nears its end unrenewed;
/// returns false then. Rows delivered are left in `marks`.
fn deliver_chunk(
    ctx: &JobContext,
    notifier: &dyn Notifier,
    conn: &mut DbConnection,
    rows: &[Notification],
    (claimed_at, skew): (Instant, chrono::Duration),
    marks: &mut Marks,
    tally: &mut Tally,
) -> Result<bool, JobError> {
    let stop = AtomicBool::new(false);
    let attempted = vec![false; rows.len()];
    let mut chunk = Chunk { ctx, conn, rows, claimed_at, skew, marks, tally, attempted, stop: &stop };
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
    let rest: Vec<i64> = rows.iter().zip(&chunk.attempted).filter(|(_, a)| !**a).map(|(r, _)| r.id).collect();
    if rest.is_empty() {
        return Ok(true);
    }
    notifications::release(chunk.conn, &rest, &ctx.holder, db::now() + skew)?;
    Ok(false)
}

/// One chunk's delivery, as its outcomes come in.
struct Chunk<'a> {
    ctx: &'a JobContext,
    conn: &'a mut DbConnection,
    rows: &'a [Notification],
    claimed_at: Instant,
    /// The database's clock minus this machine's.
    skew: chrono::Duration,
    marks: &'a mut Marks,
    tally: &'a mut Tally,
    attempted: Vec<bool>,
    /// Set when no further delivery may start.
    stop: &'a AtomicBool,
}

impl Chunk<'_> {
    /// Records each outcome `next` gives until it is done; between them,
    /// renews the claims, stops deliveries near the claim's end or at
    /// shutdown, and marks what waited [`MARK_EVERY`].
    fn record_all(&mut self, mut next: impl FnMut() -> Next) -> Result<(), JobError> {
        let ctx = self.ctx;
        loop {
            match next() {
                Next::Delivered(i, delivery) => {
                    self.attempted[i] = true;
                    let now = db::now() + self.skew;
                    record(ctx, self.conn, &self.rows[i], delivery, now, self.marks, self.tally)?;
                }
                Next::Idle => {}
                Next::Done => return Ok(()),
            }
            if self.claimed_at.elapsed() >= CLAIM_RENEW_EVERY {
                // Renewed from the database's clock; if that fails, the margin below stops us in time.
                let ids: Vec<i64> = self.rows.iter().map(|r| r.id).collect();
                match notifications::renew_claims(self.conn, &ids, &ctx.holder, CLAIM_FOR) {
                    Ok(_) => self.claimed_at = Instant::now(),
                    Err(e) => ClaimsChanged { requeued: 0, renew_error: Some(&e.to_string()) }.emit(),
                }
            }
            if self.claimed_at.elapsed() + CLAIM_MARGIN >= CLAIM_FOR || ctx.shutdown.is_triggered() {
                self.stop.store(true, Ordering::SeqCst);
            }
            self.marks.flush_if_due(self.conn, &ctx.holder, self.tally)?;
        }
    }
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
        notifications::mark_sent_many(conn, &self.ids, holder)?;
        self.marked(tally);
        Ok(())
    }

    /// The rows held were marked `sent`: counted, reported and let go.
    fn marked(&mut self, tally: &mut Tally) {
        if self.ids.is_empty() {
            return;
        }
        tally.sent += self.ids.len();
        NotificationsDone { result: NotificationResult::Sent, count: self.ids.len() }.emit();
        self.ids.clear();
        self.since = None;
    }
}

/// Records one delivery's outcome: sent (marked with the next group), a
/// retry with backoff, or failed for good.
fn record(
    ctx: &JobContext,
    conn: &mut DbConnection,
    n: &Notification,
    delivery: Delivery,
    now: chrono::NaiveDateTime,
    marks: &mut Marks,
    tally: &mut Tally,
) -> Result<(), JobError> {
    let max_attempts = ctx.settings.notifications_max_attempts as i32;
    match delivery {
        Delivery::Sent => marks.push(n.id),
        Delivery::Retry { error, after } if n.attempts + 1 < max_attempts => {
            let delay = retry_delay(&ctx.settings, n.attempts + 1).max(after.unwrap_or_default()).min(RETRY_MAX);
            let at = db::after(now, delay);
            notifications::mark_attempt_failed(conn, n.id, &ctx.holder, &error, Some(at))?;
            tally.retried += 1;
            let retry_at = Some(at.to_string());
            NotificationAttemptFailed { id: n.id, attempt: n.attempts + 1, retry_at, error: &error }.emit();
        }
        Delivery::Deferred(wait) => {
            let at = db::after(now, wait);
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
