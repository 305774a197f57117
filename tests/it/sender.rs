//! The notification sender (the `send_notifications` job) against real
//! databases and a real local HTTP server as the webhook receiver: retries,
//! backoff, the breaker, concurrency, and each notification delivered once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cronsumer::config::Settings;
use cronsumer::db::{self, notifications, Backend, Pool};
use cronsumer::schedule::{Job, JobReport, JobRunner, RunOutcome, Trigger};

use crate::support::*;

fn webhook_settings(db_url: &str, url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![
        ("NOTIFIER", "webhook"),
        ("NOTIFY_WEBHOOK_URL", url),
        ("NOTIFICATIONS_RETRY_BASE_MS", "300"),
        ("NOTIFY_BREAKER_COOL_OFF_MS", "200"),
    ];
    vars.extend_from_slice(extra);
    settings(db_url, &unique("sched"), &vars)
}

fn by_status(pool: &Pool) -> std::collections::BTreeMap<String, i64> {
    notifications::count_by_status(&mut pool.get().unwrap()).unwrap().into_iter().collect()
}

fn send_job(s: &Settings) -> Arc<dyn Job> {
    Arc::new(cronsumer::deliver::sender::SendNotifications::new(s))
}

/// Runs the sender until `n` notifications are sent; fails the test after `limit`.
fn run_until_sent(runner: &JobRunner, pool: &Pool, n: i64, limit: Duration) {
    wait_for(&format!("all {n} sent"), limit, || {
        runner.run(Trigger::Manual);
        by_status(pool).get("sent") == Some(&n)
    });
}

/// The webhook got `n` notifications, each exactly once: deliveries per
/// idempotency key.
fn assert_each_delivered_once(sink: &Sink, n: usize) -> HashMap<String, usize> {
    let delivered = sink.delivered();
    assert_eq!(delivered.len(), n);
    assert!(delivered.values().all(|&c| c == 1), "a notification was delivered twice");
    delivered
}

fn thousand_pending_are_delivered_exactly_once(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let sink = Sink::ok();
    let s = webhook_settings(&tdb.url, &sink.url, &[]);
    insert_pending(&pool, "seed", 1000);
    let runner = runner(send_job(&s), job_context(&s, &pool));
    let started = Instant::now();
    assert!(matches!(runner.run(Trigger::Manual), RunOutcome::Ok(_)));
    let secs = started.elapsed().as_secs_f64();
    println!("FIGURE send_notifications {backend:?}: 1000 delivered in {secs:.2} s = {:.0}/s", 1000.0 / secs);
    assert_each_delivered_once(&sink, 1000);
    assert_eq!(by_status(&pool).get("sent"), Some(&1000));
    // the ledger has the run
    let runs = db::job_runs::list(&mut pool.get().unwrap(), Some("send_notifications"), 10).unwrap();
    assert_eq!(runs[0].outcome, "ok");
    assert_eq!(runs[0].details.as_deref(), Some("sent=1000 retried=0 failed=0"));
}
both_backends!(thousand_pending_are_delivered_exactly_once);

/// The log notifier delivers on the sender's own thread: one run sends more
/// than two chunks (each chunk's rows marked with the next claim), each row
/// once.
fn the_log_notifier_sends_every_due_row_in_one_run(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("sched"), &[("NOTIFIER", "log")]);
    insert_pending(&pool, "seed", 450);
    let runner = runner(send_job(&s), job_context(&s, &pool));
    assert!(matches!(runner.run(Trigger::Manual), RunOutcome::Ok(_)));
    assert_eq!(by_status(&pool), [("sent".to_string(), 450)].into());
    let sent = notifications::list(&mut pool.get().unwrap(), Some(notifications::SENT), 1000).unwrap();
    assert!(sent.iter().all(|n| n.attempts == 1 && n.sent_at.is_some()), "a row was marked twice or not at all");
    let runs = db::job_runs::list(&mut pool.get().unwrap(), Some("send_notifications"), 10).unwrap();
    assert_eq!(runs[0].details.as_deref(), Some("sent=450 retried=0 failed=0"));
}
both_backends!(the_log_notifier_sends_every_due_row_in_one_run);

