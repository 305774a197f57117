//! Shared test fixtures: service addresses, a fresh database per test, unique
//! topics and groups, producing records, and waiting on conditions.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cronsumer::config::Settings;
use cronsumer::db::{self, Backend, Pool};
use diesel::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

pub fn broker() -> String {
    let addr = std::env::var("CRONSUMER_TEST_BROKER").unwrap_or_else(|_| "127.0.0.1:19092".into());
    if std::net::TcpStream::connect_timeout(
        &addr.parse().expect("CRONSUMER_TEST_BROKER is HOST:PORT"),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("no Kafka broker answers at {addr}: start one with `scripts/services.sh up` (or run `scripts/test.sh`)");
    }
    addr
}

pub fn pg_admin_url() -> String {
    std::env::var("CRONSUMER_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}x{}x{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A fresh, empty database of either backend, removed when dropped.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pg_name: Option<String>,
    dir: Option<std::path::PathBuf>,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique("cronsumer-test-"));
                std::fs::create_dir_all(&dir).unwrap();
                TestDb { url: dir.join("test.db").display().to_string(), backend, pg_name: None, dir: Some(dir) }
            }
            Backend::Postgres => {
                let name = unique("cronsumer_test_");
                let mut admin = PgConnection::establish(&pg_admin_url()).unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL not reachable at {}: {e}; start it with `scripts/services.sh up`",
                        pg_admin_url()
                    )
                });
                diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).unwrap();
                let base = pg_admin_url();
                let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
                TestDb { url, backend, pg_name: Some(name), dir: None }
            }
        }
    }

    pub fn pool(&self) -> Pool {
        db::connect_and_migrate(&self.url, 4).unwrap().0
    }

    /// PostgreSQL only: refuse new connections and end the open ones (an outage of this database).
    pub fn pg_block(&self, blocked: bool) {
        let name = self.pg_name.as_ref().expect("pg_block needs PostgreSQL");
        let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
        diesel::sql_query(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {}", !blocked)).execute(&mut admin).unwrap();
        if blocked {
            diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .execute(&mut admin)
            .unwrap();
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut admin) = PgConnection::establish(&pg_admin_url()) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Settings for a test: the test broker, a unique topic prefix and group, `db`.
pub fn settings(db_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("KAFKA_BOOTSTRAP_SERVERS".into(), broker());
    vars.insert("KAFKA_TOPIC_PREFIX".into(), prefix.into());
    vars.insert("KAFKA_GROUP_ID".into(), format!("{prefix}group"));
    vars.insert("DATABASE_URL".into(), db_url.into());
    vars.insert("CONSUMER_BATCH_TIMEOUT_MS".into(), "200".into());
    vars.insert("KAFKA_PROP_SESSION_TIMEOUT_MS".into(), "6000".into());
    vars.insert("KAFKA_PROP_HEARTBEAT_INTERVAL_MS".into(), "500".into());
    vars.insert("SHUTDOWN_TIMEOUT_MS".into(), "5000".into());
    vars.insert("RUST_LOG".into(), "warn".into());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Settings::from_vars(vars).unwrap()
}

/// The same settings as environment variables, for the binary.
pub fn env_of(s: &Settings, db_url: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("KAFKA_BOOTSTRAP_SERVERS".to_string(), s.kafka.bootstrap_servers.clone()),
        ("KAFKA_TOPIC_PREFIX".to_string(), s.kafka.topic_prefix.clone()),
        ("KAFKA_GROUP_ID".to_string(), s.kafka.group_id.clone()),
        ("DATABASE_URL".to_string(), db_url.to_string()),
        ("CONSUMER_BATCH_SIZE".to_string(), s.consumer.batch_size.to_string()),
        ("CONSUMER_BATCH_TIMEOUT_MS".to_string(), s.consumer.batch_timeout.as_millis().to_string()),
        ("SHUTDOWN_TIMEOUT_MS".to_string(), s.shutdown_timeout.as_millis().to_string()),
        ("HTTP_ADDR".to_string(), "127.0.0.1:0".to_string()),
        ("RUST_LOG".to_string(), "info".to_string()),
    ];
    for (name, value) in &s.kafka.props {
        env.push((format!("KAFKA_PROP_{}", name.replace('.', "_").to_uppercase()), value.clone()));
    }
    env
}

pub fn create_topic(settings: &Settings, name: &str, partitions: i32) {
    let admin = cronsumer::kafka::admin_client(settings).unwrap();
    cronsumer::kafka::create_topics(settings, &admin, &[name.to_string()], partitions).unwrap();
    // Wait until the metadata shows every partition.
    wait_for(&format!("topic {name} in metadata"), Duration::from_secs(20), || {
        admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(2))
            .ok()
            .and_then(|m| {
                m.topics().first().map(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            })
            .unwrap_or(false)
    });
}

/// Produces `payloads` to `topic`, keys spreading them over partitions; waits for every delivery.
pub fn produce(settings: &Settings, topic: &str, payloads: &[Vec<u8>]) {
    let mut p = cronsumer::producer::RecordProducer::new(settings).unwrap();
    for (i, payload) in payloads.iter().enumerate() {
        p.send(topic, Some(format!("k{i}").as_bytes()), payload).unwrap();
    }
    assert_eq!(p.finish(topic).unwrap(), payloads.len() as u64);
}

pub fn notification(i: usize) -> Vec<u8> {
    format!(r#"{{"user_id": {i}, "event": "order_shipped", "content": "Your order {i} has shipped"}}"#).into_bytes()
}

/// Polls `cond` every 50 ms until it holds; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The group's committed offsets for every partition of `topic` (-1: none).
pub fn committed(settings: &Settings, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = cronsumer::kafka::consumer_config(settings).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 })).collect()
}

