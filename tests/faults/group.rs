//! Faults in combination with group changes: a rebalance during a database
//! outage longer than the revoke budget (eager and cooperative), a handler
//! slower than `max.poll.interval.ms`, and SIGTERM during an outage or a
//! rebalance, which must end within `SHUTDOWN_TIMEOUT_MS` + 2 s.

use std::time::{Duration, Instant};

use cronsumer::db::Backend;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::fixture::*;
use crate::support::*;

/// The revoke budget of the pipeline: outages in this module outlast it.
const REVOKE_BUDGET: Duration = cronsumer::consume::pipeline::REVOKE_BUDGET;
/// Records of each scenario.
const N: usize = 4000;

/// Waits until `svc` answers `/healthz` with 200.
fn wait_healthy(services: &[&Service], svc: &Service, limit: Duration) {
    wait_running(services, &format!("/healthz 200 from {}", svc.label), limit, || {
        svc.healthz().is_some_and(|(code, _)| code == 200)
    });
}

/// SIGTERM, and the exit status within `limit` (the test fails after it).
fn term_within(svc: &Service, limit: Duration) -> Duration {
    let sent = Instant::now();
    svc.term();
    let status =
        svc.wait_exit(limit).unwrap_or_else(|| panic!("{} did not exit within {limit:?} of SIGTERM", svc.label));
    assert_eq!(status.code(), Some(0), "exit status of {} after SIGTERM: {status}", svc.label);
    sent.elapsed()
}

/// Copy a takes every partition and stores half of `N` records; then
/// inserts are refused (as on a read-only standby), the other half arrives,
/// and once a holds a batch it cannot store, copy b starts and joins.
fn second_copy_joins_during_a_write_outage(fx: &Fixture) -> (Service, Service) {
    let a = fx.start("copy-a", &[]);
    wait_running(&[&a], "copy-a assigned every partition", Duration::from_secs(60), || {
        a.assigned() == fx.all_partitions()
    });
    fx.produce_notifications(N / 2);
    wait_running(&[&a], "500 rows", Duration::from_secs(60), || fx.rows() >= 500);
    fx.tdb.pg_refuse_writes(true);
    fx.produce_notifications(N / 2);
    std::thread::sleep(Duration::from_secs(2));
    let b = fx.start("copy-b", &[]);
    (a, b)
}

/// Copy a holds every partition and a batch it cannot store (inserts fail as
/// on a read-only standby); copy b joins; the outage lasts past the revoke
/// budget, so a gives its partitions up with the batch unstored; then the
/// database comes back. Every record ends up stored once, every partition
/// resumes, and both copies report healthy.
fn rebalance_during_a_database_outage(scenario: &'static str, strategy: &str) {
    let _serial = serial();
    let fx = Fixture::new(scenario, Backend::Postgres, &[("KAFKA_PROP_PARTITION_ASSIGNMENT_STRATEGY", strategy)]);
    let (a, b) = second_copy_joins_during_a_write_outage(&fx);
    wait_running(&[&a, &b], "copy-b assigned partitions", Duration::from_secs(90), || b.assigned() > 0.0);
    let stalled = fx.rows();
    std::thread::sleep(REVOKE_BUDGET + Duration::from_secs(2));
    fx.tdb.pg_refuse_writes(false);
    println!("{scenario}: {stalled} rows stored when the outage outlasted the revoke budget");
    assert!(stalled < N as i64, "nothing was left for the outage ({stalled} rows): the test proves nothing");

    fx.wait_all(&[&a, &b], N, Duration::from_secs(180));
    wait_healthy(&[&a, &b], &a, Duration::from_secs(60));
    wait_healthy(&[&a, &b], &b, Duration::from_secs(60));
    assert_eq!(a.assigned() + b.assigned(), fx.all_partitions(), "partitions held by the two copies");
    fx.assert_exactly_once(N, 0);
}

#[test]
fn rebalance_during_a_database_outage_eager() {
    rebalance_during_a_database_outage("rebalance_during_a_database_outage_eager", "range");
}

#[test]
fn rebalance_during_a_database_outage_cooperative() {
    rebalance_during_a_database_outage("rebalance_during_a_database_outage_cooperative", "cooperative-sticky");
}

/// Two copies; the test locks the `notifications` table against writes for
/// longer than `max.poll.interval.ms` (8 s here), so every handler blocks
/// in its insert. With one lane the handler runs on the polling thread, so
/// each copy's assignment is lost; once the lock goes, the group re-forms
/// and every record is stored once.
#[test]
fn a_handler_slower_than_max_poll_interval() {
    handler_slower_than_max_poll_interval("a_handler_slower_than_max_poll_interval", "1");
}

/// The same with four lanes: the polling thread polls on while every lane
/// waits for the lock, so no copy loses its assignment, and every record is
/// stored once.
#[test]
fn a_handler_slower_than_max_poll_interval_in_lanes() {
    handler_slower_than_max_poll_interval("a_handler_slower_than_max_poll_interval_in_lanes", "4");
}

