//! Delivery's events: notifications and the webhook.

use super::Event;
use crate::common::metrics;

/// What became of notification deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationResult {
    Sent,
    /// Failed; another attempt is scheduled.
    Retried,
    /// Not attempted: the webhook's breaker is open.
    Deferred,
    /// Failed for good.
    Failed,
}

impl NotificationResult {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationResult::Sent => "sent",
            NotificationResult::Retried => "retried",
            NotificationResult::Deferred => "deferred",
            NotificationResult::Failed => "failed",
        }
    }
}

/// Notifications delivered (marked `sent`) or deferred, counted by the group.
pub struct NotificationsDone {
    pub result: NotificationResult,
    pub count: usize,
}

impl Event for NotificationsDone {
    fn emit(self) {
        metrics::get().notifications.with_label_values(&[self.result.as_str()]).inc_by(self.count as u64);
    }
}

/// One delivery attempt failed: retried at `retry_at`, or failed for good.
pub struct NotificationAttemptFailed<'a> {
    pub id: i64,
    pub attempt: i32,
    pub retry_at: Option<String>,
    pub error: &'a str,
}

impl Event for NotificationAttemptFailed<'_> {
    fn emit(self) {
        let result = if self.retry_at.is_some() { NotificationResult::Retried } else { NotificationResult::Failed };
        NotificationsDone { result, count: 1 }.emit();
        let level = if self.retry_at.is_some() { log::Level::Warn } else { log::Level::Error };
        log::log!(
            level,
            "event=notification_attempt_failed id={} attempt={} result={} retry_at={} error={:?}",
            self.id,
            self.attempt,
            result.as_str(),
            self.retry_at.as_deref().unwrap_or("-"),
            self.error
        );
    }
}

/// The log notifier's delivery: one line per notification.
pub struct NotificationLogged<'a> {
    pub id: i64,
    pub users: &'a str,
    pub event: &'a str,
    pub message: &'a str,
}

impl Event for NotificationLogged<'_> {
    fn emit(self) {
        log::info!("notify id={} users={} event={} message={:?}", self.id, self.users, self.event, self.message);
    }
}

/// A webhook call starts; [`WebhookCalled`] ends it.
pub struct WebhookCalling;

impl Event for WebhookCalling {
    fn emit(self) {
        metrics::get().webhook_in_flight.inc();
    }
}

/// A webhook call ended, after `elapsed`.
pub struct WebhookCalled {
    pub elapsed: std::time::Duration,
}

impl Event for WebhookCalled {
    fn emit(self) {
        let m = metrics::get();
        m.webhook_latency.observe(self.elapsed.as_secs_f64());
        m.webhook_in_flight.dec();
    }
}

/// The webhook's breaker opened after failures in a row, or closed again.
pub struct BreakerChanged {
    pub open: bool,
    pub failures_in_a_row: u32,
    pub cool_off: std::time::Duration,
}

impl Event for BreakerChanged {
    fn emit(self) {
        metrics::get().webhook_breaker_open.set(i64::from(self.open));
        if self.open {
            log::warn!(
                "event=webhook_breaker_open failures_in_a_row={} cool_off_ms={}",
                self.failures_in_a_row,
                self.cool_off.as_millis()
            );
        } else {
            log::info!("event=webhook_breaker_closed why=\"the endpoint answers again\"");
        }
    }
}
