//! The predictions module's events: model calls, the model server's
//! breaker, predictions stored and records the model refused.

use std::time::Duration;

use super::Event;
use crate::common::metrics;

/// A model server call came back (or failed to).
pub struct ModelCalled<'a> {
    /// The HTTP status, or `timeout`, `connection`.
    pub status: &'a str,
    pub records: usize,
    pub latency: Duration,
    /// The answer says the service is set up wrong.
    pub misconfigured: bool,
}

impl Event for ModelCalled<'_> {
    fn emit(self) {
        let m = metrics::get();
        m.model_calls.with_label_values(&[self.status]).inc();
        m.model_latency.observe(self.latency.as_secs_f64());
        m.model_misconfigured.set(i64::from(self.misconfigured));
        if self.misconfigured {
            log::error!(
                "event=model_misconfigured status={} records={} why=\"check PREDICT_URL, PREDICT_MODEL and PREDICT_AUTH_TOKEN\"",
                self.status,
                self.records
            );
        } else {
            log::debug!(
                "event=model_called status={} records={} latency_ms={}",
                self.status,
                self.records,
                self.latency.as_millis()
            );
        }
    }
}

/// The model server's breaker opened after failures in a row, or closed again.
pub struct ModelBreakerChanged {
    pub open: bool,
    pub failures_in_a_row: u32,
    pub cool_off: Duration,
}

impl Event for ModelBreakerChanged {
    fn emit(self) {
        metrics::get().model_breaker_open.set(i64::from(self.open));
        if self.open {
            log::warn!(
                "event=model_breaker_open failures_in_a_row={} cool_off_ms={}",
                self.failures_in_a_row,
                self.cool_off.as_millis()
            );
        } else {
            log::info!("event=model_breaker_closed why=\"the model server answers again\"");
        }
    }
}

/// A batch's predictions were written, and the records the model refused
/// dead-lettered, in the batch's transaction (counted as it is about to
/// commit: a batch rolled back after it, which is rare, counts again).
pub struct PredictionsMade<'a> {
    pub topic: &'a str,
    pub stored: usize,
    pub refused: usize,
    pub calls: usize,
}

impl Event for PredictionsMade<'_> {
    fn emit(self) {
        let m = metrics::get();
        m.predictions.inc_by(self.stored as u64);
        m.model_refused_records.inc_by(self.refused as u64);
        if self.refused > 0 {
            log::warn!(
                "event=model_refused_records topic={} records={} stored={} calls={} why=\"dead-lettered with the model's answer\"",
                self.topic,
                self.refused,
                self.stored,
                self.calls
            );
        }
    }
}
