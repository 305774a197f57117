//! The console's history, in memory: one [`Sample`] every [`EVERY`] for
//! the last hour ([`KEPT`] samples), each of at most [`PARTITIONS_KEPT`]
//! partitions and one figure per lane, so it stays under a few MiB however
//! long the service runs. Rates come from the counters of `/metrics`; a
//! restart of the process starts it afresh.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike as _, Utc};
use prometheus::core::Collector;
use serde::Serialize;

use crate::common::metrics;

pub const EVERY: Duration = Duration::from_secs(10);
/// One hour of samples.
pub const KEPT: usize = 360;
/// Partitions per sample, at most: those furthest behind.
pub const PARTITIONS_KEPT: usize = 64;

/// One partition at one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    /// Records not handled yet (the broker's high watermark minus the committed offset).
    pub lag: i64,
    /// How old the oldest record not handled yet is (see [`seconds_behind`]).
    pub seconds_behind: Option<f64>,
}

/// What the service did over one interval, and its state at its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub records_per_s: f64,
    pub partitions: Vec<PartitionSample>,
    /// The share of the interval each lane worked on a batch (0 to 1).
    pub lanes_busy: Vec<f64>,
    pub notifications_sent_per_min: f64,
    pub notifications_failed_per_min: f64,
    /// Notification rows by status at the sample (empty: the database did not answer).
    pub notifications_by_status: BTreeMap<String, i64>,
    /// Calls to the model server per minute, and their mean latency;
    /// `None` while the predictions module is off.
    pub model_calls_per_min: Option<f64>,
    pub model_latency_ms: Option<f64>,
}

/// How far behind a partition is, in seconds: 0 when its lag is 0; else
/// the age of the oldest record not handled yet, which is the oldest of it
/// in memory (records are handled in offset order). `None` when its lag is
/// above 0 but none of it is in memory (paused, or not fetched yet).
pub fn seconds_behind(lag: i64, oldest_in_memory_ms: Option<i64>, now: DateTime<Utc>) -> Option<f64> {
    if lag <= 0 {
        return Some(0.0);
    }
    let oldest = oldest_in_memory_ms?;
    Some(((now.timestamp_millis() - oldest) as f64 / 1000.0).max(0.0))
}

/// The counters the rates come from, at one instant.
#[derive(Debug, Clone, Default)]
struct Counters {
    records: f64,
    lanes_busy: BTreeMap<String, f64>,
    sent: f64,
    failed: f64,
    model_calls: f64,
    model_seconds: f64,
}

impl Counters {
    fn now() -> Counters {
        let m = metrics::get();
        let sum = |c: &dyn Collector| -> f64 {
            let metrics = c.collect();
            metrics.iter().flat_map(|f| f.get_metric()).map(|m| m.get_counter().get_value()).sum()
        };
        let notifications = |result: &str| m.notifications.with_label_values(&[result]).get() as f64;
        Counters {
            records: sum(&m.records_consumed),
            lanes_busy: metrics::counters_by(&m.lane_busy_seconds, "lane"),
            sent: notifications("sent"),
            failed: notifications("failed"),
            model_calls: m.model_latency.get_sample_count() as f64,
            model_seconds: m.model_latency.get_sample_sum(),
        }
    }
}

/// What a sample is made of besides the counters.
pub struct Readings {
    pub lanes: usize,
    pub partitions: Vec<PartitionSample>,
    pub notifications_by_status: BTreeMap<String, i64>,
    pub model_on: bool,
}

#[derive(Default)]
pub struct History {
    samples: VecDeque<Sample>,
    last: Option<(Instant, Counters)>,
}

impl History {
    /// Takes a sample (the first call only sets the counters' start).
    pub fn sample(&mut self, mut r: Readings) {
        let (now, counters) = (Instant::now(), Counters::now());
        let Some((then, before)) = self.last.replace((now, counters.clone())) else { return };
        let secs = now.saturating_duration_since(then).as_secs_f64().max(0.001);
        // Three decimals are enough for a chart and keep the JSON short.
        let per_s = |a: f64, b: f64| ((a - b).max(0.0) / secs * 1000.0).round() / 1000.0;
        let lanes_busy = (0..r.lanes)
            .map(|l| {
                let key = l.to_string();
                let busy = counters.lanes_busy.get(&key).copied().unwrap_or_default();
                per_s(busy, before.lanes_busy.get(&key).copied().unwrap_or_default()).min(1.0)
            })
            .collect();
        let model_calls = counters.model_calls - before.model_calls;
        let model_latency_ms = (r.model_on && model_calls > 0.0)
            .then(|| ((counters.model_seconds - before.model_seconds) / model_calls * 1e6).round() / 1000.0);
        // The partitions furthest behind, when there are too many.
        r.partitions
            .sort_by(|a, b| b.lag.cmp(&a.lag).then_with(|| (&a.topic, a.partition).cmp(&(&b.topic, b.partition))));
        r.partitions.truncate(PARTITIONS_KEPT);
        r.partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        if self.samples.len() == KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at: Utc::now().with_nanosecond(0).unwrap_or_else(Utc::now),
            records_per_s: per_s(counters.records, before.records),
            partitions: r.partitions,
            lanes_busy,
            notifications_sent_per_min: per_s(counters.sent, before.sent) * 60.0,
            notifications_failed_per_min: per_s(counters.failed, before.failed) * 60.0,
            notifications_by_status: r.notifications_by_status,
            model_calls_per_min: r.model_on.then(|| per_s(counters.model_calls, before.model_calls) * 60.0),
            model_latency_ms,
        });
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(lag: i64) -> Readings {
        let p = PartitionSample { topic: "t".into(), partition: 0, lag, seconds_behind: Some(0.0) };
        Readings { lanes: 2, partitions: vec![p], notifications_by_status: BTreeMap::new(), model_on: false }
    }

    #[test]
    fn an_hour_is_kept_and_the_first_call_only_starts_the_counters() {
        let mut h = History::default();
        h.sample(readings(0));
        assert!(h.samples().is_empty());
        for i in 0..KEPT + 5 {
            h.sample(readings(i as i64));
        }
        let s = h.samples();
        assert_eq!(s.len(), KEPT);
        assert_eq!(s.first().unwrap().partitions[0].lag, 5, "the oldest went first");
        assert_eq!(s.last().unwrap().lanes_busy.len(), 2);
        assert_eq!(s.last().unwrap().model_calls_per_min, None, "the module is off");
    }

    #[test]
    fn the_partitions_furthest_behind_are_kept() {
        let mut h = History::default();
        h.sample(readings(0));
        let partitions = (0..PARTITIONS_KEPT as i32 + 10)
            .map(|p| PartitionSample { topic: "t".into(), partition: p, lag: p as i64, seconds_behind: None })
            .collect();
        h.sample(Readings { partitions, ..readings(0) });
        let kept = &h.samples()[0].partitions;
        assert_eq!(kept.len(), PARTITIONS_KEPT);
        assert_eq!(kept[0].partition, 10, "the 10 least behind were left out, the rest kept in order");
    }

    #[test]
    fn seconds_behind_is_the_age_of_the_oldest_record_not_handled() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        assert_eq!(seconds_behind(0, Some(1), now), Some(0.0), "caught up");
        assert_eq!(seconds_behind(5, Some(990_500), now), Some(9.5));
        assert_eq!(seconds_behind(5, None, now), None, "none in memory: unknown");
        assert_eq!(seconds_behind(5, Some(2_000_000), now), Some(0.0), "a clock ahead is not negative");
    }
}
