//! Notifiers deliver one notification each: `log` writes a line, `webhook`
//! POSTs it as JSON with an idempotency key. Each answer is one of three
//! outcomes, so the sender knows whether to mark it sent, retry, or give up.
//!
//! Webhook answers: 2xx is delivered. A redirect (3xx) is not followed, since
//! following would turn the POST into a GET without the body (or repeat a
//! POST to an address nobody configured); it fails for good, naming the
//! `Location` to put in `NOTIFY_WEBHOOK_URL`. 408, 425, 429 and 5xx are
//! retried, no sooner than their `Retry-After` says; other 4xx fail for good.
//! After [`BREAKER_FAILURES`] retryable failures in a row the endpoint's
//! breaker opens for `NOTIFY_BREAKER_COOL_OFF_MS`: no calls, and the rows
//! wait without spending attempts.

use std::time::Duration;

use crate::common::backoff::parse_retry_after;
use crate::common::breaker::Breaker;
use crate::config::{NotifierKind, Settings};
use crate::db::notifications::Notification;
use crate::events::{BreakerChanged, Event as _, NotificationLogged, WebhookCalled, WebhookCalling};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Worth another attempt later (5xx, 429, timeout, connection refused),
    /// not before `after` when the receiver said so (`Retry-After`).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Will never work (4xx, a redirect): give up now.
    Failed(String),
    /// Not attempted (the endpoint's breaker is open): try again after this.
    Deferred(Duration),
}

impl Delivery {
    pub fn retry(error: impl Into<String>) -> Delivery {
        Delivery::Retry { error: error.into(), after: None }
    }
}

pub trait Notifier: Send + Sync {
    fn deliver(&self, n: &Notification) -> Delivery;
    /// Deliveries worth running at once.
    fn parallelism(&self) -> usize {
        1
    }
    /// Whether a delivery can wait on something outside the process (the
    /// network): the sender then delivers on worker threads, so that it keeps
    /// renewing its claims and marking rows sent while one is in flight.
    fn waits(&self) -> bool {
        true
    }
}

/// The idempotency key a receiver can use to drop repeats of one notification.
pub fn idempotency_key(n: &Notification) -> String {
    match (&n.source_topic, n.source_partition, n.source_offset) {
        (Some(t), Some(p), Some(o)) => format!("{t}-{p}-{o}"),
        _ => format!("notification-{}", n.id),
    }
}

/// The JSON body a webhook receives.
pub fn body(n: &Notification) -> serde_json::Value {
    let users: serde_json::Value = serde_json::from_str(&n.users).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": n.id,
        "idempotency_key": idempotency_key(n),
        "users": users,
        "event": n.event,
        "message": n.message,
        "attempt": n.attempts + 1,
        "created_at": n.created_at.and_utc().to_rfc3339(),
    })
}

pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn deliver(&self, n: &Notification) -> Delivery {
        NotificationLogged { id: n.id, users: &n.users, event: &n.event, message: &n.message }.emit();
        Delivery::Sent
    }

    fn waits(&self) -> bool {
        false
    }
}

pub struct WebhookNotifier {
    agent: ureq::Agent,
    url: String,
    parallelism: usize,
    breaker: Breaker,
}

/// Failures in a row (retryable answers, timeouts, refused connections)
/// that open the webhook's breaker.
pub const BREAKER_FAILURES: u32 = 5;

/// How long one webhook call may take before it counts as a timeout (retried).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

impl WebhookNotifier {
    pub fn new(url: &str, parallelism: usize, breaker_cool_off: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(WEBHOOK_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(parallelism.max(10))
            .max_idle_connections_per_host(parallelism.max(1))
            .build()
            .into();
        WebhookNotifier {
            agent,
            url: url.to_string(),
            parallelism: parallelism.max(1),
            breaker: Breaker::new(BREAKER_FAILURES, breaker_cool_off),
        }
    }

    fn post(&self, n: &Notification) -> Delivery {
        let result = self.agent.post(&self.url).header("Idempotency-Key", idempotency_key(n)).send_json(body(n));
        match result {
            Ok(mut resp) => {
                let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let (location, retry_after) = (header("location"), header("retry-after"));
                // Reading the (small) body returns the connection to the pool for reuse.
                let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
                classify(resp.status().as_u16(), location.as_deref(), retry_after.as_deref())
            }
            // Transport errors may quote the URL, whose path is often the credential.
            Err(e) => Delivery::retry(format!(
                "webhook call failed: {}",
                crate::config::redact::scrub(&e.to_string(), std::slice::from_ref(&self.url))
            )),
        }
    }
}

/// What an HTTP answer means for a delivery.
pub fn classify(status: u16, location: Option<&str>, retry_after: Option<&str>) -> Delivery {
    match status {
        200..=299 => Delivery::Sent,
        300..=399 => Delivery::Failed(format!(
            "webhook answered HTTP {status} redirecting to {}: a POST is not redirected; set NOTIFY_WEBHOOK_URL to \
             the final address",
            location.unwrap_or("(no Location)")
        )),
        408 | 425 | 429 | 500..=599 => Delivery::Retry {
            error: format!("webhook answered HTTP {status}"),
            after: retry_after.and_then(parse_retry_after),
        },
        _ => Delivery::Failed(format!("webhook answered HTTP {status}")),
    }
}

impl Notifier for WebhookNotifier {
    fn deliver(&self, n: &Notification) -> Delivery {
        if let Err(wait) = self.breaker.admit() {
            return Delivery::Deferred(wait);
        }
        WebhookCalling.emit();
        let started = std::time::Instant::now();
        let delivery = self.post(n);
        WebhookCalled { elapsed: started.elapsed() }.emit();
        // Any answer but a retryable one shows the endpoint works.
        if let Some(c) = self.breaker.record(!matches!(delivery, Delivery::Retry { .. })) {
            BreakerChanged { open: c.open, failures_in_a_row: c.failures_in_a_row, cool_off: c.cool_off }.emit();
        }
        delivery
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }
}

/// The notifier `NOTIFIER` names.
pub fn from_settings(settings: &Settings) -> Box<dyn Notifier> {
    match (settings.notifier, &settings.notify_webhook_url) {
        (NotifierKind::Webhook, Some(url)) => {
            Box::new(WebhookNotifier::new(url, settings.notify_concurrency, settings.notify_breaker_cool_off))
        }
        _ => Box::new(LogNotifier),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(204, None, None), Delivery::Sent);
        let Delivery::Failed(e) = classify(301, Some("https://x/hook"), None) else { panic!("301 is not final") };
        assert!(e.contains("301") && e.contains("https://x/hook"), "{e}");
        assert!(matches!(classify(308, None, None), Delivery::Failed(_)));
        for status in [408, 425, 429, 500, 503] {
            assert!(matches!(classify(status, None, None), Delivery::Retry { after: None, .. }), "{status}");
        }
        assert_eq!(
            classify(429, None, Some("7")),
            Delivery::Retry { error: "webhook answered HTTP 429".into(), after: Some(Duration::from_secs(7)) }
        );
        for status in [400, 401, 404, 410, 422] {
            assert!(matches!(classify(status, None, None), Delivery::Failed(_)), "{status}");
        }
    }
}
