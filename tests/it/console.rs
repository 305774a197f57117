//! The web console against a running service with data: each section in
//! Debian's headless Chromium (DOM checks and a screenshot per section
//! under `target/console/`), the charts after a minute of traffic, the
//! JSON under `/api/`, pausing a partition (across a restart, until
//! resumed), and the dead-letter search with its bulk replay and purge.
//! Hostile keys, payloads and reasons stay escaped throughout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cronsumer::db::{self, Backend};
use serde_json::Value;

use crate::support::*;

const SECTIONS: [&str; 5] = ["consumer", "dead-letters", "notifications", "jobs", "predictions"];

fn api(svc: &Service, path: &str) -> Value {
    let (code, body) = http_get(&svc.http, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"))
}

/// Debian's Chromium, headless, with a profile of its own.
struct Chromium {
    bin: &'static str,
    profile: PathBuf,
}

impl Chromium {
    fn new() -> Chromium {
        let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("Chromium is required for this test: `scripts/services.sh tools` installs it");
        Chromium { bin, profile: std::env::temp_dir().join(unique("chromium-")) }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(self.bin)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(args)
            .output()
            .expect("chromium runs");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn dom(&self, url: &str) -> String {
        self.run(&["--dump-dom", url])
    }

    /// A PNG of `url` at `to`.
    fn screenshot(&self, url: &str, to: &Path, height: u32) {
        let _ = std::fs::remove_file(to);
        self.run(&[&format!("--window-size=1280,{height}"), &format!("--screenshot={}", to.display()), url]);
        let png = std::fs::read(to).expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot of {} bytes", png.len());
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Points of the chart line named `series` in `dom`.
fn chart_points(dom: &str, series: &str) -> usize {
    let line = dom.split(&format!("data-series=\"{series}\"")).nth(1).unwrap_or_default();
    let points = line.split("points=\"").nth(1).unwrap_or_default();
    points.split('"').next().unwrap_or_default().split_whitespace().count()
}

/// Every section in the browser, after a minute of traffic on four
/// partitions (PostgreSQL: four lanes), with hostile input among it.
#[test]
fn the_console_in_headless_chromium_shows_every_section_with_a_minute_of_history() {
    let chromium = Chromium::new();
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("console"), &[]);
    let (_topics, topic) = registry_topics(&s, 4);
    let svc = Service::start(&s, &tdb.url, &[("HTTP_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let hostile = br#"<script>alert("payload")</script>"#.to_vec();
    produce(&s, &topic, &[hostile]);
    let (code, out, err) = cli(&s, &tdb.url, &["produce", &topic, "--key", "<i>key</i>", "--raw", "<b>not json</b>"]);
    assert_eq!(code, 0, "{out}{err}");
    // A minute of traffic: the history samples every 10 s.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(65) {
        let batch: Vec<Vec<u8>> = (sent..sent + 20).map(notification).collect();
        produce(&s, &topic, &batch);
        sent += 20;
        std::thread::sleep(Duration::from_secs(5));
    }
    svc.wait_for("every record stored", Duration::from_secs(60), || {
        count_notifications(&pool) == sent as i64 && count_dead_letters(&pool) == 2
    });
    let history = api(&svc, "/api/history");
    let samples = history["samples"].as_array().expect("samples");
    assert!(samples.len() >= 5, "a minute of samples: {history}");
    assert!(samples.iter().any(|s| s["records_per_s"].as_f64() > Some(0.0)), "no rate: {history}");
    assert!(samples.iter().any(|s| s["notifications_sent_per_min"].as_f64() > Some(0.0)), "{history}");
    let last = samples.last().unwrap();
    assert_eq!(last["lanes_busy"].as_array().map(Vec::len), Some(4), "{last}");
    let of_topic = |p: &Value| p["topic"] == topic.as_str();
    assert_eq!(last["partitions"].as_array().map(|p| p.iter().filter(|p| of_topic(p)).count()), Some(4), "{last}");
    assert!(last["notifications_by_status"]["sent"].as_i64() > Some(0), "{last}");

    let base = format!("http://{}", svc.http);
    let dom = |section: &str| chromium.dom(&format!("{base}/console/{section}"));
    let consumer = dom("consumer");
    assert_eq!(consumer.matches(&format!("<tr data-partition=\"{topic}/")).count(), 4, "{consumer}");
    assert!(consumer.contains("with 4 lane(s)"), "{consumer}");
    assert!(chart_points(&consumer, "handled") >= 5, "the records chart has a point per sample:\n{consumer}");
    assert!(chart_points(&consumer, &format!("{topic}/0")) >= 2, "a lag line per partition:\n{consumer}");
    assert!(chart_points(&consumer, "lane 3") >= 5, "a busy line per lane:\n{consumer}");
    let dead = dom("dead-letters");
    assert!(dead.contains("2 match."), "{dead}");
    assert!(dead.contains("&lt;script&gt;alert(\"payload\")&lt;/script&gt;"), "the payload, escaped:\n{dead}");
    assert!(dead.contains("&lt;i&gt;key&lt;/i&gt;") && dead.contains("&lt;b&gt;not json&lt;/b&gt;"), "{dead}");
    assert!(!dead.contains("<script>alert") && !dead.contains("<i>key"), "hostile input became markup:\n{dead}");
    let notes = dom("notifications");
    assert!(notes.contains(&format!("<td>sent</td><td class=\"num\">{sent}</td>")), "{notes}");
    assert!(notes.matches("order_shipped").count() >= 20, "the latest deliveries:\n{notes}");
    assert!(chart_points(&notes, "sent") >= 5, "{notes}");
    let jobs = dom("jobs");
    let sender = jobs.split("data-job=\"send_notifications\"").nth(1).expect("the sender's row");
    assert!(sender.split("</tr>").next().unwrap().contains("class=\"run ok\""), "the sender's runs:\n{jobs}");
    assert!(jobs.contains("off: PRICE_SYMBOLS is empty"), "{jobs}");
    assert!(jobs.contains("Unlock actions") && !jobs.contains("<button>Run now</button>"), "locked:\n{jobs}");
    let predictions = dom("predictions");
    assert!(predictions.contains("Off: PREDICT_URL is not set."), "{predictions}");

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console");
    std::fs::create_dir_all(&out).unwrap();
    for section in SECTIONS {
        chromium.screenshot(&format!("{base}/console/{section}"), &out.join(format!("{section}.png")), 900);
    }
    // The JSON of each section beside the pictures (the README's samples come from them).
    for name in ["overview", "consumer", "history", "jobs", "dead-letters", "notifications", "predictions"] {
        let json = serde_json::to_string_pretty(&api(&svc, &format!("/api/{name}"))).unwrap();
        std::fs::write(out.join(format!("api-{name}.json")), json).unwrap();
    }
    let whole = out.join("console.png");
    chromium.screenshot(&format!("{base}/"), &whole, 2200);
    // `CONSOLE_SCREENSHOT_DOCS=1` refreshes the README's picture.
    if std::env::var("CONSOLE_SCREENSHOT_DOCS").is_ok() {
        std::fs::copy(&whole, Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png")).unwrap();
    }
}

/// Notifications stored from partition 0 of the topic.
fn stored_from_0(pool: &db::Pool, topic: &str) -> usize {
    stored_sources(pool, topic).0.iter().filter(|(p, _)| *p == 0).count()
}

#[test]
fn a_partition_paused_from_the_console_stays_paused_across_a_restart_until_resumed() {
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("pause"), &[]);
    let (_topics, topic) = registry_topics(&s, 2);
    let env = [("HTTP_ADMIN_TOKEN", ADMIN_TOKEN)];
    let mut svc = Service::start(&s, &tdb.url, &env);
    produce(&s, &topic, &(0..20).map(notification).collect::<Vec<_>>());
    svc.wait_for("20 stored", Duration::from_secs(60), || count_notifications(&pool) == 20);
    let before = stored_from_0(&pool, &topic);
    assert!(before > 0, "the keys put some records on partition 0");

    let pause = format!("/actions/partitions/{topic}/0/pause");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(post_form(&svc.http, &pause, &[], "").0, 401, "no token");
    let cookie = format!("cronsumer_admin={ADMIN_TOKEN}");
    assert_eq!(post_form(&svc.http, &pause, &[("Cookie", &cookie), ("Origin", "https://evil.example")], "").0, 403);
    let (code, _, body) = post_form(&svc.http, &pause, &[("Authorization", &bearer)], "");
    assert_eq!((code, body.trim()), (200, format!("{topic}/0 paused").as_str()));

    // Records keep coming; partition 1's are stored, partition 0's wait.
    produce(&s, &topic, &(20..60).map(notification).collect::<Vec<_>>());
    svc.wait_for("partition 1's records stored", Duration::from_secs(60), || {
        count_notifications(&pool) as usize == 60 - (records_on(&s, &topic, 0) - before)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stored_from_0(&pool, &topic), before, "records of the paused partition were stored");
    let overview = api(&svc, "/api/overview");
    assert_eq!(overview["paused_by_operator"][0]["partition"], 0, "{overview}");
    assert_eq!(overview["healthy"], true, "a pause is not a fault: {overview}");
    let (code, health) = svc.healthz().unwrap();
    assert!(code == 200 && health.contains(&format!("\"paused_by_operator\":[\"{topic}/0 since ")), "{health}");
    let row =
        api(&svc, "/api/consumer")["partitions"].as_array().unwrap().iter().find(|p| p["partition"] == 0).cloned();
    assert_eq!(row.as_ref().map(|r| r["paused"].clone()), Some(Value::from("operator")), "{row:?}");
    let series = format!("cronsumer_partition_paused{{partition=\"0\",topic=\"{topic}\"}}");
    svc.wait_for("the paused gauge", Duration::from_secs(10), || metric(&svc.metrics(), &series) == Some(1.0));

    // A restart (and the rebalance that comes with it) keeps it paused.
    assert_eq!(svc.terminate(), Some(0));
    svc = Service::start(&s, &tdb.url, &env);
    // The registry's topics, two partitions each.
    svc.wait_for("assigned again", Duration::from_secs(60), || svc.assigned() >= 2.0);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(stored_from_0(&pool, &topic), before, "the pause did not survive the restart");

    let resume = format!("/actions/partitions/{topic}/0/resume");
    let (code, _, body) = post_form(&svc.http, &resume, &[("Authorization", &bearer)], "");
    assert_eq!((code, body.trim()), (200, format!("{topic}/0 resumed").as_str()));
    svc.wait_for("every record stored once resumed", Duration::from_secs(60), || count_notifications(&pool) == 60);
    let (stored, _) = stored_sources(&pool, &topic);
    let mut unique_sources = stored.clone();
    unique_sources.sort();
    unique_sources.dedup();
    assert_eq!((stored.len(), unique_sources.len()), (60, 60), "each record once");
    svc.wait_for("the gauge cleared", Duration::from_secs(10), || metric(&svc.metrics(), &series).is_none());
}

/// Records in partition `p` of `topic` (its high watermark).
fn records_on(s: &cronsumer::config::Settings, topic: &str, p: i32) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = cronsumer::kafka::consumer_config(s).create().unwrap();
    c.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1 as usize
}

#[test]
fn dead_letters_are_searched_paged_and_replayed_in_bulk_once() {
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("dlq"), &[]);
    let (_topics, topic) = registry_topics(&s, 2);
    let svc = Service::start(&s, &tdb.url, &[("HTTP_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let bad: Vec<Vec<u8>> = (0..55).map(|i| format!("needle-{i} not json").into_bytes()).collect();
    produce(&s, &topic, &bad);
    produce(&s, &topic, &(0..5).map(|i| format!("other-{i}").into_bytes()).collect::<Vec<_>>());
    svc.wait_for("60 dead letters", Duration::from_secs(60), || count_dead_letters(&pool) == 60);
    // Everything so far failed before `until`; what a replay dead-letters again, after it.
    let until = (chrono::Utc::now() + chrono::Duration::seconds(2)).format("%Y-%m-%dT%H:%M:%S").to_string();
    std::thread::sleep(Duration::from_secs(3));
    let search = format!("text=needle&until={until}");

    let first = api(&svc, &format!("/api/dead-letters?{search}"));
    assert_eq!(first["matching"], 55, "{first}");
    let rows = first["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 50, "a page");
    let next = first["next_before"].as_i64().expect("a next page");
    let second = api(&svc, &format!("/api/dead-letters?{search}&before={next}"));
    let more = second["rows"].as_array().unwrap();
    assert_eq!((more.len(), second["next_before"].clone()), (5, Value::Null), "{second}");
    let mut ids: Vec<i64> = rows.iter().chain(more).map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 55, "the pages are disjoint and cover every match");
    assert_eq!(api(&svc, "/api/dead-letters?text=other-3")["matching"], 1);
    assert_eq!(api(&svc, &format!("/api/dead-letters?since={until}&until={until}"))["matching"], 0);
    let (code, body) = http_get(&svc.http, "/api/dead-letters?since=yesterday").unwrap();
    assert_eq!(code, 400, "{body}");

    let replay = format!("/actions/dead-letters/replay-matching?{search}");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(post_form(&svc.http, &replay, &[("Authorization", &bearer)], "").0, 400, "no confirmation");
    assert_eq!(post_form(&svc.http, &replay, &[], "confirm=yes").0, 401, "no token");
    let cookie = format!("cronsumer_admin={ADMIN_TOKEN}");
    let cross = [("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "cross-site")];
    assert_eq!(post_form(&svc.http, &replay, &cross, "confirm=yes").0, 403, "from another site");
    let produced_before = records_in(&s, &topic, 2);
    // Two at once: each dead letter is claimed by one of them.
    let replayed: Vec<(u16, String, String)> = std::thread::scope(|sc| {
        let runs: Vec<_> = (0..2)
            .map(|_| sc.spawn(|| post_form(&svc.http, &replay, &[("Authorization", &bearer)], "confirm=yes")))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let count = |body: &str| -> u64 {
        body.strip_prefix("replayed ").and_then(|b| b.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    assert!(replayed.iter().all(|(code, _, _)| *code == 200), "{replayed:?}");
    assert_eq!(replayed.iter().map(|(_, _, b)| count(b)).sum::<u64>(), 55, "{replayed:?}");
    assert_eq!(records_in(&s, &topic, 2) - produced_before, 55, "a dead letter was produced twice");
    let (code, _, again) = post_form(&svc.http, &replay, &[("Authorization", &bearer)], "confirm=yes");
    assert_eq!(code, 200);
    assert!(again.starts_with("replayed 0 ") && again.contains("0 not replayed still match"), "{again}");
    // Replayed, they failed again: new dead letters, after `until`.
    svc.wait_for("the replayed dead-lettered again", Duration::from_secs(60), || count_dead_letters(&pool) == 115);

    let (code, _, purged) =
        post_form(&svc.http, "/actions/dead-letters/purge-replayed", &[("Authorization", &bearer)], "");
    assert_eq!((code, purged.trim()), (200, "purged 55 replayed dead letter(s)"));
    assert_eq!(api(&svc, &format!("/api/dead-letters?{search}"))["matching"], 0);
    assert_eq!(count_dead_letters(&pool), 60);
}
