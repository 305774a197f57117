//! The README's predictions walkthrough, end to end: the example model
//! server (`examples/model-server/run.sh`: FastAPI and a scikit-learn model,
//! its venv under `target/`), the service with `PREDICT_URL`, candles piped
//! from `candles.py` into `cronsumer produce`, the predictions listed,
//! exported as CSV and asked for over HTTP; and the same server in `v2`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cronsumer::db::{self, Backend};
use serde_json::Value;

use crate::consumer::Running;
use crate::support::*;

/// The example model server, killed when dropped.
struct ModelServer(Child, String);

impl Drop for ModelServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_model_server() -> ModelServer {
    let root = env!("CARGO_MANIFEST_DIR");
    let addr = free_addr();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let log = std::fs::File::create(std::env::temp_dir().join(unique("model-server-")).with_extension("log")).unwrap();
    let child = Command::new(Path::new(root).join("examples/model-server/run.sh"))
        .env("MODEL_PORT", &port)
        .env("MODEL_VENV", Path::new(root).join("target/model-venv"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("examples/model-server/run.sh starts");
    let server = ModelServer(child, addr);
    // The first start creates the venv and installs the model's packages.
    wait_for("the model server ready", Duration::from_secs(600), || {
        http_get(&server.1, "/v2/health/ready").is_some_and(|(c, _)| c == 200)
    });
    server
}

/// `python3 candles.py --count n | cronsumer produce topic -`.
fn produce_candles(s: &cronsumer::config::Settings, db_url: &str, topic: &str, n: usize) {
    let candles = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/model-server/candles.py"))
        .args(["--symbol", "BTCUSDT", "--count", &n.to_string()])
        .output()
        .expect("python3 candles.py");
    assert!(candles.status.success(), "{}", String::from_utf8_lossy(&candles.stderr));
    let mut produce = Command::new(env!("CARGO_BIN_EXE_cronsumer"))
        .args(["produce", topic, "-"])
        .envs(env_of(s, db_url))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    produce.stdin.take().unwrap().write_all(&candles.stdout).unwrap();
    assert!(produce.wait().unwrap().success(), "cronsumer produce");
}

#[test]
fn the_readme_walkthrough_predicts_candles_with_the_example_model_server() {
    let model = start_model_server();
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    let url = format!("http://{}/predict", model.1);
    let s = settings(&tdb.url, &unique("walk"), &[("PREDICT_URL", &url)]);
    let _topics = TestTopics::registry(&s, 1);
    let topic = s.module_topic("predictions", "candles");
    let svc = Service::start(&s, &tdb.url, &[]);
    produce_candles(&s, &tdb.url, &topic, 200);
    let count = || db::predictions::count(&mut pool.get().unwrap()).unwrap();
    svc.wait_for("200 predictions", Duration::from_secs(90), || count() >= 200);
    let (status, body) = svc.get("/v1/predictions/latest?key=BTCUSDT").unwrap();
    assert_eq!(status, 200, "{body}");
    let latest: Value = serde_json::from_str(&body).unwrap();
    let p_up = latest["prediction"]["p_up"].as_f64().expect("the model's p_up");
    assert!((0.0..=1.0).contains(&p_up) && latest["prediction"]["direction"].is_string(), "{latest}");
    assert_eq!(latest["source"]["offset"], 199);
    assert_eq!(svc.terminate(), Some(0));
    let (code, listed, _) = cli(&s, &tdb.url, &["predictions", "list", "--key", "BTCUSDT", "--limit", "5"]);
    assert!(code == 0 && listed.lines().count() == 6, "{listed}");
    let csv = std::env::temp_dir().join(unique("predictions-")).with_extension("csv");
    let (code, _, err) = cli(&s, &tdb.url, &["predictions", "export", "--csv", "--output", csv.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let _ = std::fs::remove_file(&csv);
    assert_eq!(text.lines().count(), 201, "a header and 200 predictions");
    assert_eq!(count_dead_letters(&pool), 0);

    // The same server in the Open Inference Protocol.
    let v2 = settings(
        &tdb.url,
        &unique("walk2"),
        &[
            ("PREDICT_URL", &format!("http://{}", model.1)),
            ("PREDICT_PROTOCOL", "v2"),
            ("PREDICT_INPUT_FIELDS", "open,high,low,close,volume"),
        ],
    );
    let _v2_topics = TestTopics::registry(&v2, 1);
    produce_candles(&v2, &tdb.url, &v2.module_topic("predictions", "candles"), 50);
    let run = Running::start(&v2, &pool, vec![]);
    wait_for("50 more predictions", Duration::from_secs(90), || count() >= 250);
    run.stop();
    let newest = db::predictions::recent(&mut pool.get().unwrap(), None, 1).unwrap().remove(0);
    let prediction: Value = serde_json::from_str(&newest.prediction).unwrap();
    assert!(prediction["p_up"].is_f64() && prediction["up"].is_boolean(), "{prediction}");
}
