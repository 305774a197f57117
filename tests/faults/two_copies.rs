//! Two copies in one group, one SIGKILLed.

use std::time::Duration;

use cronsumer::db::Backend;

use crate::fixture::*;
use crate::support::*;

/// Two copies share the partitions; one is SIGKILLed mid-stream and the
/// survivor takes its partitions over (after the 6 s session timeout) and
/// stores everything exactly once.
#[test]
fn two_copies_one_killed() {
    let _serial = serial();
    let fx = Fixture::new("two_copies_one_killed", Backend::Postgres, &[]);
    let a = fx.start("copy-a", &[]);
    let b = fx.start("copy-b", &[]);
    // Both hold partitions before anything is produced, so the killed one dies holding work.
    wait_running(&[&a, &b], "both copies assigned partitions", Duration::from_secs(120), || {
        a.assigned() > 0.0 && b.assigned() > 0.0
    });
    fx.produce_notifications(STREAM);
    wait_running(&[&a, &b], "2000 rows", Duration::from_secs(180), || fx.rows() >= 2000);
    a.kill9();
    let at_kill = fx.rows();
    println!("two_copies_one_killed: copy-a SIGKILLed with {at_kill} rows stored");
    assert!(at_kill < STREAM as i64, "the stream was not interrupted ({at_kill} rows): the test proves nothing");

    fx.wait_all(&[&b], STREAM, Duration::from_secs(180));
    b.assert_running("at the end");
    fx.assert_exactly_once(STREAM, 0);
}
