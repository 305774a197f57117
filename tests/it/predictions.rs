//! The predictions module against the real broker, both databases and a
//! local model server ([`ModelStub`]) in both protocols: each record's
//! prediction stored once, each answer's rule (refusals found and
//! dead-lettered, batches split, a server away or set up wrong waited for
//! with nothing dead-lettered), a batch of 10,000, and what people see (the
//! API, the CSV export, `topics` and `config` while the module is off).

use std::time::Duration;

use cronsumer::config::Settings;
use cronsumer::db::{self, Backend, Pool};
use serde_json::{json, Value};

use crate::consumer::Running;
use crate::support::*;

/// A candle whose `x` the stub doubles (a negative one it refuses).
fn candle(x: i64) -> Vec<u8> {
    let symbol = if x % 2 == 0 { "BTCUSDT" } else { "ETHUSDT" };
    json!({"symbol": symbol, "x": x, "open": 100.5, "close": 101.0}).to_string().into_bytes()
}

struct World {
    tdb: TestDb,
    pool: Pool,
    s: Settings,
    model: ModelStub,
    topic: String,
    _topics: TestTopics,
}

fn world(backend: Backend, v2: bool, partitions: i32, extra: &[(&str, &str)]) -> World {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let model = ModelStub::start(v2);
    let mut vars = vec![("PREDICT_URL", model.url.as_str()), ("PREDICT_MODEL", "m")];
    if v2 {
        vars.extend([("PREDICT_PROTOCOL", "v2"), ("PREDICT_INPUT_FIELDS", "x,open")]);
    }
    vars.extend_from_slice(extra);
    let s = settings(&tdb.url, &unique("pred"), &vars);
    let topic = s.module_topic("predictions", "candles");
    let _topics = TestTopics::registry(&s, partitions);
    World { tdb, pool, s, model, topic, _topics }
}

fn count(pool: &Pool) -> i64 {
    db::predictions::count(&mut pool.get().unwrap()).unwrap()
}

fn stored(pool: &Pool) -> Vec<db::predictions::Prediction> {
    db::predictions::recent(&mut pool.get().unwrap(), None, 1_000_000).unwrap()
}

fn dead_reasons(pool: &Pool) -> Vec<String> {
    db::dead_letters::previews(&mut pool.get().unwrap(), None, 1000).unwrap().into_iter().map(|d| d.error).collect()
}

/// 300 candles, two refused by the model, two not JSON objects: 296
/// predictions (each the stub's answer for its record, the model asked once
/// per record), four dead letters saying why, commits covering all.
fn each_record_predicted_once(backend: Backend, v2: bool) {
    let w = world(backend, v2, 2, &[("CONSUMER_BATCH_SIZE_PREDICTIONS", "100")]);
    let mut payloads: Vec<Vec<u8>> = (0..300).map(|x| candle(if x == 17 || x == 150 { -x } else { x })).collect();
    payloads[40] = b"not json".to_vec();
    payloads[41] = b"[1, 2]".to_vec();
    produce(&w.s, &w.topic, &payloads);
    let run = Running::start(&w.s, &w.pool, vec![]);
    wait_for("300 records settled", Duration::from_secs(90), || count(&w.pool) + count_dead_letters(&w.pool) >= 300);
    wait_for("commits of all 300", Duration::from_secs(30), || sum_offsets(&committed(&w.s, &w.topic, 2)) == 300);
    run.stop();
    let rows = stored(&w.pool);
    assert_eq!(rows.len(), 296);
    for r in &rows {
        let input: Value = serde_json::from_str(&r.input).unwrap();
        let x = input["x"].as_i64().unwrap();
        let want = json!({"p": x as f64 * 2.0});
        assert_eq!(serde_json::from_str::<Value>(&r.prediction).unwrap(), want, "record {x}");
        assert_eq!(r.key.as_deref(), Some(if x % 2 == 0 { "BTCUSDT" } else { "ETHUSDT" }));
        assert_eq!((r.model.as_str(), r.source_topic.as_str()), ("m", w.topic.as_str()));
    }
    let mut reasons = dead_reasons(&w.pool);
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| r.starts_with("the model refused this record")).count(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("not valid JSON")), "{reasons:?}");
    let predicted = w.model.predicted();
    assert_eq!(predicted.len(), 296, "records the model predicted");
    assert!(predicted.values().all(|&n| n == 1), "a record predicted twice without a fault");
    assert_commits_covered_by(&w, 2);
}

fn each_record_predicted_once_json(backend: Backend) {
    each_record_predicted_once(backend, false)
}
both_backends!(each_record_predicted_once_json);

