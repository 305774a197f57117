//! Exactly-once for a handler that is not idempotent. The price-events
//! module counts each symbol's events in `price_stats` by increments; after
//! kill -9 twice, a rebalance between two copies, or a database outage, the
//! counts equal the events produced per symbol. A batch applied twice would
//! count twice: the skipped duplicate rows of `price_events` do not hide it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::process::Command;
use std::time::Duration;

use cronsumer::db::{price_stats, Backend};

use crate::fixture::*;
use crate::support::*;

const N: usize = 12_000;
const SYMBOLS: usize = 7;

fn price_event(i: usize) -> Vec<u8> {
    format!(
        r#"{{"symbol":"S{}","price":{}.5,"timestamp":{},"source":"fault-test"}}"#,
        i % SYMBOLS,
        100 + i % 50,
        1_795_000_000 + i
    )
    .into_bytes()
}

impl Fixture {
    fn price_topic(&self) -> String {
        self.s.topic("price-events")
    }

    fn produce_prices(&self, range: Range<usize>) {
        let payloads: Vec<Vec<u8>> = range.map(price_event).collect();
        produce(&self.s, &self.price_topic(), &payloads);
    }

    fn prices(&self) -> i64 {
        count_prices(&self.pool)
    }

    /// Waits until the `n` events are stored and committed, then asserts
    /// that `price_stats` counts each symbol's events exactly once.
    fn assert_stats_exact(&self, services: &[&Service], n: usize) {
        let want = n as i64;
        wait_running(services, &format!("all {n} price events stored"), Duration::from_secs(300), || {
            self.prices() >= want
        });
        wait_running(services, "commits covering every price event", Duration::from_secs(90), || {
            self.commits(&self.price_topic()) == Some(want)
        });
        let stats = price_stats::all(&mut self.pool.get().unwrap()).unwrap();
        let counted: BTreeMap<String, i64> = stats.iter().map(|s| (s.0.clone(), s.1)).collect();
        let mut expected: BTreeMap<String, i64> = BTreeMap::new();
        for i in 0..n {
            *expected.entry(format!("S{}", i % SYMBOLS)).or_default() += 1;
        }
        let total: i64 = counted.values().sum();
        self.report(n, self.prices() as usize, self.dead() as usize, (total - want).max(0) as usize);
        assert_eq!(counted, expected, "price_stats.events per symbol: each event counted once");
        for (symbol, _, _, min, max) in &stats {
            assert_eq!((*min, *max), (100.5, 149.5), "price range of {symbol}");
        }
        assert_eq!((self.prices(), self.dead()), (want, 0), "price_events rows and dead letters");
    }
}

/// kill -9 twice while a backlog of events streams in; the third copy finishes.
fn kill_9_twice_counts_exact(backend: Backend) {
    const BACKLOG: usize = 40_000;
    let _serial = serial();
    let fx = Fixture::new("exactly_once_kill_9_twice", backend, &[]);
    fx.produce_prices(0..BACKLOG);
    let first = fx.start("first", &[]);
    wait_running(&[&first], "3000 events", Duration::from_secs(120), || fx.prices() >= 3000);
    first.kill9();
    let second = fx.start("second", &[]);
    let at = fx.prices();
    wait_running(&[&second], "3000 more events", Duration::from_secs(120), || fx.prices() >= at + 3000);
    second.kill9();
    let at_kill = fx.prices();
    println!("exactly_once_kill_9_twice {}: SIGKILL at {at} and {at_kill} events", backend_name(backend));
    assert!(at_kill < BACKLOG as i64, "the stream was not interrupted ({at_kill} events): the test proves nothing");
    let third = fx.start("third", &[]);
    fx.assert_stats_exact(&[&third], BACKLOG);
}
both_backends!(kill_9_twice_counts_exact);

