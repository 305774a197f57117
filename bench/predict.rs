//! (9) the predictions module against a model server answering in 50 ms,
//! batch 25 and 500, 1 and 4 lanes, on PostgreSQL; beside it, the Python
//! peer doing the same job (`bench/predict_peer.py`) in the same invocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cronsumer::config::Settings;
use cronsumer::consume::heartbeat::Heartbeat;
use cronsumer::consume::thread::spawn;
use cronsumer::db::Backend;

use crate::report::{Drained, Stats, Table};
use crate::support::*;
use crate::{env_usize, with};

/// How long the model takes to answer.
pub const MODEL_LATENCY: Duration = Duration::from_millis(50);

fn candle(i: usize) -> Vec<u8> {
    let symbol = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"][i % 4];
    format!(r#"{{"symbol":"{symbol}","x":{i},"open":100.5,"high":101.0,"low":99.5,"close":100.75,"volume":12.5}}"#)
        .into_bytes()
}

/// The service's consumer thread with the predictions module on, until `n`
/// records are handled; timed from the first.
fn service(s: &Settings, model: &str, topic: &str, n: usize, batch: usize, lanes: usize) -> f64 {
    let tdb = TestDb::new(Backend::Postgres);
    let mut vars = vec![("PREDICT_URL", model.to_string()), ("PREDICT_MODEL", "m".into())];
    vars.push(("KAFKA_TOPIC_PREDICTIONS", topic.trim_start_matches(&s.kafka_topic_prefix).to_string()));
    vars.push(("CONSUMER_BATCH_SIZE_PREDICTIONS", batch.to_string()));
    vars.push(("CONSUMER_CONCURRENCY", lanes.to_string()));
    vars.push(("KAFKA_GROUP_ID", unique("bench-predict-")));
    let s = with(s, &tdb.url, &vars);
    let heartbeat = Arc::new(Heartbeat::default());
    let stop = Arc::new(cronsumer::common::shutdown::StopRequest::default());
    let handle = spawn(setup(&s, &tdb.pool()).build(), heartbeat.clone(), stop.clone()).unwrap();
    while heartbeat.records() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (started, first) = (Instant::now(), heartbeat.records());
    while heartbeat.records() < n as u64 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let rate = (heartbeat.records() - first) as f64 / started.elapsed().as_secs_f64();
    stop.request(Instant::now() + Duration::from_secs(10));
    handle.join().unwrap().unwrap();
    rate
}

/// The Python peer of the same job, into a SQLite file.
fn peer(s: &Settings, model: &str, topic: &str, n: usize, batch: usize) -> f64 {
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = std::env::temp_dir().join(unique("bench-predict-peer-"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/predict_peer.py"))
        .args([
            &s.kafka_bootstrap_servers,
            topic,
            &unique("bench-predict-peer-"),
            dir.join("peer.db").to_str().unwrap(),
        ])
        .args([model.to_string(), n.to_string(), batch.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} bench/predict_peer.py: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "bench/predict_peer.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("predict_peer.py prints one JSON line");
    v["records_per_s"].as_f64().unwrap()
}

/// Runs case (9), adding its rows to `table`; returns the lines comparing 4 lanes with the peer.
pub fn predictions(runs: usize, table: &mut Table) -> Vec<String> {
    // A prefix of its own: the other modules' topics exist and are empty, so
    // that only candles are counted (the notifications of the other cases
    // would be handled too, and counted, under the shared prefix).
    let own = settings("unused.db", &unique("bench-predict"), &[("RUST_LOG", "warn")]);
    let (base, _registry) = (&own, TestTopics::registry(&own, 4));
    let model = ModelStub::start(false);
    model.behave(|b| b.delay = MODEL_LATENCY);
    let topic = base.topic("bench-candles");
    let _topics = TestTopics::create(base, &[&topic], 4);
    let n = env_usize("BENCH_PREDICT_RECORDS", 40_000);
    let started = Instant::now();
    produce(base, &topic, &(0..n).map(candle).collect::<Vec<_>>());
    println!("prepared {n} candles in {topic} in {:.1} s", started.elapsed().as_secs_f64());
    let mut lines = Vec::new();
    for batch in [25, 500] {
        // At 50 ms a call, a lane handles at most batch / 50 ms: fewer records keep the slow cases short.
        let records = n.min(batch * 20 * 25);
        let mut medians = Vec::new();
        for lanes in [1, 4] {
            let name = format!("(9) predictions, model 50 ms, batch {batch}, {lanes} lane(s)");
            let before = model.calls().len();
            let values = (0..runs).map(|_| service(base, &model.url, &topic, records, batch, lanes)).collect();
            let calls = model.calls();
            let sizes: Vec<usize> = calls[before..].iter().map(|c| c.xs.len()).collect();
            println!(
                "  (9) batch {batch}, {lanes} lane(s): {} calls, {:.1} instances per call, at most {}",
                sizes.len(),
                sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64,
                sizes.iter().max().unwrap_or(&0)
            );
            let st = Stats {
                name,
                values,
                unit: "records/s",
                target: if lanes == 4 { ">= 3x peer" } else { "-" }.into(),
                cpu: vec![],
            };
            medians.push(st.median());
            table.add(st, None);
        }
        let drains: Vec<Drained> = (0..runs)
            .map(|_| Drained { rate: peer(base, &model.url, &topic, records, batch), cpu_per_10k: 0.0 })
            .collect();
        let peer_stats = Stats::of(format!("(9) Python peer of predictions, batch {batch}"), drains, "-");
        let peer_median = peer_stats.median();
        table.add(Stats { cpu: vec![], ..peer_stats }, None);
        lines.push(format!(
            "  (9) batch {batch}: 4 lanes {:.0} / peer {peer_median:.0} = {:.2}x; 4 lanes / 1 lane = {:.2}x; model calls in flight at most {}",
            medians[1],
            medians[1] / peer_median,
            medians[1] / medians[0],
            model.peak_in_flight()
        ));
    }
    lines
}
