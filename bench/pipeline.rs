//! The benchmark harness (`bench/run.sh`): prints throughput, latency, RSS
//! and start-up figures, each throughput beside a reference measured in the
//! same invocation on the same topic. Figures are printed, never asserted.
//!
//! Cases: (1) a bare rdkafka BaseConsumer draining the topic (reference);
//! (2) cronsumer's consumer with a no-op module, batch 25 and 500; (3) the
//! service binary storing notifications into SQLite and PostgreSQL, batch 25
//! and 500, with its RSS; (4) produce→row and produce→webhook latency;
//! (5) draining 20,000 pending notifications to a local webhook; (6) time
//! from start to /readyz 200; (7) a careful Python consumer of the same job
//! (`bench/peer.py`) into SQLite, batch 25 and 500; (8) a module that waits
//! 100 ms per batch (a call to another service), 1 and 4 lanes. Case (3)
//! runs 1 and 4 lanes (`CONSUMER_CONCURRENCY`); (9) the predictions module
//! against a model answering in 50 ms, and its Python peer (`bench/predict.rs`).
//! Drains (1), (3) and (7)
//! also print CPU seconds per 10,000 records: every thread of the process,
//! from its start (the client prefetches records before the first one is
//! returned, so counting from the first record would miss the fetching).
//! With `BENCH_BASELINE_BIN`, (3) also runs that build of the binary,
//! alternating with this one; the peer's runs alternate with (3)'s SQLite runs.

#[path = "../tests/support/mod.rs"]
mod support;

mod latency;
mod predict;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cronsumer::common::record::Record;
use cronsumer::config::Settings;
use cronsumer::consume::handler::{Handler, HandlerContext, HandlerError};
use cronsumer::consume::heartbeat::Heartbeat;
use cronsumer::consume::thread::spawn;
use cronsumer::db::Backend;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use support::*;

use latency::latency;
use report::{cpu_model, cpu_secs, per_10k, Drained, Stats, Table};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// ~150-byte notification payloads.
fn payload(i: usize) -> Vec<u8> {
    format!(
        r#"{{"user_id": {i}, "event": "order_shipped", "content": "Your order #{i:08} has shipped and will arrive within 3 business days. Track it in the app."}}"#
    )
    .into_bytes()
}

/// Produces `n` records to `topic` (which exists).
fn prepare(s: &Settings, topic: &str, n: usize) {
    let started = Instant::now();
    let mut p = cronsumer::kafka::producer::RecordProducer::new(s).unwrap();
    for i in 0..n {
        p.send(topic, Some(format!("k{i}").as_bytes()), &payload(i)).unwrap();
    }
    p.finish(topic).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!("prepared {n} records in {topic}: {:.0} records/s produced", n as f64 / secs);
}

