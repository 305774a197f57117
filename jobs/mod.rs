//! Scheduled jobs, one per file: the list below registers every job the
//! embedded scheduler runs. To add a periodic task, add a file next to this
//! one implementing `cronsumer::scheduler::Job` and one line to `registry()`.

pub mod fetch_prices;
pub mod maintenance;
pub mod publish_outbox;
pub mod send_notifications;
pub mod supervise_consumer;

use std::sync::Arc;

use crate::scheduler::Job;

/// Every scheduled job; each brings its own cron expression.
pub fn registry() -> Vec<Arc<dyn Job>> {
    vec![
        Arc::new(send_notifications::SendNotifications),
        Arc::new(maintenance::Maintenance5m),
        Arc::new(maintenance::Maintenance15m),
        Arc::new(supervise_consumer::SuperviseConsumer),
        Arc::new(fetch_prices::FetchPrices),
        Arc::new(publish_outbox::PublishOutbox::default()),
    ]
}
