//! The SQLite file locked by another process for 20 s.

use std::time::{Duration, Instant};

use cronsumer::db::Backend;

use crate::fixture::*;
use crate::support::*;

/// Another process holds the SQLite file's write lock for 20 s mid-stream:
/// writes time out, the batch is retried (and /healthz says so with 503),
/// nothing is committed past what is stored, and the same process finishes
/// the stream once the lock is gone.
#[test]
fn sqlite_locked_by_another_process() {
    let _serial = serial();
    const N: usize = 5000;
    const DURING: usize = 1000;
    let hold = Duration::from_secs(20);
    let fx = Fixture::new("sqlite_locked_by_another_process", Backend::Sqlite, &[]);
    fx.produce_notifications(N - DURING);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "1000 rows", Duration::from_secs(120), || fx.rows() >= 1000);

    let mut write_lock = WriteLock::take(&fx.tdb.url, hold);
    let locked = Instant::now();
    // Records that arrive while the lock is held: the service must try to
    // write during the outage, however fast it drained the first ones.
    fx.produce_notifications(DURING);
    let mut retrying_seen: Option<String> = None;
    while locked.elapsed() < hold {
        svc.assert_running("while the database was locked");
        if retrying_seen.is_none() {
            if let Some((code, body)) = svc.healthz() {
                if code == 503 && body.contains("retrying") {
                    retrying_seen = Some(body);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let holder = write_lock.describe();
    write_lock.release();
    println!("sqlite_locked_by_another_process: lock held by {holder}; /healthz said {retrying_seen:?}");
    assert!(retrying_seen.is_some(), "/healthz never answered 503 'retrying' while the database was locked for 20 s");
    // Commits never passed a record that is not stored.
    fx.assert_commits_covered();

    fx.wait_all(&[&svc], N, Duration::from_secs(180));
    svc.assert_running("at the end");
    fx.assert_exactly_once(N, 0);
}
