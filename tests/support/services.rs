//! The services the tests run against (a Kafka-protocol broker and
//! PostgreSQL), unique names, a fresh database per test, and the settings of
//! a test as [`Settings`] and as the binary's environment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cronsumer::config::Settings;
use cronsumer::db::{self, Backend, Pool};
use diesel::prelude::*;

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
    pub(super) pg_name: Option<String>,
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
