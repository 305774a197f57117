//! (4) produce→row and produce→webhook latency at a low, steady rate.

use std::time::{Duration, Instant};

use cronsumer::config::Settings;
use cronsumer::db::Backend;

use crate::support::*;
use crate::with;

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (p(0.5), p(0.95), p(0.99), v[v.len() - 1])
}

/// (4) produce at 10/s for `secs`; latency to the row (its `created_at`) and to the webhook.
pub fn latency(s: &Settings, batch_timeout_ms: u64, secs: usize) {
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    let sink = Sink::ok();
    let s = with(
        s,
        &tdb.url,
        &[
            ("KAFKA_TOPIC_PREFIX", unique("lat")),
            ("KAFKA_GROUP_ID", unique("bench-lat-")),
            ("CONSUMER_BATCH_TIMEOUT_MS", batch_timeout_ms.to_string()),
            ("NOTIFIER", "webhook".into()),
            ("NOTIFY_WEBHOOK_URL", sink.url.clone()),
        ],
    );
    let (_topics, topic) = registry_topics(&s, 4);
    let svc = Service::start(&s, &tdb.url, &[("RUST_LOG", "warn")]);
    let http = svc.http.clone();
    svc.wait_for("ready", Duration::from_secs(60), || http_get(&http, "/readyz").is_some_and(|(c, _)| c == 200));
    let mut p = cronsumer::kafka::producer::RecordProducer::new(&s).unwrap();
    let n = secs * 10;
    let mut sent = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        std::thread::sleep((start + Duration::from_millis(100 * i as u64)).saturating_duration_since(Instant::now()));
        p.send(&topic, None, &notification(i)).unwrap();
        sent.push(Instant::now());
        p.delivered();
    }
    p.finish(&topic).unwrap();
    svc.wait_for("all rows", Duration::from_secs(60), || count_notifications(&pool) as usize >= n);
    // Rows arrive in produce order only per partition: pair each with its send by user_id,
    // and time it by the row's own created_at.
    let rows = cronsumer::db::notifications::list(&mut pool.get().unwrap(), None, n as i64).unwrap();
    let row_ms: Vec<f64> = rows
        .iter()
        .map(|r| {
            let i: usize = r.users.trim_matches(['[', ']']).parse().unwrap();
            let created = r.created_at.and_utc().timestamp_millis();
            created as f64 - wall_ms(sent[i], start)
        })
        .collect();
    svc.wait_for("all deliveries", Duration::from_secs(60), || sink.delivered().len() >= n);
    let hook_ms: Vec<f64> = sink
        .hits()
        .iter()
        .map(|h| {
            let i = h.body["users"][0].as_u64().unwrap() as usize;
            (h.at - sent[i]).as_secs_f64() * 1000.0
        })
        .collect();
    assert_eq!(svc.terminate(), Some(0));
    let (a, b, c, d) = percentiles(row_ms);
    println!("  latency produce->row     batch timeout {batch_timeout_ms:>4} ms: p50 {a:.0} ms, p95 {b:.0} ms, p99 {c:.0} ms, max {d:.0} ms (target p99 <= {} ms)", batch_timeout_ms + 50);
    let (a, b, c, d) = percentiles(hook_ms);
    println!("  latency produce->webhook batch timeout {batch_timeout_ms:>4} ms: p50 {a:.0} ms, p95 {b:.0} ms, p99 {c:.0} ms, max {d:.0} ms (target p99 <= 1000 ms at 100 ms)");
}

/// The wall-clock time (ms since the epoch) of an Instant, anchored at `start`.
fn wall_ms(t: Instant, start: Instant) -> f64 {
    static ANCHOR: std::sync::OnceLock<(Instant, f64)> = std::sync::OnceLock::new();
    let (i0, w0) = *ANCHOR
        .get_or_init(|| (start, chrono::Utc::now().timestamp_millis() as f64 - start.elapsed().as_secs_f64() * 1000.0));
    w0 + (t - i0).as_secs_f64() * 1000.0
}