fn each_record_predicted_once_v2(backend: Backend) {
    each_record_predicted_once(backend, true)
}
both_backends!(each_record_predicted_once_v2);

/// Every offset below the commits is a prediction or a dead letter.
fn assert_commits_covered_by(w: &World, partitions: i32) {
    let commits = committed(&w.s, &w.topic, partitions);
    let mut held: Vec<(i32, i64)> =
        db::predictions::positions(&mut w.pool.get().unwrap()).unwrap().into_iter().map(|(_, p, o)| (p, o)).collect();
    held.extend(stored_sources(&w.pool, &w.topic).1);
    for (p, c) in commits {
        for o in 0..c {
            assert!(
                held.contains(&(p, o)),
                "{}/{p} committed {c} past {o}, neither predicted nor dead-lettered",
                w.topic
            );
        }
    }
}

/// The model server answers 503 (with `Retry-After`), then drops every
/// connection, then comes back: nothing is stored or dead-lettered while it
/// is away, the consumer says why, and every record is predicted after.
fn the_model_server_away_loses_nothing(backend: Backend) {
    // One partition: the calls of one lane, one after another.
    let w = world(backend, false, 1, &[]);
    w.model.behave(|b| {
        b.status = Some(503);
        b.headers = vec![("Retry-After".into(), "1".into())];
    });
    produce(&w.s, &w.topic, &(0..100).map(candle).collect::<Vec<_>>());
    let run = Running::start(&w.s, &w.pool, vec![]);
    wait_for("calls answered 503", Duration::from_secs(60), || w.model.calls().len() >= 3);
    let waiting = run.heartbeat.in_hand().expect("a batch waits");
    assert!(waiting.reason.contains("HTTP 503"), "{}", waiting.reason);
    w.model.behave(|b| {
        b.status = None;
        b.away = true;
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (count(&w.pool), count_dead_letters(&w.pool)),
        (0, 0),
        "stored or dead-lettered while the model was away"
    );
    let gaps: Vec<Duration> =
        w.model.calls().windows(2).filter(|c| c[0].status == 503).map(|c| c[1].at - c[0].at).collect();
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(900)), "a retry before Retry-After: {gaps:?}");
    w.model.behave(|b| b.away = false);
    wait_for("100 predictions", Duration::from_secs(60), || count(&w.pool) >= 100);
    run.stop();
    assert_eq!((count(&w.pool), count_dead_letters(&w.pool)), (100, 0));
}
both_backends!(the_model_server_away_loses_nothing);

/// A server that wants a token it is not given (401) is set up wrong, not
/// the records: they wait, nothing is dead-lettered, the consumer says why;
/// once it is set right, they are predicted.
fn a_misconfigured_model_server_dead_letters_nothing(backend: Backend) {
    let w = world(backend, false, 1, &[]);
    w.model.behave(|b| b.token = Some("sesame".into()));
    produce(&w.s, &w.topic, &(0..20).map(candle).collect::<Vec<_>>());
    let run = Running::start(&w.s, &w.pool, vec![]);
    wait_for("calls answered 401", Duration::from_secs(60), || {
        w.model.calls().iter().filter(|c| c.status == 401).count() >= 2
    });
    let waiting = run.heartbeat.in_hand().expect("a batch waits");
    assert!(waiting.reason.contains("HTTP 401"), "{}", waiting.reason);
    assert_eq!(count_dead_letters(&w.pool), 0);
    w.model.behave(|b| b.token = None);
    wait_for("20 predictions", Duration::from_secs(60), || count(&w.pool) >= 20);
    run.stop();
    assert_eq!(count_dead_letters(&w.pool), 0);
}
both_backends!(a_misconfigured_model_server_dead_letters_nothing);

/// Batches too large (413) and answers one prediction short are split
/// until they fit: every record is predicted, none dead-lettered.
fn too_large_and_short_answers_are_split(backend: Backend) {
    let w = world(backend, false, 1, &[("CONSUMER_BATCH_SIZE_PREDICTIONS", "100")]);
    w.model.behave(|b| b.max_batch = Some(30));
    produce(&w.s, &w.topic, &(0..200).map(candle).collect::<Vec<_>>());
    let run = Running::start(&w.s, &w.pool, vec![]);
    wait_for("200 predictions", Duration::from_secs(60), || count(&w.pool) >= 200);
    assert!(w.model.calls().iter().any(|c| c.status == 413), "no batch was too large");
    assert!(w.model.calls().iter().filter(|c| c.status == 200).all(|c| c.xs.len() <= 30));
    w.model.behave(|b| {
        b.max_batch = None;
        b.short = true;
    });
    produce(&w.s, &w.topic, &(200..260).map(candle).collect::<Vec<_>>());
    wait_for("260 predictions", Duration::from_secs(60), || count(&w.pool) >= 260);
    run.stop();
    assert_eq!((count(&w.pool), count_dead_letters(&w.pool)), (260, 0));
}
both_backends!(too_large_and_short_answers_are_split);