/// (1) a bare BaseConsumer with librdkafka's defaults in a fresh group: no
/// batching, no handler, no commit.
fn reference_drain(s: &Settings, topic: &str, n: usize) -> Drained {
    let mut cfg = rdkafka::ClientConfig::new();
    cfg.set("bootstrap.servers", &s.kafka_bootstrap_servers).set("group.id", unique("bench-ref-"));
    cfg.set("auto.offset.reset", "earliest").set("enable.auto.commit", "false");
    for (k, v) in std::env::var("BENCH_REF_PROPS").unwrap_or_default().split(',').filter_map(|kv| kv.split_once('=')) {
        cfg.set(k, v);
    }
    let cpu = cpu_secs(None);
    let c: BaseConsumer = cfg.create().unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut seen = 0;
    let mut started = None;
    while seen < n {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            m.unwrap();
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    let rate = n as f64 / started.unwrap().elapsed().as_secs_f64();
    Drained { rate, cpu_per_10k: per_10k(cpu_secs(None) - cpu, n as f64) }
}

/// (7) the Python peer (`bench/peer.py`, run by `BENCH_PYTHON`) into a SQLite file.
/// (7) the Python peer storing notifications; with `job`, (10) delivering them too.
fn peer_drain(s: &Settings, topic: &str, n: usize, batch: usize, job: bool) -> Drained {
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = std::env::temp_dir().join(unique("bench-peer-"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peer.py"))
        .args([&s.kafka_bootstrap_servers, topic, &unique("bench-peer-"), dir.join("peer.db").to_str().unwrap()])
        .args([n.to_string(), batch.to_string()])
        .args(job.then_some("job"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} bench/peer.py: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "bench/peer.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer.py prints one JSON line");
    let (rate, cpu) = (v["records_per_s"].as_f64().unwrap(), v["cpu_s"].as_f64().unwrap());
    Drained { rate, cpu_per_10k: per_10k(cpu, n as f64) }
}

struct NoOp;
impl Handler for NoOp {
    fn topic(&self) -> &'static str {
        "notifications"
    }
    fn handle(&self, _: &[Record], _: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn noop_modules() -> Vec<Box<dyn Handler>> {
    vec![Box::new(NoOp)]
}

/// How long [`Waits`] waits per batch.
const CALL: Duration = Duration::from_millis(100);

/// A module that waits [`CALL`] per batch, as one calling another service would.
struct Waits;
impl Handler for Waits {
    fn topic(&self) -> &'static str {
        "notifications"
    }
    fn handle(&self, _: &[Record], _: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        std::thread::sleep(CALL);
        Ok(())
    }
}

fn waiting_modules() -> Vec<Box<dyn Handler>> {
    vec![Box::new(Waits)]
}

/// (2) and (8) the consumer thread with `modules`, in `lanes` lanes, until
/// `n` records are handled; timed from the first record handled.
fn thread_drain(
    s: &Settings,
    backend: Backend,
    n: usize,
    batch: usize,
    lanes: usize,
    modules: fn() -> Vec<Box<dyn Handler>>,
) -> f64 {
    let tdb = TestDb::new(backend);
    let mut vars = vec![("CONSUMER_BATCH_SIZE", batch.to_string()), ("CONSUMER_CONCURRENCY", lanes.to_string())];
    vars.push(("KAFKA_GROUP_ID", unique("bench-thread-")));
    let s = with(s, &tdb.url, &vars);
    let heartbeat = Arc::new(Heartbeat::default());
    let stop = Arc::new(cronsumer::common::shutdown::StopRequest::default());
    let setup = setup(&s, &tdb.pool()).modules(modules).build();
    let handle = spawn(setup, heartbeat.clone(), stop.clone()).unwrap();
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

/// Settings `s` with another database and overrides.
fn with(s: &Settings, db_url: &str, vars: &[(&str, String)]) -> Settings {
    let mut env: std::collections::HashMap<String, String> = env_of(s, db_url).into_iter().collect();
    env.insert("RUST_LOG".into(), "warn".into());
    for (k, v) in vars {
        env.insert(k.to_string(), v.clone());
    }
    Settings::from_vars(env).unwrap()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// (3) + (6) the service binary storing notifications; returns its drain,
/// peak RSS MiB, steady RSS MiB and ms to ready. With `job`, (10): the
/// drain ends when every notification is sent (`NOTIFIER=log`, its line
/// filtered out by the log level).
/// `baseline`: another build of the binary, which migrates its own database.
fn service_drain(
    s: &Settings,
    backend: Backend,
    n: usize,
    (batch, lanes, job): (usize, usize, bool),
    baseline: Option<&Path>,
) -> (Drained, f64, f64, f64) {
    let tdb = TestDb::new(backend);
    if baseline.is_none() {
        tdb.pool(); // migrated before the clock starts
    }
    let mut vars = vec![("CONSUMER_BATCH_SIZE", batch.to_string()), ("KAFKA_GROUP_ID", unique("bench-svc-"))];
    vars.push(("CONSUMER_CONCURRENCY", lanes.to_string()));
    vars.push(("NOTIFIER", "log".into()));
    let s = with(s, &tdb.url, &vars);
    let started = Instant::now();
    let env = [("RUST_LOG", "warn")];
    let svc = match baseline {
        Some(bin) => Service::start_bin(bin, &s, &tdb.url, &env),
        None => Service::start(&s, &tdb.url, &env),
    };
    let (http, pid) = (svc.http.clone(), svc.pid());
    svc.wait_for("ready", Duration::from_secs(60), || http_get(&http, "/readyz").is_some_and(|(c, _)| c == 200));
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    let http = svc.http.clone();
    let metric = |name: &str| metric_sum(&http_get(&http, "/metrics").map(|(_, b)| b).unwrap_or_default(), name);
    let consumed = || metric("cronsumer_records_consumed_total");
    let sent = || metric("cronsumer_notifications_total");
    let mut first = (Instant::now(), 0.0);
    svc.wait_for("first records", Duration::from_secs(60), || {
        first = (Instant::now(), consumed());
        first.1 > 0.0
    });
    let mut steady = Vec::new();
    svc.wait_for("all records", Duration::from_secs(600), || {
        steady.push(rss_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
        consumed() >= n as f64 && (!job || sent() >= n as f64)
    });
    let rate = (n as f64 - first.1) / first.0.elapsed().as_secs_f64();
    let cpu_per_10k = per_10k(cpu_secs(Some(pid)), n as f64);
    let peak = rss_kib(pid, "VmHWM:") as f64 / 1024.0;
    steady.sort();
    let steady_mib = steady[steady.len() / 2] as f64 / 1024.0;
    assert_eq!(svc.terminate(), Some(0));
    assert_eq!(count_notifications(&tdb.pool()), n as i64, "bench run lost or duplicated rows");
    (Drained { rate, cpu_per_10k }, peak, steady_mib, ready_ms)
}

/// (5) `n` pending notifications drained by one job run to a local webhook
/// that answers after `delay`.
fn delivery(s: &Settings, backend: Backend, n: usize, delay: Duration) -> f64 {
    use cronsumer::schedule::Trigger;
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let sink = Sink::ok();
    sink.set_delay(delay);
    insert_pending(&pool, "bench", n);
    let s = with(s, &tdb.url, &[("NOTIFIER", "webhook".into()), ("NOTIFY_WEBHOOK_URL", sink.url.clone())]);
    let runner = runner(Arc::new(cronsumer::deliver::sender::SendNotifications::new(&s)), job_context(&s, &pool));
    let started = Instant::now();
    runner.run(Trigger::Manual);
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(sink.delivered().len(), n);
    rate
}

fn main() {
    let runs = env_usize("BENCH_RUNS", 3);
    let n = env_usize("BENCH_RECORDS", 200_000);
    let latency_secs = env_usize("BENCH_LATENCY_SECS", 60);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let baseline = std::env::var_os("BENCH_BASELINE_BIN").map(PathBuf::from);
    let want = |case: &str| only.is_empty() || only.split(',').any(|c| c == case);
    println!("cronsumer benchmarks: {runs} run(s) per case, {n} records, 4 partitions, ~150-byte JSON");
    println!("machine: {} cores, {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), cpu_model());
    let base = settings("unused.db", &unique("bench"), &[("RUST_LOG", "warn")]);
    let (_topics, topic) = registry_topics(&base, 4);
    prepare(&base, &topic, n);
    let mut table = Table { rows: vec![] };
    let reference = Stats::of(
        "(1) reference: bare BaseConsumer drain".into(),
        (0..runs).map(|_| reference_drain(&base, &topic, n)).collect(),
        "-",
    );
    let r = reference.median();
    table.add(reference, Some(r));
    if want("noop") {
        for (batch, target) in [(25, "-"), (500, ">= 0.8")] {
            let st = Stats {
                name: format!("(2) consumer, no-op module, batch {batch}"),
                values: (0..runs).map(|_| thread_drain(&base, Backend::Sqlite, n, batch, 1, noop_modules)).collect(),
                unit: "records/s",
                target: target.into(),
                cpu: vec![],
            };
            table.add(st, Some(r));
        }
    }
    // Medians of the lane cases, for the ratios of 4 lanes to 1.
    let mut by_lanes: std::collections::BTreeMap<String, [f64; 2]> = Default::default();
    if want("waits") {
        let count = env_usize("BENCH_WAITS_RECORDS", 4_000);
        for (i, (lanes, target)) in [(1, "-"), (4, ">= 3.5x 1 lane")].into_iter().enumerate() {
            let name = format!("(8) a module waiting {} ms per batch of 25, {lanes} lane(s)", CALL.as_millis());
            let values =
                (0..runs).map(|_| thread_drain(&base, Backend::Postgres, count, 25, lanes, waiting_modules)).collect();
            let st = Stats { name, values, unit: "records/s", target: target.into(), cpu: vec![] };
            by_lanes.entry("(8) waiting module".into()).or_default()[i] = st.median();
            table.add(st, None);
        }
    }
    let mut memory = Vec::new();
    // The peer's runs alternate with the service's SQLite runs, so that both see the same machine.
    let mut peer: std::collections::BTreeMap<usize, Vec<Drained>> = Default::default();
    if want("db") {
        let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
        let backends = [Backend::Sqlite, Backend::Postgres]
            .into_iter()
            .filter(|b| backends.contains(&format!("{b:?}").to_lowercase()));
        for backend in backends {
            for (batch, lanes, target) in [
                (25, 1, if backend == Backend::Sqlite { ">= 0.95" } else { "-" }),
                (25, 4, if backend == Backend::Sqlite { "reported" } else { ">= 0.85, >= 1.8x 1 lane" }),
                (500, 1, if backend == Backend::Sqlite { ">= 0.97" } else { "reported" }),
                (500, 4, "reported"),
            ] {
                let (mut drains, mut before) = (Vec::new(), Vec::new());
                for _ in 0..runs {
                    // The baseline's runs alternate with this build's, so both see the same machine.
                    if let Some(bin) = baseline.as_ref().filter(|_| lanes == 1) {
                        let (drained, peak, steady, ready) =
                            service_drain(&base, backend, n, (batch, 1, false), Some(bin));
                        before.push(drained);
                        memory.push(("baseline ", backend, batch, lanes, peak, steady, ready));
                    }
                    let (drained, peak, steady, ready) = service_drain(&base, backend, n, (batch, lanes, false), None);
                    drains.push(drained);
                    memory.push(("", backend, batch, lanes, peak, steady, ready));
                    if backend == Backend::Sqlite && lanes == 1 && want("peer") {
                        peer.entry(batch).or_default().push(peer_drain(&base, &topic, n, batch, false));
                    }
                }
                if !before.is_empty() {
                    let name = format!("(3) baseline service -> {backend:?}, batch {batch}");
                    table.add(Stats::of(name, before, "-"), Some(r));
                }
                let st =
                    Stats::of(format!("(3) service -> {backend:?}, batch {batch}, {lanes} lane(s)"), drains, target);
                let key = format!("(3) {backend:?} batch {batch}");
                by_lanes.entry(key).or_default()[usize::from(lanes == 4)] = st.median();
                table.add(st, Some(r));
            }
        }
    }
    if want("peer") {
        for batch in [25, 500] {
            let drains = peer
                .remove(&batch)
                .unwrap_or_else(|| (0..runs).map(|_| peer_drain(&base, &topic, n, batch, false)).collect());
            table.add(Stats::of(format!("(7) Python peer -> Sqlite, batch {batch}"), drains, "-"), Some(r));
        }
    }
    // (10) the whole notifications job, stored and sent, against the peer doing the same; runs alternate.
    let mut job_lines = Vec::new();
    if want("job") {
        for batch in [25, 500] {
            let (mut ours, mut theirs, mut before) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                if let Some(bin) = &baseline {
                    before.push(service_drain(&base, Backend::Sqlite, n, (batch, 1, true), Some(bin)).0);
                }
                ours.push(service_drain(&base, Backend::Sqlite, n, (batch, 1, true), None).0);
                theirs.push(peer_drain(&base, &topic, n, batch, true));
            }
            let cpu = |d: &[Drained]| {
                let mut v: Vec<f64> = d.iter().map(|d| d.cpu_per_10k).collect();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                v[v.len() / 2]
            };
            let (c, p) = (cpu(&ours), cpu(&theirs));
            job_lines.push(format!(
                "  batch {batch}: CPU s per 10k {c:.3} / peer's {p:.3} = {:.2}x (target <= 0.8x)",
                c / p
            ));
            if !before.is_empty() {
                let b = cpu(&before);
                job_lines
                    .push(format!("  batch {batch}: CPU s per 10k {c:.3} / the baseline's {b:.3} = {:.2}x", c / b));
                table.add(Stats::of(format!("(10) baseline: whole job, Sqlite, batch {batch}"), before, "-"), Some(r));
            }
            table.add(
                Stats::of(format!("(10) whole job (stored, sent), Sqlite, batch {batch}"), ours, "CPU <= 0.8x peer"),
                Some(r),
            );
            table.add(Stats::of(format!("(10) Python peer, whole job, batch {batch}"), theirs, "-"), Some(r));
        }
    }
    if want("delivery") {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for (delay_ms, count, target) in
                [(0, 20_000, ">= 1000".to_string()), (50, 5_000, ">= 500 (one at a time: 20)".to_string())]
            {
                let delay = Duration::from_millis(delay_ms);
                let st = Stats {
                    name: format!("(5) delivery to a webhook answering in {delay_ms} ms, {backend:?}"),
                    values: (0..runs).map(|_| delivery(&base, backend, count, delay)).collect(),
                    unit: "notifications/s",
                    target,
                    cpu: vec![],
                };
                table.add(st, None);
            }
        }
    }
    let predict_lines = if want("predict") { predict::predictions(runs, &mut table) } else { vec![] };
    table.print();
    if !predict_lines.is_empty() {
        println!("\npredictions: 4 lanes against the Python peer and against 1 lane, medians of this invocation");
        predict_lines.iter().for_each(|l| println!("{l}"));
    }
    if !job_lines.is_empty() {
        println!("\n(10) the whole notifications job against the Python peer, medians of this invocation");
        job_lines.iter().for_each(|l| println!("{l}"));
    }
    if !by_lanes.is_empty() {
        println!("\nlanes: 4 lanes against 1, medians of this invocation");
        for (case, [one, four]) in &by_lanes {
            println!("  {case}: {four:.0} / {one:.0} = {:.2}x", four / one);
        }
    }
    if !memory.is_empty() {
        println!("\n(6) memory and start-up of the service during (3) (target: steady RSS <= 48 MiB, ready < 1 s):");
        for (who, backend, batch, lanes, peak, steady, ready) in &memory {
            println!("  {who}{backend:?} batch {batch}, {lanes} lane(s): peak RSS {peak:.1} MiB, steady RSS {steady:.1} MiB, start to /readyz 200 in {ready:.0} ms");
        }
    }
    if want("latency") {
        println!("\n(4) latency at 10 records/s for {latency_secs} s:");
        latency(&base, 5000, latency_secs);
        latency(&base, 100, latency_secs);
    }
}