fn handler_slower_than_max_poll_interval(scenario: &'static str, lanes: &str) {
    let _serial = serial();
    let fx = Fixture::new(
        scenario,
        Backend::Postgres,
        &[
            ("KAFKA_PROP_MAX_POLL_INTERVAL_MS", "8000"),
            ("KAFKA_PROP_SESSION_TIMEOUT_MS", "6000"),
            ("CONSUMER_CONCURRENCY", lanes),
        ],
    );
    let a = fx.start("copy-a", &[]);
    let b = fx.start("copy-b", &[]);
    wait_running(&[&a, &b], "both copies assigned partitions", Duration::from_secs(120), || {
        a.assigned() > 0.0 && b.assigned() > 0.0
    });
    fx.produce_notifications(N / 2);
    wait_running(&[&a, &b], "500 rows", Duration::from_secs(60), || fx.rows() >= 500);
    let lock_for = Duration::from_secs(20);
    let mut locker = PgConnection::establish(&fx.tdb.url).unwrap();
    // EXCLUSIVE blocks inserts but not reads (the commit monitor reads on).
    locker.batch_execute("BEGIN; LOCK TABLE notifications IN EXCLUSIVE MODE").unwrap();
    fx.produce_notifications(N / 2);
    std::thread::sleep(lock_for);
    let blocked = fx.rows();
    locker.batch_execute("COMMIT").unwrap();
    println!("{scenario}: table locked for {lock_for:?} with {blocked} rows stored");
    assert!(blocked < N as i64, "nothing was blocked: the test proves nothing");

    fx.wait_all(&[&a, &b], N, Duration::from_secs(180));
    wait_running(&[&a, &b], "both copies hold partitions again", Duration::from_secs(60), || {
        a.assigned() + b.assigned() == fx.all_partitions()
    });
    let lost =
        a.log_text().matches("event=partitions_lost").count() + b.log_text().matches("event=partitions_lost").count();
    println!("{scenario}: assignments lost: {lost}");
    if lanes == "1" {
        assert!(lost > 0, "no copy lost its assignment: max.poll.interval.ms was not exceeded");
    } else {
        assert_eq!(lost, 0, "a copy lost its assignment although its polling thread polls while the lanes wait");
    }
    fx.assert_exactly_once(N, 0);
}

/// The shutdown budget of the bounded-shutdown scenarios, and the most a
/// SIGTERM may take beyond it.
const SHUTDOWN_MS: &str = "5000";
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(5000 + 2000);

/// SIGTERM while the batch in hand waits for a database that refuses every
/// connection: the process exits 0 within the budget (+2 s), commits
/// nothing unstored, and a fresh copy stores everything once it is back.
#[test]
fn sigterm_during_a_database_outage() {
    let _serial = serial();
    let fx =
        Fixture::new("sigterm_during_a_database_outage", Backend::Postgres, &[("SHUTDOWN_TIMEOUT_MS", SHUTDOWN_MS)]);
    let a = fx.start("first", &[]);
    fx.produce_notifications(N / 2);
    wait_running(&[&a], "500 rows", Duration::from_secs(60), || fx.rows() >= 500);
    fx.tdb.pg_block(true);
    fx.produce_notifications(N / 2);
    std::thread::sleep(Duration::from_secs(3));
    let took = term_within(&a, SHUTDOWN_LIMIT);
    println!("sigterm_during_a_database_outage: exited {} ms after SIGTERM", took.as_millis());
    fx.tdb.pg_block(false);

    let second = fx.start("second", &[]);
    fx.wait_all(&[&second], N, Duration::from_secs(180));
    fx.assert_exactly_once(N, 0);
}

/// SIGTERM while copy a finishes a revoke it cannot finish (inserts
/// refused, and the revoke budget is 10 s): the stop cuts the revoke short,
/// a exits 0 within the budget (+2 s), and b stores everything.
#[test]
fn sigterm_during_a_rebalance() {
    let _serial = serial();
    let fx = Fixture::new("sigterm_during_a_rebalance", Backend::Postgres, &[("SHUTDOWN_TIMEOUT_MS", SHUTDOWN_MS)]);
    let (a, b) = second_copy_joins_during_a_write_outage(&fx);
    wait_running(&[&a, &b], "copy-a revoking", Duration::from_secs(60), || {
        a.log_text().contains("event=partitions_revoked")
    });
    let took = term_within(&a, SHUTDOWN_LIMIT);
    println!("sigterm_during_a_rebalance: exited {} ms after SIGTERM", took.as_millis());
    fx.tdb.pg_refuse_writes(false);

    fx.wait_all(&[&b], N, Duration::from_secs(180));
    fx.assert_exactly_once(N, 0);
}