/// `CONSUMER_BATCH_SIZE_PREDICTIONS=10000`: one call carries 10,000 records.
fn a_batch_of_ten_thousand(backend: Backend) {
    let extra = [("CONSUMER_BATCH_SIZE_PREDICTIONS", "10000"), ("CONSUMER_BATCH_TIMEOUT_MS_PREDICTIONS", "5000")];
    let w = world(backend, false, 1, &extra);
    produce(&w.s, &w.topic, &(0..10_000).map(candle).collect::<Vec<_>>());
    let run = Running::start(&w.s, &w.pool, vec![]);
    wait_for("10000 predictions", Duration::from_secs(120), || count(&w.pool) >= 10_000);
    run.stop();
    let largest = w.model.calls().iter().map(|c| c.xs.len()).max().unwrap_or(0);
    assert_eq!(largest, 10_000, "the largest call");
    assert_eq!(count(&w.pool), 10_000);
}
both_backends!(a_batch_of_ten_thousand);

/// The service with the module on: the latest prediction per key over HTTP,
/// the CSV export, `topics`; with it off, `topics` and `config` say so.
#[test]
fn people_see_predictions_and_whether_the_module_is_on() {
    let w = world(Backend::Sqlite, false, 1, &[]);
    let mut payloads: Vec<Vec<u8>> = (0..10).map(candle).collect();
    payloads.push(json!({"symbol": "<b>hostile</b>", "x": 10}).to_string().into_bytes());
    produce(&w.s, &w.topic, &payloads);
    let svc = Service::start(&w.s, &w.tdb.url, &[]);
    svc.wait_for("11 predictions", Duration::from_secs(60), || count(&w.pool) >= 11);
    let (_, page) = svc.get("/").unwrap();
    let section = page.split("<section id=predictions>").nth(1).expect("the console's predictions section");
    assert!(section.contains("ETHUSDT") && section.contains("11 predictions stored"), "{section}");
    assert!(section.contains("&lt;b&gt;hostile") && !page.contains("<b>hostile"), "a key is escaped: {section}");
    let (status, body) = svc.get("/v1/predictions/latest?key=BTCUSDT").unwrap();
    assert_eq!(status, 200, "{body}");
    let latest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((latest["key"].clone(), latest["prediction"].clone()), (json!("BTCUSDT"), json!({"p": 16.0})));
    assert_eq!(latest["source"]["offset"], json!(8));
    assert_eq!(svc.get("/v1/predictions/latest?key=NOPE").unwrap().0, 404);
    assert_eq!(svc.get("/v1/predictions/latest").unwrap().0, 400);
    assert_eq!(svc.terminate(), Some(0));
    let (code, csv, err) = cli(&w.s, &w.tdb.url, &["predictions", "export", "--csv"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 12, "{csv}");
    assert!(lines[0].starts_with("id,created_at,key,model"), "{}", lines[0]);
    assert!(lines[1].contains(",BTCUSDT,m,") && lines[1].contains(r#""{""p"":0.0}""#), "{}", lines[1]);
    let (code, out, _) = cli(&w.s, &w.tdb.url, &["topics"]);
    assert!(code == 0 && out.contains(&w.topic) && out.contains(" on"), "{out}");

    let off = settings(&w.tdb.url, &unique("off"), &[]);
    let (_, out, _) = cli(&off, &w.tdb.url, &["topics"]);
    assert!(out.contains("off (predictions): PREDICT_URL is not set"), "{out}");
    let (code, out, _) = cli(&off, &w.tdb.url, &["config"]);
    assert!(code == 0 && out.contains("module predictions=off: PREDICT_URL is not set"), "{out}");
    let (code, _, err) = cli_env(
        env_of(&off, &w.tdb.url).into_iter().chain([("CONSUMER_BATCH_SIZE_PREDICTON".into(), "5".into())]),
        &["config"],
    );
    assert_eq!(code, 2, "a typo in a module's name: {err}");
    assert!(err.contains("CONSUMER_BATCH_SIZE_PREDICTON"), "{err}");
}
