//! Notifiers deliver one notification each: `log` writes a line, `webhook`
//! POSTs it as JSON with an idempotency key. Each answer is one of three
//! outcomes, so the sender knows whether to mark it sent, retry, or give up.

use std::time::Duration;

use crate::config::{NotifierKind, Settings};
use crate::db::notifications::Notification;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Worth another attempt later (5xx, timeout, connection refused).
    Retry(String),
    /// Will never work (4xx): give up now.
    Failed(String),
}

pub trait Notifier: Send + Sync {
    fn deliver(&self, n: &Notification) -> Delivery;
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
        log::info!("notify id={} users={} event={} message={:?}", n.id, n.users, n.event, n.message);
        Delivery::Sent
    }
}

pub struct WebhookNotifier {
    agent: ureq::Agent,
    url: String,
}

/// How long one webhook call may take before it counts as a timeout (retried).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

impl WebhookNotifier {
    pub fn new(url: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(WEBHOOK_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        WebhookNotifier { agent, url: url.to_string() }
    }
}

impl Notifier for WebhookNotifier {
    fn deliver(&self, n: &Notification) -> Delivery {
        let result = self.agent.post(&self.url).header("Idempotency-Key", idempotency_key(n)).send_json(body(n));
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                // Reading the (small) body returns the connection to the pool for reuse.
                let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
                match status {
                    200..=299 => Delivery::Sent,
                    400..=499 => Delivery::Failed(format!("webhook answered HTTP {status}")),
                    _ => Delivery::Retry(format!("webhook answered HTTP {status}")),
                }
            }
            Err(e) => Delivery::Retry(format!("webhook call failed: {e}")),
        }
    }
}

/// The notifier `NOTIFIER` names.
pub fn from_settings(settings: &Settings) -> Box<dyn Notifier> {
    match (settings.notifier, &settings.notify_webhook_url) {
        (NotifierKind::Webhook, Some(url)) => Box::new(WebhookNotifier::new(url)),
        _ => Box::new(LogNotifier),
    }
}
