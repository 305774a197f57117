//! The batch consumer against the real broker and both databases: counts
//! every record into the tables or `dead_letters`, exactly once.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cronsumer::common::shutdown::StopRequest;
use cronsumer::config::Settings;
use cronsumer::consume::heartbeat::Heartbeat;
use cronsumer::consume::thread::{spawn, ConsumerError};
use cronsumer::db::{Backend, Pool};

use crate::support::*;

pub struct Running {
    stop: Arc<StopRequest>,
    handle: JoinHandle<Result<(), ConsumerError>>,
    pub heartbeat: Arc<Heartbeat>,
}

impl Running {
    pub fn start(s: &Settings, pool: &Pool, extra_topics: Vec<String>) -> Running {
        let setup = setup(s, pool).extra_topics(extra_topics).build();
        let heartbeat = Arc::new(Heartbeat::default());
        let stop = Arc::new(StopRequest::default());
        let handle = spawn(setup, heartbeat.clone(), stop.clone()).unwrap();
        Running { stop, handle, heartbeat }
    }

    pub fn stop(self) {
        self.stop.request(Instant::now() + Duration::from_secs(10));
        self.handle.join().expect("consumer thread panicked").expect("consumer thread failed");
    }
}

fn five_thousand_stored_once_and_a_rerun_rehandles_nothing(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("c5k"), &[]);
    let (_topics, topic) = registry_topics(&s, 4);
    let payloads: Vec<Vec<u8>> = (0..5000).map(notification).collect();
    produce(&s, &topic, &payloads);

    let started = Instant::now();
    let run = Running::start(&s, &pool, vec![]);
    wait_for("5000 rows", Duration::from_secs(180), || count_notifications(&pool) >= 5000);
    let secs = started.elapsed().as_secs_f64();
    println!("FIGURE consumer {backend:?}: 5000 records in {secs:.2} s = {:.0} records/s (batch 25)", 5000.0 / secs);
    wait_for("commits of all 5000", Duration::from_secs(30), || sum_offsets(&committed(&s, &topic, 4)) == 5000);
    run.stop();
    assert_eq!(count_notifications(&pool), 5000);
    assert_eq!(count_dead_letters(&pool), 0);
    let (rows, _) = stored_sources(&pool, &topic);
    let mut distinct = rows.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5000);
    assert_commits_covered(&s, &pool, &topic, 4);

    // A fresh run of the same group starts after the commits: nothing comes again.
    let again = Running::start(&s, &pool, vec![]);
    wait_for("partitions assigned", Duration::from_secs(60), || again.heartbeat.assigned() > 0);
    std::thread::sleep(Duration::from_secs(2));
    let rehandled = again.heartbeat.records();
    again.stop();
    assert_eq!(rehandled, 0, "records handled again after a clean stop");
    assert_eq!(count_notifications(&pool), 5000);
}
both_backends!(five_thousand_stored_once_and_a_rerun_rehandles_nothing);