/// Stored (partition, offset) sources of `topic` across notifications and dead_letters.
pub fn stored_sources(pool: &Pool, topic: &str) -> (Vec<(i32, i64)>, Vec<(i32, i64)>) {
    use cronsumer::db::schema::{dead_letters::dsl as d, notifications::dsl as n};
    let mut conn = pool.get().unwrap();
    let rows: Vec<(Option<i32>, Option<i64>)> = cronsumer::on_backend!(conn, |c| n::notifications
        .filter(n::source_topic.eq(topic))
        .select((n::source_partition, n::source_offset))
        .load(c))
    .unwrap();
    let dead: Vec<(i32, i64)> = cronsumer::on_backend!(conn, |c| d::dead_letters
        .filter(d::topic.eq(topic))
        .select((d::partition, d::offset))
        .load(c))
    .unwrap();
    (rows.into_iter().map(|(p, o)| (p.unwrap(), o.unwrap())).collect(), dead)
}

pub fn count_notifications(pool: &Pool) -> i64 {
    db::notifications::count(&mut pool.get().unwrap()).unwrap()
}

pub fn count_dead_letters(pool: &Pool) -> i64 {
    db::dead_letters::count(&mut pool.get().unwrap()).unwrap()
}

/// Asserts that every offset below each committed offset is stored (as a row or a dead letter).
pub fn assert_commits_covered(settings: &Settings, pool: &Pool, topic: &str, partitions: i32) {
    let commits = committed(settings, topic, partitions);
    let (rows, dead) = stored_sources(pool, topic);
    let mut stored: BTreeMap<i32, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for (p, o) in rows.into_iter().chain(dead) {
        stored.entry(p).or_default().insert(o);
    }
    for (p, c) in commits {
        for o in 0..c.max(0) {
            assert!(
                stored.get(&p).is_some_and(|s| s.contains(&o)),
                "committed offset {c} of {topic}/{p} passes offset {o}, which is not stored"
            );
        }
    }
}

/// Runs both backends' variants of a test body `fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(cronsumer::db::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name(cronsumer::db::Backend::Postgres)
            }
        }
    };
}
