//! SIGTERM mid-batch, then a restart.

use std::time::Duration;

use cronsumer::db::Backend;

use crate::fixture::*;
use crate::support::*;

/// SIGTERM while 20,000 records stream in: the process finishes and commits
/// the batch in hand and exits 0 within 10 s, its commits match the stored
/// rows exactly, and a restart stores the rest.
fn sigterm_mid_batch_then_restart(backend: Backend) {
    let _serial = serial();
    let fx = Fixture::new("sigterm_mid_batch_then_restart", backend, &[("SHUTDOWN_TIMEOUT_MS", "5000")]);
    fx.produce_notifications(STREAM);
    let first = fx.start("first", &[]);
    wait_running(&[&first], "2000 rows", Duration::from_secs(180), || fx.rows() >= 2000);
    first.term();
    let status = first.wait_exit(Duration::from_secs(10)).expect("cronsumer did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    let stored = fx.rows();
    assert!(stored < STREAM as i64, "the stream was not interrupted ({stored} rows): the test proves nothing");
    let commits = try_committed(&fx.s, &fx.topic, PARTITIONS).expect("committed offsets");
    assert_eq!(sum_offsets(&commits), stored, "after a clean stop, commits {commits:?} vs {stored} stored rows");
    fx.assert_commits_covered();

    fx.second_copy_finishes(STREAM);
}
both_backends!(sigterm_mid_batch_then_restart);
