//! Every metric the service exports, named in one place, registered in one
//! registry and rendered as Prometheus text on `/metrics`.

use std::sync::LazyLock;

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub records_consumed: IntCounterVec,
    pub batches: IntCounter,
    pub batch_size: Histogram,
    pub handler_errors: IntCounterVec,
    pub handler_panics: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub reused_positions: IntCounterVec,
    pub offset_resets: IntCounterVec,
    pub unrouted_records: IntCounterVec,
    pub commits: IntCounter,
    pub commit_errors: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub consumer_restarts: IntCounterVec,
    pub assigned_partitions: IntGauge,
    pub consumer_up: IntGaugeVec,
    pub batch_retrying_seconds: Gauge,
    pub lane_busy_seconds: CounterVec,
    pub lane_batches: IntCounterVec,
    pub lane_records: IntCounterVec,
    pub lane_in_hand: IntGaugeVec,
    pub partitions_paused: IntGaugeVec,
    pub job_overdue_seconds: GaugeVec,
    pub http_connections_dropped: IntCounterVec,
    pub job_runs: IntCounterVec,
    pub job_duration: HistogramVec,
    pub notifications: IntCounterVec,
    pub webhook_in_flight: IntGauge,
    pub webhook_latency: Histogram,
    pub webhook_breaker_open: IntGauge,
    pub db_pool_connections: IntGaugeVec,
    pub price_fetches: IntCounterVec,
    pub outbox_published: IntCounter,
    pub outbox_publish_errors: IntCounter,
    pub outbox_pending: IntGauge,
    pub duplicate_records: IntCounterVec,
    pub price_moving_average: GaugeVec,
    pub model_calls: IntCounterVec,
    pub model_latency: Histogram,
    pub model_breaker_open: IntGauge,
    pub model_misconfigured: IntGauge,
    pub predictions: IntCounter,
    pub model_refused_records: IntCounter,
}

