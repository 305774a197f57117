//! The webhook answers 503 for 10 s, with two copies sending.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cronsumer::db::{self, Backend};

use crate::fixture::*;
use crate::support::*;

/// The webhook answers 503 for its first 10 s: two copies on one PostgreSQL
/// database retry with backoff and, once it answers 200, deliver each of the
/// 300 notifications exactly once and mark every row `sent`.
#[test]
fn webhook_down_then_back() {
    let _serial = serial();
    const N: usize = 300;
    // Down until the services run; then down for 10 s more, then up.
    let sink = Sink::start(Box::new(|_| 503));
    let fx = Fixture::with_webhook(
        "webhook_down_then_back",
        Backend::Postgres,
        &sink.url,
        &[
            ("NOTIFICATIONS_RETRY_BASE_MS", "500"),
            ("NOTIFICATIONS_MAX_ATTEMPTS", "20"),
            ("NOTIFICATIONS_CRON", "*/1 * * * * *"),
            ("NOTIFY_BREAKER_COOL_OFF_MS", "2000"),
        ],
    );
    fx.produce_notifications(N);
    let a = fx.start("copy-a", &[]);
    let b = fx.start("copy-b", &[]);
    let started = Instant::now();
    sink.set_plan(Box::new(move |_| if started.elapsed() < Duration::from_secs(10) { 503 } else { 200 }));

    wait_running(&[&a, &b], "300 notifications delivered", Duration::from_secs(180), || sink.delivered().len() >= N);
    wait_running(&[&a, &b], "300 rows sent", Duration::from_secs(60), || status_count(&fx.pool, "sent") == N as i64);
    // A few more cron ticks: a stray second delivery would show now.
    std::thread::sleep(Duration::from_secs(3));
    fx.wait_all(&[&a, &b], N, Duration::from_secs(60));

    let delivered = sink.delivered();
    let refused = sink.hits().iter().filter(|h| h.status == 503).count();
    println!("webhook_down_then_back: {refused} calls answered 503, {} notifications delivered", delivered.len());
    fx.assert_exactly_once(N, 0);
    let twice: Vec<(&String, &usize)> = delivered.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let (rows, _) = stored_sources(&fx.pool, &fx.topic);
    let expected: BTreeSet<String> = rows.iter().map(|(p, o)| format!("{}-{p}-{o}", fx.topic)).collect();
    let got: BTreeSet<String> = delivered.keys().cloned().collect();
    assert_eq!(got, expected, "delivered idempotency keys vs stored rows");
    assert_eq!(status_count(&fx.pool, "sent"), N as i64, "rows not sent: {:?}", {
        db::notifications::count_by_status(&mut fx.pool.get().unwrap()).unwrap()
    });
    assert!(refused > 0, "the webhook outage was never hit: nothing proves the retry");
    a.assert_running("at the end");
    b.assert_running("at the end");
}
