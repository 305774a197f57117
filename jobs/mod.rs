//! Scheduled jobs, one per file: the list below registers every job the
//! embedded scheduler runs. To add a periodic task, add a file next to this
//! one implementing `cronsumer::scheduler::Job` and one line to `registry()`.

use crate::config::Settings;

/// Every scheduled job with its cron expression (6 fields, seconds first, UTC).
pub fn registry(_settings: &Settings) -> Vec<(&'static str, String)> {
    // Filled by the scheduler issue (send_notifications, maintenance, supervise_consumer).
    Vec::new()
}