fn server_errors_are_retried_with_backoff_then_delivered_once(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // The first 40 calls fail with 500, then everything succeeds.
    let sink = Sink::start(Box::new(move |_| if c.fetch_add(1, Ordering::SeqCst) < 40 { 500 } else { 200 }));
    // The breaker's trial calls land on random rows: room enough that none runs out of attempts.
    let s = webhook_settings(&tdb.url, &sink.url, &[("NOTIFICATIONS_MAX_ATTEMPTS", "20")]);
    insert_pending(&pool, "seed", 30);
    let runner = runner(send_job(&s), job_context(&s, &pool));
    run_until_sent(&runner, &pool, 30, Duration::from_secs(60));
    let delivered = assert_each_delivered_once(&sink, 30);
    let rows = notifications::list(&mut pool.get().unwrap(), None, 100).unwrap();
    let retried: Vec<_> = rows.iter().filter(|r| r.attempts > 1).collect();
    assert!(!retried.is_empty(), "no row needed a retry");
    let total_attempts: i32 = rows.iter().map(|r| r.attempts).sum();
    assert_eq!(total_attempts as usize, sink.hits().len(), "attempts recorded != calls made");
    // Backoff: a key's next call comes no sooner than 300 ms * 2^(n-1) after its n-th failure.
    let hits = sink.hits();
    for key in delivered.keys() {
        let mine: Vec<_> = hits.iter().filter(|h| &h.key == key).collect();
        for (n, pair) in mine.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let min = Duration::from_millis(300 << n);
            assert!(gap >= min - Duration::from_millis(20), "key {key}: retry {n} came after {gap:?} < {min:?}");
        }
    }
}
both_backends!(server_errors_are_retried_with_backoff_then_delivered_once);

fn client_errors_fail_at_once_with_the_status_kept(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let sink = Sink::start(Box::new(|_| 404));
    let s = webhook_settings(&tdb.url, &sink.url, &[]);
    insert_pending(&pool, "seed", 3);
    let runner = runner(send_job(&s), job_context(&s, &pool));
    runner.run(Trigger::Manual);
    runner.run(Trigger::Manual);
    assert_eq!(sink.hits().len(), 3, "a 4xx must not be retried");
    for r in notifications::list(&mut pool.get().unwrap(), None, 10).unwrap() {
        assert_eq!((r.status.as_str(), r.attempts), ("failed", 1));
        assert_eq!(r.last_error.as_deref(), Some("webhook answered HTTP 404"));
    }
}
both_backends!(client_errors_fail_at_once_with_the_status_kept);

#[test]
fn unreachable_webhook_gives_up_after_max_attempts() {
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    // Nothing listens on port 9 of loopback: connection refused.
    let s = webhook_settings(
        &tdb.url,
        "http://127.0.0.1:9/hook",
        &[("NOTIFICATIONS_MAX_ATTEMPTS", "3"), ("NOTIFICATIONS_RETRY_BASE_MS", "50")],
    );
    insert_pending(&pool, "seed", 2);
    let runner = runner(send_job(&s), job_context(&s, &pool));
    wait_for("both failed", Duration::from_secs(30), || {
        runner.run(Trigger::Manual);
        by_status(&pool).get("failed") == Some(&2)
    });
    for r in notifications::list(&mut pool.get().unwrap(), None, 10).unwrap() {
        assert_eq!(r.attempts, 3);
        assert!(r.last_error.unwrap().starts_with("webhook call failed"));
    }
}

#[test]
fn two_copies_on_postgres_deliver_each_notification_once() {
    let tdb = TestDb::new(Backend::Postgres);
    let pool_a = tdb.pool();
    let pool_b = tdb.pool();
    let sink = Sink::ok();
    let s = webhook_settings(&tdb.url, &sink.url, &[]);
    insert_pending(&pool_a, "seed", 1000);
    let a = Arc::new(runner(send_job(&s), job_context(&s, &pool_a)));
    let b = Arc::new(runner(send_job(&s), job_context(&s, &pool_b)));
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|r| std::thread::spawn(move || (0..5).map(|_| r.run(Trigger::Wake)).collect::<Vec<_>>()))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_each_delivered_once(&sink, 1000);
    assert_eq!(by_status(&pool_a).get("sent"), Some(&1000));
}

