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

/// A slow run keeps its rows from another copy: one call at a time, each
/// answered after 200 ms, so a chunk of 20 takes 4 s. A second copy
/// running its sender meanwhile claims none of them (their locks are held):
/// each notification is delivered once, all by the first copy.
#[test]
fn a_slow_run_keeps_its_rows_from_another_copy() {
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    let sink = Sink::ok();
    sink.set_delay(Duration::from_millis(200));
    let s = webhook_settings(&tdb.url, &sink.url, &[("NOTIFY_CONCURRENCY", "1")]);
    insert_pending(&pool, "seed", 20);
    let a = Arc::new(runner(send_job(&s), job_context(&s, &pool)));
    let slow = {
        let a = a.clone();
        std::thread::spawn(move || a.run(Trigger::Manual))
    };
    wait_for("copy a delivering", Duration::from_secs(10), || !sink.hits().is_empty());
    let b = runner(send_job(&s), job_context(&s, &pool));
    while !slow.is_finished() {
        assert_eq!(b.run(Trigger::Manual), RunOutcome::Ok(JobReport::new("")), "copy b claimed a row copy a holds");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(slow.join().unwrap(), RunOutcome::Ok(JobReport::new("sent=20 retried=0 failed=0")));
    assert_each_delivered_once(&sink, 20);
}

/// Claims write nothing, a copy skips the rows another holds, and a copy
/// whose connection ends (it died) frees its rows at once.
#[test]
fn claims_write_nothing_and_a_dead_copys_rows_are_free_at_once() {
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    insert_pending(&pool, "seed", 5);
    let before = notifications::list(&mut pool.get().unwrap(), None, 10).unwrap();
    let a = db::connect(&tdb.url, 1).unwrap();
    let held = notifications::claim_due(&mut a.get().unwrap(), 3).unwrap();
    assert_eq!(held.len(), 3);
    let mut b = pool.get().unwrap();
    let others = notifications::claim_due(&mut b, 5).unwrap();
    let ids = |rows: &[notifications::Notification]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    assert!(ids(&others).iter().all(|id| !ids(&held).contains(id)), "a row two copies hold");
    assert_eq!(others.len(), 2);
    assert_eq!(notifications::list(&mut pool.get().unwrap(), None, 10).unwrap(), before, "a claim wrote a row");
    notifications::unclaim(&mut b, &ids(&others)).unwrap();
    // Copy a dies: its session ends, and its locks with it.
    drop(a);
    let started = Instant::now();
    let mut c = pool.get().unwrap();
    wait_for("the dead copy's rows free", Duration::from_secs(5), || {
        let got = notifications::claim_due(&mut c, 5).unwrap();
        notifications::unclaim(&mut c, &ids(&got)).unwrap();
        got.len() == 5
    });
    println!("FIGURE claims: a dead copy's rows free after {:?}", started.elapsed());
}

/// Each row is written once after its insert, when its delivery ends:
/// 450 rows sent (120 of them after one failed attempt) by the log and the
/// webhook notifiers take exactly one row write each per attempt's end,
/// counted by a trigger on the table.
fn each_delivery_end_is_one_row_write(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let counting = match backend {
        Backend::Sqlite => "CREATE TABLE write_count (n INTEGER NOT NULL); INSERT INTO write_count VALUES (0); \
             CREATE TRIGGER count_writes AFTER UPDATE ON notifications BEGIN UPDATE write_count SET n = n + 1; END;",
        Backend::Postgres => "CREATE TABLE write_count (n BIGINT NOT NULL); INSERT INTO write_count VALUES (0); \
             CREATE FUNCTION count_write() RETURNS trigger AS $$ BEGIN UPDATE write_count SET n = n + 1; RETURN NEW; END $$ \
             LANGUAGE plpgsql; CREATE TRIGGER count_writes AFTER UPDATE ON notifications FOR EACH ROW EXECUTE FUNCTION count_write();",
    };
    use diesel::connection::SimpleConnection as _;
    cronsumer::on_backend!(pool.get().unwrap(), |c| c.batch_execute(counting)).unwrap();
    let writes = || -> i64 {
        use diesel::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let q = diesel::sql_query("SELECT n FROM write_count");
        cronsumer::on_backend!(pool.get().unwrap(), |c| q.get_result::<N>(c)).unwrap().n
    };
    insert_pending(&pool, "seed", 450);
    let log = settings(&tdb.url, &unique("writes"), &[]);
    let runner_log = runner(send_job(&log), job_context(&log, &pool));
    run_until_sent(&runner_log, &pool, 450, Duration::from_secs(60));
    assert_eq!(writes(), 450, "row writes for 450 rows sent by the log notifier");

    insert_pending(&pool, "seed2", 120);
    let failures = Arc::new(AtomicUsize::new(0));
    let f = failures.clone();
    // Each notification's first call fails, the second works.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let sink = Sink::start(Box::new(move |key| {
        if seen.lock().unwrap().insert(key.to_string()) {
            f.fetch_add(1, Ordering::SeqCst);
            503
        } else {
            200
        }
    }));
    let s = webhook_settings(
        &tdb.url,
        &sink.url,
        &[("NOTIFICATIONS_RETRY_BASE_MS", "10"), ("NOTIFY_BREAKER_COOL_OFF_MS", "100")],
    );
    let r = runner(send_job(&s), job_context(&s, &pool));
    run_until_sent(&r, &pool, 570, Duration::from_secs(60));
    let attempts = sink.hits().len() as i64;
    println!("FIGURE row writes: {} for {attempts} webhook attempts and 450 log deliveries ({backend:?})", writes());
    assert_eq!(writes(), 450 + attempts, "one row write per attempt's end (no claim writes)");
    assert!(failures.load(Ordering::SeqCst) >= 120, "every row failed once first");
}
both_backends!(each_delivery_end_is_one_row_write);
