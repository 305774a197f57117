//! `send_notifications` (`NOTIFICATIONS_CRON`, default every 30 s, and woken
//! by the consumer whenever it stores new notifications): claims due rows in
//! chunks, delivers each through the notifier, and marks it `sent`, schedules
//! a retry with exponential backoff, or marks it `failed` after
//! `NOTIFICATIONS_MAX_ATTEMPTS`. Drains everything that is due.

use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::db::{self, notifications};
use crate::metrics;
use crate::notifier::Delivery;
use crate::scheduler::{Job, JobContext, JobError, JobReport};

pub struct SendNotifications;

pub const NAME: &str = "send_notifications";

/// Rows claimed per round trip.
const CHUNK: i64 = 200;
/// How long a claim lasts; a sender that dies mid-chunk hands its rows over after this.
const CLAIM_FOR: Duration = Duration::from_secs(300);
/// Deliveries stop this long before the claim ends, so no row is ever sent
/// after its claim could have passed to another copy (one webhook timeout + margin).
const CLAIM_MARGIN: Duration = Duration::from_secs(30);
/// Longest delay between attempts.
const RETRY_MAX: Duration = Duration::from_secs(3600);

/// When attempt number `attempts` (1-based, just failed) should be retried.
pub fn retry_delay(settings: &Settings, attempts: i32) -> Duration {
    Backoff::delay_for(settings.notifications_retry_base, RETRY_MAX, attempts.max(1) as u32 - 1)
}

impl Job for SendNotifications {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schedule(&self, settings: &Settings) -> String {
        settings.notifications_cron.clone()
    }

    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let m = metrics::get();
        let max_attempts = ctx.settings.notifications_max_attempts as i32;
        let (mut sent, mut retried, mut failed) = (0usize, 0usize, 0usize);
        let mut conn = ctx.pool.get().map_err(db::DbError::Pool)?;
        // Rows a crashed sender left claimed are due again once their claim expired.
        let requeued = notifications::requeue_expired(&mut conn)?;
        if requeued > 0 {
            log::warn!("requeued {requeued} notification(s) whose claim expired");
        }
        'chunks: loop {
            if ctx.shutdown.is_triggered() {
                break;
            }
            let claimed_at = Instant::now();
            let rows = notifications::claim_due(
                &mut conn,
                &ctx.holder,
                CHUNK,
                db::now() + chrono::Duration::from_std(CLAIM_FOR).unwrap_or_default(),
            )?;
            if rows.is_empty() {
                break;
            }
            let mut delivered = Vec::with_capacity(rows.len());
            for (i, n) in rows.iter().enumerate() {
                if claimed_at.elapsed() + CLAIM_MARGIN >= CLAIM_FOR || ctx.shutdown.is_triggered() {
                    let rest: Vec<i64> = rows[i..].iter().map(|r| r.id).collect();
                    notifications::mark_sent_many(&mut conn, &delivered, &ctx.holder)?;
                    sent += delivered.len();
                    notifications::release(&mut conn, &rest, &ctx.holder)?;
                    break 'chunks;
                }
                match ctx.notifier.deliver(n) {
                    Delivery::Sent => delivered.push(n.id),
                    Delivery::Retry(error) if n.attempts + 1 < max_attempts => {
                        let at = db::now()
                            + chrono::Duration::from_std(retry_delay(&ctx.settings, n.attempts + 1))
                                .unwrap_or_default();
                        log::warn!(
                            "notification id={} attempt={} failed, retry at {at}: {error}",
                            n.id,
                            n.attempts + 1
                        );
                        notifications::mark_attempt_failed(&mut conn, n.id, &ctx.holder, &error, Some(at))?;
                        retried += 1;
                        m.notifications.with_label_values(&["retried"]).inc();
                    }
                    Delivery::Retry(error) | Delivery::Failed(error) => {
                        log::error!(
                            "notification id={} failed for good after attempt {}: {error}",
                            n.id,
                            n.attempts + 1
                        );
                        notifications::mark_attempt_failed(&mut conn, n.id, &ctx.holder, &error, None)?;
                        failed += 1;
                        m.notifications.with_label_values(&["failed"]).inc();
                    }
                }
            }
            notifications::mark_sent_many(&mut conn, &delivered, &ctx.holder)?;
            sent += delivered.len();
            m.notifications.with_label_values(&["sent"]).inc_by(delivered.len() as u64);
        }
        Ok(JobReport::new(if sent + retried + failed == 0 {
            String::new()
        } else {
            format!("sent={sent} retried={retried} failed={failed}")
        }))
    }
}