/// Registers a newly made metric and hands it back (names are fixed here,
/// so an invalid or repeated one is a bug, found at the first metric used).
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, made: prometheus::Result<M>) -> M {
    let m = made.expect("valid metric");
    r.register(Box::new(m.clone())).expect("metric registered once");
    m
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help))
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let batch_size = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new("cronsumer_batch_size", "Records per handled batch")
                    .buckets(vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
            ),
        );
        let webhook_latency = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new("cronsumer_webhook_latency_seconds", "Time from a webhook call to its answer")
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            ),
        );
        let job_duration = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new("cronsumer_job_duration_seconds", "Duration of scheduled job runs")
                    .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]),
                &["job_name"],
            ),
        );
        let consumer_lag = register(
            &r,
            IntGaugeVec::new(
                Opts::new("cronsumer_consumer_lag", "High watermark minus committed offset, per partition"),
                &["topic", "partition"],
            ),
        );
        let assigned_partitions = gauge(&r, "cronsumer_assigned_partitions", "Partitions assigned to this copy");
        let db_pool_connections = register(
            &r,
            IntGaugeVec::new(
                Opts::new("cronsumer_db_pool_connections", "Database pool connections by state"),
                &["state"],
            ),
        );
        let batch_retrying_seconds = register(
            &r,
            Gauge::new(
                "cronsumer_batch_retrying_seconds",
                "How long the batch in hand has been retrying (0 when none is)",
            ),
        );
        let job_overdue_seconds = register(
            &r,
            GaugeVec::new(
                Opts::new(
                    "cronsumer_job_overdue_seconds",
                    "How long past its due tick a job has not started (0: on time)",
                ),
                &["job_name"],
            ),
        );
        Metrics {
            // Labelled by group so that it is absent, not 0, with KAFKA_ENABLED=false.
            consumer_up: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "cronsumer_consumer_up",
                        "1 while the consumer thread runs and has polled within CONSUMER_STALL_TIMEOUT_MS",
                    ),
                    &["group"],
                ),
            ),
            batch_retrying_seconds,
            lane_busy_seconds: register(
                &r,
                CounterVec::new(
                    Opts::new("cronsumer_lane_busy_seconds_total", "Time each lane spent on its batches"),
                    &["lane"],
                ),
            ),
            lane_batches: counter_vec(&r, "cronsumer_lane_batches_total", "Batches each lane finished", &["lane"]),
            lane_records: counter_vec(&r, "cronsumer_lane_records_total", "Records of the batches each lane finished", &["lane"]),
            lane_in_hand: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("cronsumer_lane_records_in_hand", "Records each lane holds: waiting, in hand and in flight"),
                    &["lane"],
                ),
            ),
            partitions_paused: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "cronsumer_partition_paused",
                        "1 for each partition an operator paused (it stays paused until resumed)",
                    ),
                    &["topic", "partition"],
                ),
            ),
            job_overdue_seconds,
            http_connections_dropped: counter_vec(
                &r,
                "cronsumer_http_connections_dropped_total",
                "HTTP connections closed at the limit: evicted (the oldest without a request, for a newcomer) or refused (all were serving requests)",
                &["reason"],
            ),
            records_consumed: counter_vec(
                &r,
                "cronsumer_records_consumed_total",
                "Records handled and committed",
                &["topic"],
            ),
            batches: counter(&r, "cronsumer_batches_total", "Batches handled and committed"),
            batch_size,
            handler_errors: counter_vec(
                &r,
                "cronsumer_handler_errors_total",
                "Transient handler failures (batch retried)",
                &["topic"],
            ),
            handler_panics: counter_vec(
                &r,
                "cronsumer_handler_panics_total",
                "Handler panics caught at the batch boundary",
                &["topic"],
            ),
            dead_letters: counter_vec(
                &r,
                "cronsumer_dead_letters_total",
                "Records rejected into dead_letters",
                &["topic"],
            ),
            reused_positions: counter_vec(
                &r,
                "cronsumer_reused_positions_total",
                "Records at a source position that already held a different record (topic deleted and recreated)",
                &["topic"],
            ),
            offset_resets: counter_vec(
                &r,
                "cronsumer_offset_resets_total",
                "Partitions whose log changed under the stored offset (topic recreated or truncated): read again from where it restarted",
                &["topic"],
            ),
            unrouted_records: counter_vec(
                &r,
                "cronsumer_unrouted_records_total",
                "Records of topics without a consumer module",
                &["topic"],
            ),
            commits: counter(&r, "cronsumer_commits_total", "Successful offset commits"),
            commit_errors: counter(&r, "cronsumer_commit_errors_total", "Failed offset commits"),
            consumer_lag,
            consumer_restarts: counter_vec(
                &r,
                "cronsumer_consumer_restarts_total",
                "Consumer thread restarts by cause",
                &["cause"],
            ),
            assigned_partitions,
            job_runs: counter_vec(&r, "cronsumer_job_runs_total", "Scheduled job runs by outcome", &["job_name", "outcome"]),
            job_duration,
            notifications: counter_vec(
                &r,
                "cronsumer_notifications_total",
                "Notification delivery attempts by result",
                &["result"],
            ),
            webhook_in_flight: gauge(&r, "cronsumer_webhook_in_flight", "Webhook calls under way"),
            webhook_latency,
            webhook_breaker_open: gauge(
                &r,
                "cronsumer_webhook_breaker_open",
                "1 while the webhook's circuit breaker is open (no calls are made)",
            ),
            db_pool_connections,
            price_fetches: counter_vec(
                &r,
                "cronsumer_price_fetches_total",
                "Market-data provider fetches by result (ok, or the kind of non-answer)",
                &["result"],
            ),
            outbox_published: counter(&r, "cronsumer_outbox_published_total", "Outbox rows delivered to Kafka"),
            outbox_publish_errors: counter(
                &r,
                "cronsumer_outbox_publish_errors_total",
                "Outbox rows not delivered on an attempt (sent again later)",
            ),
            outbox_pending: gauge(&r, "cronsumer_outbox_pending", "Outbox rows waiting to be published"),
            duplicate_records: counter_vec(
                &r,
                "cronsumer_duplicate_records_total",
                "Records dead-lettered because they repeat an event (raw_response_id) stored already",
                &["topic"],
            ),
            price_moving_average: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "cronsumer_price_moving_average",
                        "Simple moving average of each symbol's last PRICE_SMA_WINDOW prices",
                    ),
                    &["symbol"],
                ),
            ),
            model_calls: counter_vec(&r, "cronsumer_model_calls_total", "Model server calls by HTTP status (or timeout, connection)", &["status"]),
            model_latency: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("cronsumer_model_latency_seconds", "Time from a model call to its answer")
                        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                ),
            ),
            model_breaker_open: gauge(
                &r,
                "cronsumer_model_breaker_open",
                "1 while the model server's circuit breaker is open (no calls are made)",
            ),
            model_misconfigured: gauge(
                &r,
                "cronsumer_model_misconfigured",
                "1 while the model server's last answer says the service is set up wrong (401, 403, 404, 405, a redirect)",
            ),
            predictions: counter(&r, "cronsumer_predictions_total", "Predictions stored"),
            model_refused_records: counter(
                &r,
                "cronsumer_model_refused_records_total",
                "Records the model refused (or gave no usable prediction for): dead-lettered",
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn get() -> &'static Metrics {
    &METRICS
}

/// A counter's values by the value of its label `label` (the console's
/// lanes busy, model calls by answer): every value seen so far, none named twice.
pub fn counters_by(c: &impl prometheus::core::Collector, label: &str) -> std::collections::BTreeMap<String, f64> {
    let families = c.collect();
    let metrics = families.iter().flat_map(|f| f.get_metric());
    metrics
        .filter_map(|m| {
            let value = m.get_label().iter().find(|l| l.name() == label)?.value().to_string();
            Some((value, m.get_counter().get_value()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use prometheus::{IntCounterVec, Opts};

    #[test]
    fn counters_by_label_name_every_value_seen() {
        let calls = IntCounterVec::new(Opts::new("calls", "calls"), &["status"]).unwrap();
        calls.with_label_values(&["500"]).inc_by(2);
        calls.with_label_values(&["timeout"]).inc();
        let by = super::counters_by(&calls, "status");
        assert_eq!(by.into_iter().collect::<Vec<_>>(), [("500".to_string(), 2.0), ("timeout".to_string(), 1.0)]);
        assert!(super::counters_by(&calls, "lane").is_empty(), "no such label");
    }
}