/// A redirect is not followed (that would turn the POST into a GET without
/// its body): the notification fails for good, naming the new address.
fn redirects_fail_naming_the_location(backend: Backend) {
    for status in [301, 302, 307, 308] {
        let tdb = TestDb::new(backend);
        let pool = tdb.pool();
        let sink = Sink::start(Box::new(move |_| status));
        let moved = format!("{}-moved", sink.url);
        sink.set_headers(&[("Location", moved.as_str())]);
        let s = webhook_settings(&tdb.url, &sink.url, &[]);
        insert_pending(&pool, "seed", 3);
        runner(send_job(&s), job_context(&s, &pool)).run(Trigger::Manual);
        assert_eq!(sink.hits().len(), 3, "HTTP {status}: one POST per notification and nothing followed");
        for r in notifications::list(&mut pool.get().unwrap(), None, 10).unwrap() {
            assert_eq!((r.status.as_str(), r.attempts), ("failed", 1), "HTTP {status}");
            let error = r.last_error.unwrap_or_default();
            assert!(error.contains(&status.to_string()) && error.contains(&moved), "HTTP {status}: {error}");
        }
    }
}
both_backends!(redirects_fail_naming_the_location);

/// 429 with `Retry-After` is retried, no sooner than it says (not failed at
/// the first answer), then delivered once.
fn too_many_requests_waits_for_retry_after(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let sink = Sink::start(Box::new(|_| 429));
    sink.set_headers(&[("Retry-After", "2")]);
    // A 10 ms backoff would retry much sooner than Retry-After.
    let s = webhook_settings(&tdb.url, &sink.url, &[("NOTIFICATIONS_RETRY_BASE_MS", "10")]);
    insert_pending(&pool, "seed", 5);
    let runner = runner(send_job(&s), job_context(&s, &pool));
    runner.run(Trigger::Manual);
    assert_eq!(by_status(&pool).get("pending"), Some(&5), "429 must be retried: {:?}", by_status(&pool));
    sink.set_plan(Box::new(|_| 200));
    runner.run(Trigger::Manual);
    assert_eq!(sink.hits().len(), 5, "retried before Retry-After passed");
    run_until_sent(&runner, &pool, 5, Duration::from_secs(30));
    let hits = sink.hits();
    for key in sink.delivered().keys() {
        let mine: Vec<_> = hits.iter().filter(|h| &h.key == key).collect();
        assert_eq!(mine.len(), 2, "key {key}: one 429, one 200");
        let gap = mine[1].at - mine[0].at;
        assert!(gap >= Duration::from_millis(1950), "key {key}: retried after {gap:?}, Retry-After said 2 s");
    }
}
both_backends!(too_many_requests_waits_for_retry_after);

/// Deliveries overlap up to `NOTIFY_CONCURRENCY`, and each is delivered once.
fn deliveries_run_concurrently_up_to_the_limit(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let sink = Sink::ok();
    sink.set_delay(Duration::from_millis(100));
    let s = webhook_settings(&tdb.url, &sink.url, &[("NOTIFY_CONCURRENCY", "8")]);
    insert_pending(&pool, "seed", 64);
    let outcome = runner(send_job(&s), job_context(&s, &pool)).run(Trigger::Manual);
    assert_eq!(outcome, RunOutcome::Ok(JobReport::new("sent=64 retried=0 failed=0")));
    assert_each_delivered_once(&sink, 64);
    let peak = sink.peak_in_flight();
    assert!(peak > 1 && peak <= 8, "{peak} requests in flight at most, want 2..=8");
    assert_eq!(by_status(&pool).get("sent"), Some(&64));
}
both_backends!(deliveries_run_concurrently_up_to_the_limit);