fn poison_records_go_to_dead_letters_with_reasons(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("poison"), &[("CONSUMER_MAX_RECORD_BYTES", "2048")]);
    let (_topics, topic) = registry_topics(&s, 2);
    let poisons: [(&[u8], &str); 5] = [
        (b"not json at all", "payload is not valid JSON"),
        (b"{\"user_id\": 1, \"event\": \"e\", \"content\": \"\xff\xfe\"}", "payload is not valid UTF-8"),
        (br#"{"event": "e", "content": "c"}"#, "field `user_id` (or `users`) is missing"),
        (br#"{"user_id": "", "event": "e", "content": "c"}"#, "field `user_id` is an empty string"),
        (&[b'x'; 4096], "payload is 4096 bytes, over CONSUMER_MAX_RECORD_BYTES=2048"),
    ];
    let mut payloads = Vec::new();
    let mut expected_reasons = Vec::new();
    for i in 0..1000 {
        if i % 100 == 50 {
            let (p, reason) = poisons[(i / 100) % poisons.len()];
            payloads.push(p.to_vec());
            expected_reasons.push(reason);
        } else {
            payloads.push(notification(i));
        }
    }
    produce(&s, &topic, &payloads);
    let run = Running::start(&s, &pool, vec![]);
    wait_for("990 rows and 10 dead letters", Duration::from_secs(120), || {
        count_notifications(&pool) >= 990 && count_dead_letters(&pool) >= 10
    });
    wait_for("commits of all 1000", Duration::from_secs(30), || sum_offsets(&committed(&s, &topic, 2)) == 1000);
    run.stop();
    assert_eq!(count_notifications(&pool), 990);
    let dead = cronsumer::db::dead_letters::list(&mut pool.get().unwrap(), Some(&topic), 100).unwrap();
    assert_eq!(dead.len(), 10);
    let mut reasons: Vec<String> = dead.iter().map(|d| d.error.clone()).collect();
    reasons.sort();
    let mut expected: Vec<&str> = expected_reasons.clone();
    expected.sort();
    for (got, want) in reasons.iter().zip(expected) {
        assert!(got.starts_with(want), "reason {got:?} does not start with {want:?}");
    }
    // each dead letter keeps the original payload
    assert!(dead.iter().all(|d| poisons.iter().any(|(p, _)| d.payload.as_deref() == Some(*p))));
    assert_commits_covered(&s, &pool, &topic, 2);
}
both_backends!(poison_records_go_to_dead_letters_with_reasons);

/// Makes the database refuse writes for `outage`, by holding SQLite's write
/// lock from another connection or by closing PostgreSQL to connections.
fn database_outage(tdb: &TestDb, outage: Duration, mut during: impl FnMut()) {
    let mut sqlite_lock = match tdb.backend {
        Backend::Sqlite => Some(WriteLock::in_process(&tdb.url, Duration::from_secs(10))),
        Backend::Postgres => {
            tdb.pg_block(true);
            None
        }
    };
    let end = Instant::now() + outage;
    while Instant::now() < end {
        during();
        std::thread::sleep(Duration::from_millis(500));
    }
    match sqlite_lock.as_mut() {
        Some(lock) => lock.release(),
        None => tdb.pg_block(false),
    }
}

fn database_outage_mid_stream_loses_nothing(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("outage"), &[]);
    let (_topics, topic) = registry_topics(&s, 4);
    let payloads: Vec<Vec<u8>> = (0..3000).map(notification).collect();
    produce(&s, &topic, &payloads[..2000]);
    let run = Running::start(&s, &pool, vec![]);
    wait_for("first rows", Duration::from_secs(60), || count_notifications(&pool) >= 100);
    let mut samples = 0;
    let mut late = Some(&payloads[2000..]);
    database_outage(&tdb, Duration::from_secs(12), || {
        // Records that arrive during the outage: the consumer must meet it, however fast it drained the rest.
        if let Some(rest) = late.take() {
            produce(&s, &topic, rest);
        }
        // Commits never pass a record that is not stored. (Reads of SQLite go on under the write lock.)
        if backend == Backend::Sqlite {
            assert_commits_covered(&s, &pool, &topic, 4);
            samples += 1;
        }
    });
    if backend == Backend::Postgres {
        samples = 1;
    }
    assert!(run.heartbeat.last_error().is_some(), "the outage was never seen by the consumer");
    wait_for("3000 rows after the outage", Duration::from_secs(120), || count_notifications(&pool) >= 3000);
    wait_for("commits of all 3000", Duration::from_secs(60), || sum_offsets(&committed(&s, &topic, 4)) == 3000);
    run.stop();
    assert!(samples > 0);
    assert_eq!(count_notifications(&pool), 3000);
    assert_eq!(count_dead_letters(&pool), 0);
    assert_commits_covered(&s, &pool, &topic, 4);
}
both_backends!(database_outage_mid_stream_loses_nothing);

fn topic_without_module_is_committed_and_consumption_goes_on(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("orphan"), &[]);
    let (_topics, topic) = registry_topics(&s, 1);
    let orphan = s.topic("orphans");
    let _orphans = TestTopics::create(&s, &[&orphan], 1);
    produce(&s, &orphan, &(0..50).map(|i| format!("{{\"n\":{i}}}").into_bytes()).collect::<Vec<_>>());
    produce(&s, &topic, &(0..100).map(notification).collect::<Vec<_>>());
    let run = Running::start(&s, &pool, vec![orphan.clone()]);
    wait_for("100 rows", Duration::from_secs(60), || count_notifications(&pool) >= 100);
    wait_for("orphan topic committed", Duration::from_secs(30), || committed(&s, &orphan, 1).get(&0) == Some(&50));
    assert!(!run.handle.is_finished(), "consumer thread ended");
    run.stop();
    assert_eq!(count_notifications(&pool), 100);
    assert_eq!(count_dead_letters(&pool), 0);
}
both_backends!(topic_without_module_is_committed_and_consumption_goes_on);

fn sigterm_mid_stream_exits_0_with_commits_matching_rows(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("sigterm"), &[]);
    let (_topics, topic) = registry_topics(&s, 4);
    produce(&s, &topic, &(0..20_000).map(notification).collect::<Vec<_>>());
    let svc = Service::start(&s, &tdb.url, &[]);
    svc.wait_for("rows flowing", Duration::from_secs(60), || count_notifications(&pool) >= 500);
    assert_eq!(svc.terminate(), Some(0));
    let stored = count_notifications(&pool);
    assert!(stored < 20_000, "the stream was not interrupted ({stored} rows): the test proves nothing");
    // Every stored row is covered by a commit and every commit by stored rows.
    let commits = committed(&s, &topic, 4);
    assert_eq!(sum_offsets(&commits), stored, "commits {commits:?} vs {stored} stored rows");
    assert_commits_covered(&s, &pool, &topic, 4);
}
both_backends!(sigterm_mid_stream_exits_0_with_commits_matching_rows);

