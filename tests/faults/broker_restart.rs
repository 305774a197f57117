//! The broker stopped for 15 s mid-stream.

use std::time::{Duration, Instant};

use cronsumer::db::Backend;

use crate::fixture::*;
use crate::support::*;

/// The broker goes away for 15 s while 20,000 records stream in: the service
/// keeps running (commits fail and are retried, handlers are idempotent) and
/// finishes the stream once the broker is back.
#[test]
fn broker_restart_mid_stream() {
    let _serial = serial();
    // Client errors that last longer than the stall timeout make /healthz fail and the client be recreated.
    let fx = Fixture::new("broker_restart_mid_stream", Backend::Sqlite, &[("CONSUMER_STALL_TIMEOUT_MS", "4000")]);
    fx.produce_notifications(STREAM);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "2000 rows", Duration::from_secs(180), || fx.rows() >= 2000);

    let mut broker = Broker::new(&fx);
    let outage = Instant::now();
    broker.stop();
    svc.assert_running("right after the broker stopped");
    // /healthz reports client errors that last longer than
    // CONSUMER_STALL_TIMEOUT_MS (beside other problems the outage causes,
    // such as handled records waiting for a commit); /readyz, which checks
    // that the broker answers, must report the outage too.
    let mut healthz_saw: Option<String> = None;
    let mut readyz_saw: Option<String> = None;
    while outage.elapsed() < Duration::from_secs(15) {
        svc.assert_running("during the broker outage");
        if healthz_saw.is_none() {
            let answer = svc.healthz().filter(|(code, body)| *code != 200 && body.contains("kafka client failing for"));
            if let Some((code, body)) = answer {
                healthz_saw = Some(format!("{code} {body}"));
            }
        }
        if readyz_saw.is_none() {
            if let Some((code, body)) = svc.get("/readyz").filter(|(code, _)| *code != 200) {
                readyz_saw = Some(format!("{code} {body}"));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("broker outage seen by /healthz: {}", healthz_saw.as_deref().unwrap_or("no client failure named"));
    println!("broker outage seen by /readyz: {}", readyz_saw.as_deref().unwrap_or("no (stayed 200)"));
    broker.start();
    svc.assert_running("after the broker came back");
    assert!(readyz_saw.is_some(), "/readyz answered 200 throughout the 15 s broker outage");
    let healthz = healthz_saw.unwrap_or_default();
    assert!(healthz.starts_with("503") && healthz.contains("kafka client failing for"), "/healthz: {healthz}");
    // The failing thread finishes what it holds and leaves before the fresh client starts.
    wait_running(&[&svc], "the client recreated", Duration::from_secs(60), || {
        let m = svc.metrics();
        metric(&m, r#"cronsumer_consumer_restarts_total{cause="client_errors"}"#).unwrap_or(0.0) >= 1.0
    });

    fx.wait_all(&[&svc], STREAM, Duration::from_secs(300));
    svc.assert_running("at the end");
    let m = svc.metrics();
    println!(
        "broker_restart_mid_stream: commit errors during the outage: {}",
        metric_sum(&m, "cronsumer_commit_errors_total")
    );
    fx.assert_exactly_once(STREAM, 0);
}
