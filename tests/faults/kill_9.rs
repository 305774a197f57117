//! SIGKILL mid-stream, then a restart.

use std::time::Duration;

use cronsumer::db::Backend;

use crate::fixture::*;
use crate::support::*;

/// SIGKILL while 20,000 records stream in; a fresh process re-reads the
/// uncommitted batch, and the unique source columns absorb the repeats.
fn kill_9_mid_stream(backend: Backend) {
    let _serial = serial();
    let fx = Fixture::new("kill_9_mid_stream", backend, &[]);
    fx.produce_notifications(STREAM);
    let first = fx.start("first", &[]);
    wait_running(&[&first], "3000 rows", Duration::from_secs(180), || fx.rows() >= 3000);
    first.kill9();
    let at_kill = fx.rows();
    println!("kill_9_mid_stream {}: SIGKILL with {at_kill} rows stored", backend_name(backend));
    assert!(at_kill < STREAM as i64, "the stream was not interrupted ({at_kill} rows): the test proves nothing");
    // The killed process never committed past what it had stored.
    fx.assert_commits_covered();

    fx.second_copy_finishes(STREAM);
}
both_backends!(kill_9_mid_stream);
