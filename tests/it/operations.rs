//! The operator surface: every CLI command against the real broker and
//! database (table and `--json` output, exit codes, failure cases), the
//! health and metrics endpoints, and dead-letter replay.

use std::time::Duration;

use cronsumer::db::{self, Backend};
use serde_json::Value;

use crate::support::*;

fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
}

#[test]
fn topics_lists_checks_and_creates() {
    let tdb = TestDb::new(Backend::Sqlite);
    let s = settings(&tdb.url, &unique("ops"), &[]);
    // Created by `topics --create` below.
    let _topics = TestTopics::adopt(&s, &cronsumer::registry().topics(&s));
    let (code, out, err) = cli(&s, &tdb.url, &["topics"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("TOPIC"), "{out}");
    assert!(err.contains("missing:") && err.contains("cronsumer topics --create"), "{err}");
    let (code, out, _) = cli(&s, &tdb.url, &["topics", "--create", "--partitions", "2"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(&s, &tdb.url, &["--json", "topics"]);
    assert_eq!(code, 0);
    let rows = json_lines(&out);
    let (on, off): (Vec<&Value>, Vec<&Value>) = rows.iter().partition(|r| r["module"] == "on");
    assert_eq!((on.len(), off.len()), (2, 1), "{out}");
    for r in on {
        assert_eq!((r["exists"].as_bool(), r["partitions"].as_i64()), (Some(true), Some(2)), "{r}");
    }
    assert_eq!(off[0]["module"], "off (predictions): PREDICT_URL is not set", "a module that is off needs no topic");
    assert_eq!(off[0]["exists"].as_bool(), Some(false), "not created for a module that is off");
}

#[test]
fn diagnose_reports_healthy_and_a_down_broker() {
    let tdb = TestDb::new(Backend::Sqlite);
    let s = settings(&tdb.url, &unique("diag"), &[]);
    let _topics = TestTopics::registry(&s, 2);
    let (code, out, _) = cli(&s, &tdb.url, &["diagnose"]);
    assert_eq!(code, 1, "a fresh database has pending migrations: {out}");
    assert!(out.contains("run `cronsumer migrate`"), "{out}");
    tdb.pool();
    let (code, out, err) = cli(&s, &tdb.url, &["diagnose"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("broker") && out.contains("librdkafka") && out.contains("healthy"), "{out}");
    assert!(out.contains(&format!("topic {}", s.topic("notifications"))), "{out}");
    assert!(out.contains("migrations") && out.contains("up to date"), "{out}");
    let (code, out, _) = cli(&s, &tdb.url, &["--json", "diagnose"]);
    assert_eq!(code, 0);
    assert!(json_lines(&out).iter().all(|r| r["status"] == "ok"), "{out}");
    // Another group: its committed offsets, not this service's.
    let other = unique("other-group");
    let topic = s.topic("notifications");
    produce(&s, &topic, &[notification(1)]);
    let c: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", broker()).set("group.id", &other).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(&topic, p, rdkafka::Offset::Offset(if p == 0 { 7 } else { 0 })).unwrap();
    }
    rdkafka::consumer::Consumer::commit(&c, &tpl, rdkafka::consumer::CommitMode::Sync).unwrap();
    let (code, out, err) = cli(&s, &tdb.url, &["diagnose", "--group-id", &other]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("group {other}")), "{out}");
    let lag0 = out.lines().find(|l| l.starts_with(&format!("lag {topic}/0"))).unwrap_or_default();
    assert!(lag0.contains("committed 7"), "{out}");

    // Nothing listens on port 1: the broker is down.
    let down = settings(&tdb.url, &unique("diag"), &[("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")]);
    let (code, out, _) = cli(&down, &tdb.url, &["diagnose"]);
    assert_eq!(code, 1, "{out}");
    let line = out.lines().find(|l| l.starts_with("broker")).unwrap_or_default();
    assert!(line.contains("PROBLEM") && line.contains("no broker answers at 127.0.0.1:1"), "{out}");
}

#[test]
fn dead_letters_list_show_replay_purge_and_unknown_ids() {
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    // A record dead-lettered as oversize under a small limit...
    let small = settings(&tdb.url, &unique("dl"), &[("CONSUMER_MAX_RECORD_BYTES", "90")]);
    let (_topics, topic) = registry_topics(&small, 1);
    let big = br#"{"user_id": 7, "event": "e", "content": "this content makes the record longer than ninety bytes, which is the limit here"}"#;
    produce(&small, &topic, &[notification(1), big.to_vec()]);
    let svc = Service::start(&small, &tdb.url, &[]);
    svc.wait_for("one row and one dead letter", Duration::from_secs(60), || {
        count_notifications(&pool) == 1 && count_dead_letters(&pool) == 1
    });
    assert_eq!(svc.terminate(), Some(0));

    let (code, out, _) = cli(&small, &tdb.url, &["dead-letters", "list"]);
    assert_eq!(code, 0);
    assert!(out.lines().nth(1).unwrap().contains("over CONSUMER_MAX_RECORD_BYTES=90"), "{out}");
    let (_, out, _) = cli(&small, &tdb.url, &["--json", "dead-letters", "list"]);
    let rows = json_lines(&out);
    let id = rows[0]["id"].as_i64().unwrap();
    let (code, out, _) = cli(&small, &tdb.url, &["--json", "dead-letters", "show", &id.to_string()]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out)[0]["payload"].as_str().unwrap().as_bytes(), big);

    let (code, _, err) = cli(&small, &tdb.url, &["dead-letters", "show", "999999"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim(), "error: no dead letter with id 999999 (see `cronsumer dead-letters list`)");
    let (code, _, err) = cli(&small, &tdb.url, &["dead-letters", "replay", "999999"]);
    assert_eq!(code, 2, "{err}");

    // ...replayed after the limit is raised, ends up stored once.
    let raised = settings(&tdb.url, &small.kafka_topic_prefix, &[]);
    let (code, out, err) = cli(&raised, &tdb.url, &["dead-letters", "replay", &id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 1"), "{out}");
    let svc = Service::start(&raised, &tdb.url, &[]);
    svc.wait_for("the replayed record stored", Duration::from_secs(60), || count_notifications(&pool) == 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(svc.terminate(), Some(0));
    assert_eq!(count_notifications(&pool), 2);
    assert_eq!(count_dead_letters(&pool), 1);
    let d = db::dead_letters::find(&mut pool.get().unwrap(), id).unwrap().unwrap();
    assert!(d.replayed_at.is_some());

    let (code, out, _) = cli(&raised, &tdb.url, &["dead-letters", "purge", "--before", "2999-01-01"]);
    assert_eq!(code, 0);
    assert!(out.contains("purged 1"), "{out}");
    let (code, _, err) = cli(&raised, &tdb.url, &["dead-letters", "purge", "--before", "yesterday"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected YYYY-MM-DD"), "{err}");
}

#[test]
fn notifications_list_and_retry() {
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("nl"), &[]);
    let row = db::notifications::NewNotification::pending(None, "[0]".into(), "signup".into(), "hello".into());
    db::notifications::insert_all(&mut pool.get().unwrap(), &[row]).unwrap();
    let (code, out, _) = cli(&s, &tdb.url, &["notifications", "list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID") && out.contains("pending") && out.contains("signup"), "{out}");
    let (_, out, _) = cli(&s, &tdb.url, &["--json", "notifications", "list", "--status", "pending"]);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 1);
    let id = rows[0]["id"].as_i64().unwrap();
    let (code, out, _) = cli(&s, &tdb.url, &["notifications", "retry", &id.to_string()]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = cli(&s, &tdb.url, &["notifications", "retry", "424242"]);
    assert_eq!(code, 2);
    assert!(err.contains("no notification with id 424242"), "{err}");
    // A row a sender holds is not reset under it (it would be delivered twice at once).
    let mut sender = pool.get().unwrap();
    let claimed = db::notifications::claim_due(&mut sender, 10).unwrap();
    assert_eq!(claimed.iter().map(|n| n.id).collect::<Vec<_>>(), vec![id]);
    let (code, _, err) = cli(&s, &tdb.url, &["notifications", "retry", &id.to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("notification {id} is being sent")), "{err}");
    db::notifications::unclaim(&mut sender, &[id]).unwrap();
    let (code, out, err) = cli(&s, &tdb.url, &["notifications", "retry", &id.to_string()]);
    assert_eq!(code, 0, "let go, it may be retried: {out}{err}");
    let (code, _, err) = cli(&s, &tdb.url, &["notifications", "list", "--status", "lost"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected one of pending, sent, failed"), "{err}");
}

#[test]
fn jobs_list_and_run() {
    let tdb = TestDb::new(Backend::Sqlite);
    let s = settings(&tdb.url, &unique("jobs"), &[]);
    let (code, out, _) = cli(&s, &tdb.url, &["jobs", "run", "maintenance_15m"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok"), "{out}");
    let (code, out, _) = cli(&s, &tdb.url, &["--json", "jobs", "list"]);
    assert_eq!(code, 0);
    let rows = json_lines(&out);
    let names: Vec<&str> = rows.iter().filter_map(|r| r["job"].as_str()).collect();
    assert_eq!(
        names,
        [
            "send_notifications",
            "maintenance_5m",
            "maintenance_15m",
            "supervise_consumer",
            "fetch_prices",
            "publish_outbox"
        ]
    );
    let m15 = rows.iter().find(|r| r["job"] == "maintenance_15m").unwrap();
    assert_eq!(m15["outcome"], "ok");
    assert!(m15["next_run"].is_string());
    let (code, _, err) = cli(&s, &tdb.url, &["jobs", "run", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no job named \"nope\""), "{err}");
}

#[test]
fn produce_from_a_file_and_tail_without_joining_the_group() {
    let tdb = TestDb::new(Backend::Sqlite);
    let s = settings(&tdb.url, &unique("tail"), &[]);
    let topic = s.topic("raw");
    let _topics = TestTopics::create(&s, &[&topic], 2);
    let file = std::env::temp_dir().join(unique("records-"));
    std::fs::write(&file, "{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}\n").unwrap();
    let (code, out, err) = cli(&s, &tdb.url, &["produce", &topic, "--key", "k", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("delivered 3 record(s)"), "{out}");
    assert!(err.contains(&format!("warning: no consumer module handles topic {topic}")), "{err}");
    let (code, out, _) = cli(&s, &tdb.url, &["--json", "tail", &topic, "--from-beginning", "--max", "3"]);
    assert_eq!(code, 0);
    let mut payloads: Vec<String> =
        json_lines(&out).iter().map(|r| r["payload"].as_str().unwrap().to_string()).collect();
    payloads.sort();
    assert_eq!(payloads, vec!["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
    // the service's group has committed nothing
    assert!(committed(&s, &topic, 2).values().all(|&o| o < 0));
    let _ = std::fs::remove_file(file);
}

#[test]
fn healthz_turns_503_when_the_consumer_dies_and_200_after_restart_and_metrics_move() {
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("health"), &[]);
    let (_topics, topic) = registry_topics(&s, 1);
    let svc = Service::start(&s, &tdb.url, &[("CRONSUMER_FAULT_PANIC_PAYLOAD", "PANIC-ME")]);
    wait_for("healthy", Duration::from_secs(60), || svc.healthz().is_some_and(|(c, _)| c == 200));
    let before = svc.metrics();

    produce(
        &s,
        &topic,
        &[notification(1), br#"{"user_id":2,"event":"e","content":"PANIC-ME"}"#.to_vec(), notification(3)],
    );
    let mut saw_503 = None;
    wait_for("503 naming the dead consumer", Duration::from_secs(60), || {
        match svc.healthz() {
            Some((503, body)) if body.contains("consumer thread is not running") => saw_503 = Some(body),
            _ => {}
        }
        saw_503.is_some()
    });
    // The supervisor restarts it; after 3 panics on the record it is dead-lettered.
    wait_for("rows and the poison dead-lettered", Duration::from_secs(120), || {
        count_notifications(&pool) == 2 && count_dead_letters(&pool) == 1
    });
    wait_for("healthy again", Duration::from_secs(30), || svc.healthz().is_some_and(|(c, _)| c == 200));
    // Commits go out asynchronously: wait for the one covering the last batch.
    wait_for("commits counted", Duration::from_secs(30), || {
        metric_sum(&svc.metrics(), "cronsumer_commits_total") > metric_sum(&before, "cronsumer_commits_total")
    });
    let after = svc.metrics();
    assert_prometheus_text(&after);
    assert!(metric_sum(&after, "cronsumer_consumer_restarts_total") >= 1.0, "{after}");
    assert!(metric_sum(&after, "cronsumer_records_consumed_total") >= 2.0, "{after}");
    assert!(metric_sum(&after, "cronsumer_dead_letters_total") >= 1.0);
    assert!(metric_sum(&after, "cronsumer_handler_panics_total") >= 1.0);
    assert!(metric_sum(&after, "cronsumer_commits_total") > metric_sum(&before, "cronsumer_commits_total"));
    // Readiness is checked every 2 s: ready once the restarted thread's assignment was seen.
    svc.wait_for("ready again", Duration::from_secs(30), || {
        http_get(&svc.http, "/readyz").is_some_and(|(c, _)| c == 200)
    });
}

/// Every line is a comment or `name{labels} value` with a number.
fn assert_prometheus_text(text: &str) {
    assert!(text.contains("# TYPE cronsumer_records_consumed_total counter"), "{text}");
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad metric line {line:?}"));
        assert!(name.starts_with("cronsumer_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

/// `produce` as a new user types it: `-` reads standard input, a payload
/// must be JSON unless `--raw`, and a topic that does not exist is an error.
#[test]
fn produce_reads_stdin_checks_json_and_names_a_missing_topic() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let tdb = TestDb::new(Backend::Sqlite);
    let s = settings(&tdb.url, &unique("produce"), &[]);
    let topic = s.topic("orders");
    let _topics = TestTopics::create(&s, &[&topic], 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cronsumer"))
        .args(["produce", &topic, "-"])
        .envs(env_of(&s, &tdb.url))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"order_id\":\"A1\"}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("delivered 1 record(s)"), "{stdout}");

    let (code, _, err) = cli(&s, &tdb.url, &["produce", &topic, "not json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the payload is not JSON") && err.contains("--raw"), "{err}");
    let (code, out, err) = cli(&s, &tdb.url, &["produce", &topic, "--raw", "not json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("delivered 1 record(s)"), "{out}");

    let (code, out, _) = cli(&s, &tdb.url, &["--json", "tail", &topic, "--from-beginning", "--max", "2"]);
    assert_eq!(code, 0);
    let payloads: Vec<String> = json_lines(&out).iter().map(|r| r["payload"].as_str().unwrap().to_string()).collect();
    assert_eq!(payloads, vec!["{\"order_id\":\"A1\"}", "not json"]);

    let missing = s.topic("nowhere");
    let (code, _, err) = cli(&s, &tdb.url, &["produce", &missing, "{}"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("topic {missing} does not exist")), "{err}");
}

/// Two replays of one dead letter at once (two operators, the console and
/// the CLI): it is produced once, and marked replayed once.
fn concurrent_replays_of_one_dead_letter_produce_it_once(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("replay"), &[]);
    let (_topics, topic) = registry_topics(&s, 1);
    let record = cronsumer::common::record::Record {
        topic: topic.clone(),
        partition: 0,
        offset: 7,
        key: Some(b"k".to_vec()),
        payload: Some(notification(7)),
        timestamp: None,
    };
    let row = db::dead_letters::NewDeadLetter::of(&record, "a test");
    db::dead_letters::insert_all(&mut pool.get().unwrap(), &[row]).unwrap();
    let d = db::dead_letters::list(&mut pool.get().unwrap(), None, 1).unwrap().remove(0);
    let start = std::sync::Barrier::new(2);
    let outcomes: Vec<String> = std::thread::scope(|scope| {
        let replays: Vec<_> = (0..2)
            .map(|_| {
                let (s, pool, d, start) = (&s, &pool, d.clone(), &start);
                scope.spawn(move || {
                    start.wait();
                    format!("{:?}", cronsumer::consume::replay::replay(s, pool, &[d]))
                })
            })
            .collect();
        replays.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(records_in(&s, &topic, 1), 1, "produced once: {outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "Ok(1)").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| o.contains("Taken")).count(), 1, "{outcomes:?}");
    let after = db::dead_letters::find(&mut pool.get().unwrap(), d.id).unwrap().unwrap();
    assert!(after.replayed_at.is_some());
    let again = cronsumer::consume::replay::replay(&s, &pool, &[after]);
    assert!(matches!(again, Err(cronsumer::consume::replay::ReplayError::Taken)), "replayed already: {again:?}");
}
both_backends!(concurrent_replays_of_one_dead_letter_produce_it_once);