/// A burst of 503s opens the breaker: the rows not yet tried wait without
/// spending attempts; after the cool-off one trial call closes it and every
/// row is delivered once, none failed.
fn a_burst_of_server_errors_opens_and_closes_the_breaker(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let sink = Sink::start(Box::new(|_| 503));
    let s = webhook_settings(
        &tdb.url,
        &sink.url,
        &[("NOTIFY_CONCURRENCY", "1"), ("NOTIFY_BREAKER_COOL_OFF_MS", "1000"), ("NOTIFICATIONS_MAX_ATTEMPTS", "3")],
    );
    insert_pending(&pool, "seed", 20);
    let runner = runner(send_job(&s), job_context(&s, &pool));
    let failures = cronsumer::deliver::notifier::BREAKER_FAILURES as usize;
    let first = runner.run(Trigger::Manual);
    assert_eq!(
        first,
        RunOutcome::Ok(JobReport::new(format!(
            "sent=0 retried={failures} failed=0 deferred={} (webhook breaker open)",
            20 - failures
        )))
    );
    assert_eq!(sink.hits().len(), failures, "calls made while the breaker was open");
    let rows = notifications::list(&mut pool.get().unwrap(), None, 100).unwrap();
    assert_eq!(rows.iter().filter(|r| r.attempts == 0).count(), 20 - failures, "deferred rows kept their attempts");
    assert!(rows.iter().all(|r| r.status == "pending"), "{:?}", by_status(&pool));

    sink.set_plan(Box::new(|_| 200));
    run_until_sent(&runner, &pool, 20, Duration::from_secs(30));
    assert_each_delivered_once(&sink, 20);
    assert_eq!(sink.hits().len(), failures + 20, "503s before the breaker opened, then one 200 each");
}
both_backends!(a_burst_of_server_errors_opens_and_closes_the_breaker);

/// A webhook slower than the claim: one call at a time, each answered after
/// 1 s, so a chunk of 40 takes longer than the 30 s claim. The sender renews
/// its claims as it goes, so a second copy running meanwhile takes none of
/// them: each notification is delivered once.
#[test]
fn a_webhook_slower_than_the_claim_is_not_sent_twice() {
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    let sink = Sink::ok();
    sink.set_delay(Duration::from_secs(1));
    let s = webhook_settings(&tdb.url, &sink.url, &[("NOTIFY_CONCURRENCY", "1")]);
    insert_pending(&pool, "seed", 40);
    let a = Arc::new(runner(send_job(&s), job_context(&s, &pool)));
    let slow = {
        let a = a.clone();
        std::thread::spawn(move || a.run(Trigger::Manual))
    };
    wait_for("copy a holding every row", Duration::from_secs(10), || by_status(&pool).get("sending") == Some(&40));
    // Another copy runs its sender every second while the slow chunk goes on.
    let b = runner(send_job(&s), job_context(&s, &pool));
    while !slow.is_finished() {
        b.run(Trigger::Manual);
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(slow.join().unwrap(), RunOutcome::Ok(JobReport::new("sent=40 retried=0 failed=0")));
    let delivered = sink.delivered();
    assert_eq!(delivered.len(), 40);
    let twice: Vec<_> = delivered.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
}

/// Rows a failed run of a sender left claimed are not renewed by that
/// sender's later runs (which renew the chunk they deliver, no more): they
/// expire, and go back to pending, however long the backlog lasts.
fn claims_a_failed_run_left_are_not_renewed_by_later_runs(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    insert_pending(&pool, "seed", 4);
    let mut conn = pool.get().unwrap();
    let claim = |conn: &mut db::Conn, n| {
        notifications::mark_sent_and_claim_due(conn, &[], "sender-1", n, Duration::from_millis(400)).unwrap()
    };
    let left = claim(&mut conn, 2);
    let chunk = claim(&mut conn, 2);
    std::thread::sleep(Duration::from_millis(200));
    let ids: Vec<i64> = chunk.iter().map(|n| n.id).collect();
    assert_eq!(notifications::renew_claims(&mut conn, &ids, "sender-1", Duration::from_secs(60)).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(notifications::requeue_expired(&mut conn).unwrap(), left.len(), "the left rows expired");
    let pending: Vec<i64> = notifications::list(&mut conn, Some("pending"), 10).unwrap().iter().map(|n| n.id).collect();
    let mut left: Vec<i64> = left.iter().map(|n| n.id).collect();
    left.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(pending, left);
}
both_backends!(claims_a_failed_run_left_are_not_renewed_by_later_runs);
