//! The market-data producer's events: fetches, the outbox, repeated events.

use std::time::Duration;

use super::Event;
use crate::common::metrics;

/// A provider fetch ended: with a price (`failure: None`), or with the kind
/// of non-answer and why. Either way its answer is stored.
pub struct PriceFetched<'a> {
    pub symbol: &'a str,
    pub failure: Option<(&'static str, &'a str)>,
}

impl Event for PriceFetched<'_> {
    fn emit(self) {
        let result = self.failure.map_or("ok", |(kind, _)| kind);
        metrics::get().price_fetches.with_label_values(&[result]).inc();
        match self.failure {
            None => log::debug!("event=price_fetched symbol={} result=ok", self.symbol),
            Some((kind, why)) => {
                log::warn!("event=price_fetched symbol={} result={kind} error={why:?}", self.symbol)
            }
        }
    }
}

/// Outbox rows the broker confirmed, now marked published.
pub struct OutboxPublished {
    pub rows: usize,
}

impl Event for OutboxPublished {
    fn emit(self) {
        metrics::get().outbox_published.inc_by(self.rows as u64);
        log::debug!("event=outbox_published rows={}", self.rows);
    }
}

/// Outbox rows not delivered this time; they stay and are sent again.
pub struct OutboxFailed<'a> {
    pub rows: usize,
    pub retry_in: Duration,
    pub error: &'a str,
}

impl Event for OutboxFailed<'_> {
    fn emit(self) {
        metrics::get().outbox_publish_errors.inc_by(self.rows as u64);
        log::warn!(
            "event=outbox_failed rows={} retry_in_ms={} error={:?}",
            self.rows,
            self.retry_in.as_millis(),
            self.error
        );
    }
}

/// Records whose event identity was stored already (a re-published outbox
/// row): dead-lettered as repeats, so the event counts once.
pub struct DuplicatesRejected<'a> {
    pub topic: &'a str,
    pub records: usize,
}

impl Event for DuplicatesRejected<'_> {
    fn emit(self) {
        metrics::get().duplicate_records.with_label_values(&[self.topic]).inc_by(self.records as u64);
        log::info!("event=duplicates_rejected topic={} records={}", self.topic, self.records);
    }
}
