//! Shared test fixtures: service addresses, a fresh database per test, unique
//! topics and groups, producing records, and waiting on conditions.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cronsumer::config::Settings;
use cronsumer::db::{self, Backend, Pool};
use diesel::connection::SimpleConnection;
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

/// The application name of connections a database outage spares.
pub const OBSERVER: &str = "cronsumer_fault_monitor";

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

    /// PostgreSQL only: refuse new connections and end the open ones (an
    /// outage of this database), except an observer's (application name
    /// [`OBSERVER`]: the fault suite's commit monitor).
    pub fn pg_block(&self, blocked: bool) {
        let name = self.pg_name.as_ref().expect("pg_block needs PostgreSQL");
        let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
        diesel::sql_query(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {}", !blocked)).execute(&mut admin).unwrap();
        if blocked {
            diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid() \
                 AND application_name <> '{OBSERVER}'"
            ))
            .execute(&mut admin)
            .unwrap();
        }
    }
}

impl TestDb {
    /// PostgreSQL only: inserts into the consumer's tables fail as on a
    /// read-only standby (SQLSTATE 25006) while connections and reads work:
    /// an outage of the consumer's writes that a starting copy gets through.
    pub fn pg_refuse_writes(&self, refused: bool) {
        let mut conn = PgConnection::establish(&self.url).unwrap();
        let sql = if refused {
            "CREATE OR REPLACE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               RAISE EXCEPTION 'cannot execute INSERT in a read-only transaction (outage drill)' \
               USING ERRCODE = 'read_only_sql_transaction'; END $$; \
             CREATE TRIGGER refuse_writes BEFORE INSERT ON notifications \
               FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes(); \
             CREATE TRIGGER refuse_writes BEFORE INSERT ON dead_letters \
               FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes();"
        } else {
            "DROP TRIGGER refuse_writes ON notifications; DROP TRIGGER refuse_writes ON dead_letters;"
        };
        conn.batch_execute(sql).unwrap();
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

/// The same settings as environment variables, for the binary (test
/// settings hold no secrets, so the described values are the real ones).
pub fn env_of(s: &Settings, db_url: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = s
        .describe()
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.split(" (").next().unwrap_or(&k).to_string(), v))
        .collect();
    env.retain(|(k, _)| k != "DATABASE_URL" && k != "RUST_LOG");
    env.push(("DATABASE_URL".into(), db_url.into()));
    env.push(("RUST_LOG".into(), "info".into()));
    env.push(("HTTP_ADDR".into(), "127.0.0.1:0".into()));
    env
}

pub fn create_topic(settings: &Settings, name: &str, partitions: i32) {
    let admin = cronsumer::kafka::admin_client(settings).unwrap();
    cronsumer::kafka::create_topics(&admin, &[name.to_string()], partitions).unwrap();
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

/// Deletes `name`. (The broker creates a topic again as soon as a client
/// asks for its metadata, as a subscribed consumer does: the caller
/// recreates it with `create_topic`, which accepts one that exists.)
pub fn delete_topic(settings: &Settings, name: &str) {
    use rdkafka::admin::AdminOptions;
    let admin = cronsumer::kafka::admin_client(settings).unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in futures_executor::block_on(admin.delete_topics(&[name], &opts)).unwrap() {
        r.unwrap_or_else(|(t, code)| panic!("cannot delete topic {t}: {code}"));
    }
    std::thread::sleep(Duration::from_secs(1));
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
    try_committed(settings, topic, partitions).expect("committed offsets")
}

/// [`committed`], or `None` when the broker did not answer (used while it restarts).
pub fn try_committed(settings: &Settings, topic: &str, partitions: i32) -> Option<BTreeMap<i32, i64>> {
    let c: BaseConsumer = cronsumer::kafka::consumer_config(settings).create().ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    Some(
        got.elements()
            .iter()
            .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 }))
            .collect(),
    )
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

/// A free loopback port for HTTP_ADDR.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A plain HTTP/1.0 GET: `(status, body)`, or `None` when nothing answered.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The sum of every series of metric `name` (`name` or `name{labels}`), 0 when absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// The `cronsumer` binary run as a service; killed when dropped.
pub struct Service {
    pub child: std::process::Child,
    pub http: String,
    pub log: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Service {
    pub fn start(s: &Settings, db_url: &str, extra_env: &[(&str, &str)]) -> Service {
        let dir = std::env::temp_dir().join(unique("svc-"));
        std::fs::create_dir_all(&dir).unwrap();
        let http = free_addr();
        let log = dir.join("service.log");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cronsumer"));
        cmd.arg("run").current_dir(&dir).envs(env_of(s, db_url)).env("HTTP_ADDR", &http);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let f = std::fs::File::create(&log).unwrap();
        cmd.stdout(f.try_clone().unwrap()).stderr(f);
        Service { child: cmd.spawn().unwrap(), http, log, dir }
    }

    /// [`wait_for`], printing the service's log when it times out.
    pub fn wait_for(&mut self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            if Instant::now() >= deadline || !self.is_running() {
                panic!("waiting for {what}: timed out or the service exited; its log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn healthz(&self) -> Option<(u16, String)> {
        http_get(&self.http, "/healthz")
    }

    pub fn metrics(&self) -> String {
        http_get(&self.http, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code (fails the test after 30 s).
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub fn cli(s: &Settings, db_url: &str, args: &[&str]) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(unique("cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cronsumer"))
        .args(args)
        .current_dir(&dir)
        .envs(env_of(s, db_url))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A runner for a job whose schedule parses.
pub fn runner(
    job: std::sync::Arc<dyn cronsumer::scheduler::Job>,
    ctx: std::sync::Arc<cronsumer::scheduler::JobContext>,
) -> cronsumer::scheduler::JobRunner {
    cronsumer::scheduler::JobRunner::new(job, ctx).expect("the job's schedule parses")
}
