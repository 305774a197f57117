//! The predictions module through kill -9: each record's prediction stored
//! once, whatever the model was asked again after the crash.

use std::time::Duration;

use cronsumer::db::{self, Backend};
use serde_json::json;

use crate::fixture::*;
use crate::support::*;

const N: usize = 6_000;

/// SIGKILL while 6,000 candles stream through a model answering in 20 ms
/// (batches of 100, in four lanes on PostgreSQL); a fresh process finishes.
/// Every record has one prediction: none lost, none stored twice, although
/// the batches in flight at the kill were predicted again.
fn kill_9_mid_stream_predicts_each_record_once(backend: Backend) {
    let _serial = serial();
    let model = ModelStub::start(false);
    model.behave(|b| b.delay = Duration::from_millis(20));
    let extra = [("PREDICT_URL", model.url.as_str()), ("CONSUMER_BATCH_SIZE_PREDICTIONS", "100")];
    let fx = Fixture::new("predictions_kill_9", backend, &extra);
    let topic = fx.s.module_topic("predictions", "candles");
    let payloads: Vec<Vec<u8>> =
        (0..N).map(|x| json!({"symbol": "BTCUSDT", "x": x}).to_string().into_bytes()).collect();
    produce(&fx.s, &topic, &payloads);
    let count = || db::predictions::count(&mut fx.pool.get().unwrap()).unwrap();
    let first = fx.start("first", &[]);
    wait_running(&[&first], "1500 predictions", Duration::from_secs(120), || count() >= 1500);
    first.kill9();
    let at_kill = count();
    assert!(at_kill < N as i64, "the stream was not interrupted ({at_kill} predictions): the test proves nothing");
    let second = fx.start("second", &[]);
    wait_running(&[&second], "every prediction", Duration::from_secs(180), || count() >= N as i64);
    wait_running(&[&second], "commits of every record", Duration::from_secs(60), || {
        fx.commits(&topic) == Some(N as i64)
    });
    let positions = db::predictions::positions(&mut fx.pool.get().unwrap()).unwrap();
    let mut distinct = positions.clone();
    distinct.dedup();
    let again = model.predicted().values().filter(|&&n| n > 1).count();
    fx.report(N, positions.len(), fx.dead() as usize, positions.len() - distinct.len());
    println!("predictions_kill_9 {}: SIGKILL at {at_kill}; {again} records predicted again", backend_name(backend));
    assert_eq!(
        (positions.len(), distinct.len(), fx.dead()),
        (N, N, 0),
        "predictions, distinct positions, dead letters"
    );
    assert_eq!(model.predicted().len(), N, "records the model predicted");
}
both_backends!(kill_9_mid_stream_predicts_each_record_once);