/// Values PostgreSQL refuses (a NUL in text, a timestamp before its range)
/// are dead-lettered with the database's own message, and every other
/// record of the partition is stored after them; SQLite stores them.
fn values_the_database_refuses_are_dead_lettered_and_the_rest_is_stored(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("refused"), &[]);
    let (_topics, notifications) = registry_topics(&s, 1);
    let prices = s.topic("price-events");
    let mut payloads: Vec<Vec<u8>> = (0..20).map(notification).collect();
    payloads.insert(5, br#"{"user_id": 1, "event": "a\u0000b", "content": "x"}"#.to_vec());
    produce(&s, &notifications, &payloads);
    let price = |ts: &str| format!(r#"{{"symbol":"ACME","price":1.5,"timestamp":{ts},"source":"t"}}"#).into_bytes();
    let mut price_payloads: Vec<Vec<u8>> = (0..20).map(|i| price(&(1_700_000_000 + i).to_string())).collect();
    price_payloads.insert(3, price("-300000000000"));
    produce(&s, &prices, &price_payloads);

    let run = Running::start(&s, &pool, vec![]);
    let refused = if backend == Backend::Postgres { 2 } else { 0 };
    wait_for("every record stored or dead-lettered", Duration::from_secs(60), || {
        count_notifications(&pool) + count_prices(&pool) + count_dead_letters(&pool) >= 42
    });
    wait_for("commits of all 42", Duration::from_secs(30), || {
        sum_offsets(&committed(&s, &notifications, 1)) + sum_offsets(&committed(&s, &prices, 1)) == 42
    });
    run.stop();
    assert_eq!(count_notifications(&pool), 21 - refused / 2);
    assert_eq!(count_prices(&pool), 21 - refused / 2);
    let dead = cronsumer::db::dead_letters::list(&mut pool.get().unwrap(), None, 10).unwrap();
    assert_eq!(dead.len() as i64, refused);
    if backend == Backend::Postgres {
        let reason = |topic: &str| dead.iter().find(|d| d.topic == topic).map(|d| d.error.clone()).unwrap();
        let (n, p) = (reason(&notifications), reason(&prices));
        assert!(n.starts_with("the database refused this record:") && n.contains("0x00"), "{n}");
        assert!(p.starts_with("the database refused this record:") && p.contains("out of range"), "{p}");
        assert_eq!(dead.iter().map(|d| d.offset).collect::<std::collections::BTreeSet<_>>(), [3, 5].into());
    }
    assert_commits_covered(&s, &pool, &notifications, 1);
}
both_backends!(values_the_database_refuses_are_dead_lettered_and_the_rest_is_stored);

/// The payloads the original services send: string, integer and UUID user
/// ids mixed, stored exactly as sent; a price event's `raw_response_id`
/// kept; the price topic renamed by the seed's `KAFKA_PRICE_EVENTS_TOPIC`.
fn seed_payloads_and_topic_names_are_kept(backend: Backend) {
    use cronsumer::db::schema::{notifications::dsl as n, price_events::dsl as pe};
    use diesel::prelude::*;
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("seed"), &[("KAFKA_PRICE_EVENTS_TOPIC", "market.prices.v1")]);
    let (_topics, notifications) = registry_topics(&s, 1);
    let prices = s.topic("price-events");
    assert!(prices.ends_with("market.prices.v1"), "{prices}");
    let uuid = "7f1c2a4e-9b0d-4c55-8e21-3f6a9d0b1c2e";
    let sent = [
        r#"{"user_id": "u-17", "event": "e", "content": "c"}"#.to_string(),
        r#"{"user_id": 0, "event": "e", "content": "c"}"#.to_string(),
        format!(r#"{{"users": [42, "0042", "{uuid}"], "event": "e", "message": "m"}}"#),
    ];
    produce(&s, &notifications, &sent.iter().map(|p| p.clone().into_bytes()).collect::<Vec<_>>());
    let price = r#"{"symbol":"AAPL","price":150.25,"timestamp":"2026-11-20T21:00:00Z","source":"alpha_vantage","raw_response_id":"r-9","note":"extra"}"#;
    produce(&s, &prices, &[price.as_bytes().to_vec()]);

    let run = Running::start(&s, &pool, vec![]);
    wait_for("3 notifications and 1 price", Duration::from_secs(60), || {
        count_notifications(&pool) == 3 && count_prices(&pool) == 1
    });
    run.stop();
    assert_eq!(count_dead_letters(&pool), 0);
    let mut conn = pool.get().unwrap();
    let users: Vec<String> = cronsumer::on_backend!(conn, |c| n::notifications
        .order(n::source_offset)
        .select(n::users)
        .load::<String>(c)
        .unwrap());
    assert_eq!(users, vec![r#"["u-17"]"#.to_string(), "[0]".into(), format!(r#"[42,"0042","{uuid}"]"#)]);
    let raw: Vec<Option<String>> =
        cronsumer::on_backend!(conn, |c| pe::price_events.select(pe::raw_response_id).load(c).unwrap());
    assert_eq!(raw, vec![Some("r-9".to_string())]);
}
both_backends!(seed_payloads_and_topic_names_are_kept);