/// The broker goes away for 20 s, longer than the session timeout (6 s
/// here), while copy a holds a batch it cannot store (inserts refused): the
/// group forgets a, a's assignment is lost when the broker is back, and once
/// the database is back every record is stored once.
#[test]
fn broker_away_longer_than_the_session_timeout() {
    let _serial = serial();
    let fx = Fixture::new(
        "broker_away_longer_than_the_session_timeout",
        Backend::Postgres,
        &[("KAFKA_PROP_SESSION_TIMEOUT_MS", "6000")],
    );
    let a = fx.start("service", &[]);
    fx.produce_notifications(N / 2);
    wait_running(&[&a], "500 rows", Duration::from_secs(60), || fx.rows() >= 500);
    fx.tdb.pg_refuse_writes(true);
    // Records that arrive while inserts are refused: a batch is surely in
    // hand, however fast the first half was stored.
    fx.produce_notifications(N / 2);
    std::thread::sleep(Duration::from_secs(2));
    let held = fx.rows();
    let mut broker = Broker::new(&fx);
    broker.stop();
    std::thread::sleep(Duration::from_secs(20));
    broker.start();
    a.assert_running("after the broker came back");
    std::thread::sleep(Duration::from_secs(3));
    fx.tdb.pg_refuse_writes(false);
    println!("broker_away_longer_than_the_session_timeout: {held} rows stored when the broker went away");
    assert!(held < N as i64, "nothing was in hand: the test proves nothing");

    fx.wait_all(&[&a], N, Duration::from_secs(180));
    wait_healthy(&[&a], &a, Duration::from_secs(60));
    fx.assert_exactly_once(N, 0);
}

/// Produces `notification(i)` records, 50 every 100 ms, until stopped; the
/// count of records produced is the thread's result.
struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl SteadyLoad {
    fn start(fx: &Fixture) -> SteadyLoad {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (flag, s, topic) = (stop.clone(), fx.s.clone(), fx.topic.clone());
        let thread = std::thread::spawn(move || {
            let mut sent = 0;
            while !flag.load(Ordering::SeqCst) {
                let payloads: Vec<Vec<u8>> = (sent..sent + 50).map(notification).collect();
                produce(&s, &topic, &payloads);
                sent += payloads.len();
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        });
        SteadyLoad { stop, thread }
    }

    fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("producer thread")
    }
}

/// Three copies under steady load, with webhook delivery on: each is
/// SIGTERMed and started again in turn; then two stop (3 → 1) and two
/// start (1 → 3) and two stop again. Rows are exact, and no notification is
/// delivered twice (counted by idempotency key at the webhook).
#[test]
fn rolling_restart_under_load() {
    let _serial = serial();
    let sink = Sink::ok();
    let fx = Fixture::with_webhook(
        "rolling_restart_under_load",
        Backend::Postgres,
        &sink.url,
        &[("NOTIFICATIONS_CRON", "*/1 * * * * *"), ("SHUTDOWN_TIMEOUT_MS", SHUTDOWN_MS)],
    );
    let mut copies: Vec<Service> = (0..3).map(|i| fx.start(&format!("copy-{i}-run-0"), &[])).collect();
    let all_assigned = |copies: &[Service]| copies.iter().map(|c| c.assigned()).sum::<f64>() == fx.all_partitions();
    wait_running(
        &copies.iter().collect::<Vec<_>>(),
        "three copies sharing the partitions",
        Duration::from_secs(120),
        || all_assigned(&copies),
    );
    let load = SteadyLoad::start(&fx);
    let mut runs = 0;
    for i in 0..3 {
        std::thread::sleep(Duration::from_secs(3));
        term_within(&copies[i], SHUTDOWN_LIMIT);
        runs += 1;
        copies[i] = fx.start(&format!("copy-{i}-run-{runs}"), &[]);
        wait_running(
            &copies.iter().collect::<Vec<_>>(),
            "the restarted copy back in the group",
            Duration::from_secs(120),
            || copies[i].assigned() > 0.0 && all_assigned(&copies),
        );
    }
    for round in 0..2 {
        // 3 → 1
        for c in copies.drain(1..) {
            term_within(&c, SHUTDOWN_LIMIT);
        }
        wait_running(&[&copies[0]], "one copy holding every partition", Duration::from_secs(120), || {
            all_assigned(&copies)
        });
        std::thread::sleep(Duration::from_secs(3));
        if round == 1 {
            break;
        }
        // 1 → 3
        for i in 1..3 {
            runs += 1;
            copies.push(fx.start(&format!("copy-{i}-run-{runs}"), &[]));
        }
        wait_running(
            &copies.iter().collect::<Vec<_>>(),
            "three copies sharing the partitions",
            Duration::from_secs(120),
            || copies.iter().all(|c| c.assigned() > 0.0) && all_assigned(&copies),
        );
    }
    let produced = load.finish();
    println!("rolling_restart_under_load: {produced} records produced across {runs} restarts and scalings");
    let last = &copies[0];
    fx.wait_all(&[last], produced, Duration::from_secs(180));
    wait_running(&[last], "every notification sent", Duration::from_secs(120), || {
        status_count(&fx.pool, "sent") == produced as i64
    });
    // A few more ticks: a stray second delivery would show now.
    std::thread::sleep(Duration::from_secs(3));
    fx.assert_exactly_once(produced, 0);
    let delivered = sink.delivered();
    let twice: Vec<(&String, &usize)> = delivered.iter().filter(|(_, c)| **c != 1).collect();
    println!("rolling_restart_under_load: {} notifications delivered, {} more than once", delivered.len(), twice.len());
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(delivered.len(), produced, "notifications delivered");
}
