//! A record that makes the handler panic, every time.

use std::time::Duration;

use cronsumer::db::{self, Backend};

use crate::fixture::*;
use crate::support::*;

/// With `CRONSUMER_FAULT_PANIC_PAYLOAD=PANIC-ME` the handler panics on the one
/// record holding that text: the supervisor restarts the consumer thread after
/// each panic, the record is dead-lettered after its third panic, the other
/// 999 are stored, and the process never exits.
#[test]
fn handler_panic_poison_record() {
    let _serial = serial();
    const N: usize = 1000;
    const POISON_AT: usize = 500;
    let fx = Fixture::new("handler_panic_poison_record", Backend::Sqlite, &[]);
    let poison = format!(r#"{{"user_id":{POISON_AT},"event":"e","content":"PANIC-ME"}}"#).into_bytes();
    let payloads: Vec<Vec<u8>> =
        (0..N).map(|i| if i == POISON_AT { poison.clone() } else { notification(i) }).collect();
    produce(&fx.s, &fx.topic, &payloads);

    let svc = fx.start("service", &[(cronsumer::consume::fault_injection::PANIC_PAYLOAD_ENV, "PANIC-ME")]);
    // Restarts back off 1 s, 2 s, 4 s... and the supervisor looks every 5 s.
    wait_running(&[&svc], "999 rows and 1 dead letter", Duration::from_secs(120), || {
        fx.rows() >= (N - 1) as i64 && fx.dead() >= 1
    });
    wait_running(&[&svc], "commits of all 1000", Duration::from_secs(60), || fx.commits(&fx.topic) == Some(N as i64));
    svc.assert_running("at the end");

    let dead = db::dead_letters::list(&mut fx.pool.get().unwrap(), Some(fx.topic.as_str()), 10).unwrap();
    assert_eq!(dead.len(), 1, "dead letters: {dead:?}");
    assert_eq!(dead[0].payload.as_deref(), Some(poison.as_slice()), "the dead letter is not the poison record");
    assert!(dead[0].error.contains("panicked"), "dead letter error {:?} does not say it panicked", dead[0].error);
    let m = svc.metrics();
    let restarts = metric(&m, r#"cronsumer_consumer_restarts_total{cause="ended"}"#).unwrap_or(0.0);
    println!(
        "handler_panic_poison_record: consumer restarts (ended) = {restarts}, dead letter error: {}",
        dead[0].error
    );
    assert!(restarts > 0.0, "no consumer restart counted in /metrics:\n{m}");
    fx.assert_exactly_once(N, 1);
}