/// A second copy joins mid-stream (a rebalance), then the first leaves on SIGTERM (another).
fn rebalance_counts_exact(backend: Backend) {
    let _serial = serial();
    let fx = Fixture::new("exactly_once_rebalance", backend, &[]);
    let a = fx.start("copy-a", &[]);
    fx.produce_prices(0..N / 2);
    wait_running(&[&a], "2000 events", Duration::from_secs(120), || fx.prices() >= 2000);
    let b = fx.start("copy-b", &[]);
    fx.produce_prices(N / 2..N);
    wait_running(&[&a, &b], "copy-b assigned partitions", Duration::from_secs(90), || b.assigned() > 0.0);
    a.term();
    assert_eq!(a.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()), Some(0), "copy-a's exit after SIGTERM");
    fx.assert_stats_exact(&[&b], N);
}
both_backends!(rebalance_counts_exact);

/// The database goes away for 8 s mid-stream (PostgreSQL refuses and ends
/// connections, some of them mid-commit; SQLite's file is write-locked by
/// another process), then comes back.
fn database_outage_counts_exact(backend: Backend) {
    let _serial = serial();
    let fx = Fixture::new("exactly_once_database_outage", backend, &[]);
    fx.produce_prices(0..N / 2);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "2000 events", Duration::from_secs(120), || fx.prices() >= 2000);
    let outage = Duration::from_secs(8);
    let before = fx.prices();
    let mut sqlite_lock = None;
    match backend {
        Backend::Postgres => fx.tdb.pg_block(true),
        Backend::Sqlite => sqlite_lock = Some(WriteLock::take(&fx.tdb.url, outage)),
    }
    fx.produce_prices(N / 2..N);
    std::thread::sleep(outage);
    match sqlite_lock.as_mut() {
        Some(lock) => lock.release(),
        None => fx.tdb.pg_block(false),
    }
    println!("exactly_once_database_outage {}: {before} events stored when the outage began", backend_name(backend));
    let log = svc.log_text();
    assert!(log.contains("event=batch_retrying"), "no batch failed during the outage: the test proves nothing");
    fx.assert_stats_exact(&[&svc], N);
}
both_backends!(database_outage_counts_exact);

/// PostgreSQL crashes (an immediate shutdown: WAL still in its buffers is
/// lost) while batches commit without waiting for their WAL flush, the
/// default; its WAL writer is stopped half a second before, so that the
/// crash surely loses some (`scripts/services.sh pg-crash`). The batches it
/// loses lose their offsets with them: the running copy notices that the
/// stored offsets went back, reads those records again, and the counts stay
/// exact.
#[test]
fn postgres_crash_before_the_wal_flush_counts_exact() {
    const BACKLOG: usize = 60_000;
    /// Produced once the backlog is stored, while the monitor watches again.
    const MORE: usize = 2_000;
    let _serial = serial();
    let fx = Fixture::new("exactly_once_postgres_crash", Backend::Postgres, &[]);
    fx.produce_prices(0..BACKLOG);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "5000 events", Duration::from_secs(120), || fx.prices() >= 5000);
    // Kafka's commits are advisory and may pass what the crash undoes: the
    // monitor pauses until the backlog, lost batches included, is stored.
    fx.stop_watching();
    let before = fx.prices();
    let crash = Command::new("bash").arg(services_script()).arg("pg-crash").output().unwrap();
    let said = String::from_utf8_lossy(&crash.stderr);
    assert!(crash.status.success(), "scripts/services.sh pg-crash failed: {said}");
    wait_running(&[&svc], "the backlog stored", Duration::from_secs(300), || fx.prices() >= BACKLOG as i64);
    fx.watch_again();
    fx.produce_prices(BACKLOG..BACKLOG + MORE);
    fx.assert_stats_exact(&[&svc], BACKLOG + MORE);
    let log = svc.log_text();
    let read_again = log.matches("stored offset is behind what this copy handled").count();
    println!(
        "exactly_once_postgres_crash: {before} events visible before the crash; partitions read again: {read_again}"
    );
    assert!(read_again > 0, "the crash lost no commit (or none was noticed): the test proves nothing");
}
