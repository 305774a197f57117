//! What every fault scenario shares: the process-wide [`SERIAL`] lock, one
//! scenario's database, settings, topics and commit monitor ([`Fixture`]),
//! and the shared broker's controller ([`Broker`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cronsumer::config::Settings;
use cronsumer::db::{Backend, Pool};

use crate::monitor::{self, Monitor};
use crate::support::*;

/// Scenarios share one broker and some stop it: one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Partitions of every topic the scenarios create.
pub const PARTITIONS: i32 = 4;
/// Records of the mid-stream scenarios.
pub const STREAM: usize = 20_000;

pub fn serial() -> MutexGuard<'static, ()> {
    lock(&SERIAL)
}

pub fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

// ---------------------------------------------------------------------------
// One scenario's database, settings and topics.

/// A fresh database, a unique topic prefix and group with every registry
/// topic created ([`PARTITIONS`] each, deleted when it drops), and a
/// directory for the services. Declare it before the [`Service`]s so they
/// are killed before it drops.
pub struct Fixture {
    pub scenario: &'static str,
    pub backend: Backend,
    pub prefix: String,
    pub s: Settings,
    /// The `notifications` topic.
    pub topic: String,
    /// Extra settings, passed to every service as environment variables.
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub pool: Pool,
    /// Checks the group's commits while the scenario runs.
    monitor: Mutex<Option<Monitor>>,
    /// Held for its drop: deletes the topics.
    _topics: TestTopics,
    pub tdb: TestDb,
}

impl Fixture {
    pub fn new(scenario: &'static str, backend: Backend, extra: &[(&str, &str)]) -> Fixture {
        let tdb = TestDb::new(backend);
        let pool = tdb.pool();
        let prefix = format!("{}.", unique("fault"));
        let s = settings(&tdb.url, &prefix, extra);
        let _topics = TestTopics::registry(&s, PARTITIONS);
        let topic = s.topic("notifications");
        let dir = std::env::temp_dir().join(unique(&format!("cronsumer-{scenario}-")));
        std::fs::create_dir_all(&dir).unwrap();
        let env = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let monitor = Mutex::new(Some(Monitor::start(&s, &tdb.url, Self::watched(&s), PARTITIONS)));
        Fixture { scenario, backend, prefix, s, topic, env, dir, pool, monitor, _topics, tdb }
    }

    /// [`Fixture::new`] with notifications sent to the webhook at `url`, and `extra` on top.
    pub fn with_webhook(scenario: &'static str, backend: Backend, url: &str, extra: &[(&str, &str)]) -> Fixture {
        let mut vars = vec![("NOTIFIER", "webhook"), ("NOTIFY_WEBHOOK_URL", url)];
        vars.extend_from_slice(extra);
        Fixture::new(scenario, backend, &vars)
    }

    /// The topics the commit monitor watches, with the table each is stored in.
    fn watched(s: &Settings) -> Vec<monitor::Watched> {
        let predictions = (s.module_topic("predictions", "candles"), "predictions");
        vec![(s.topic("notifications"), "notifications"), (s.topic("price-events"), "price_events"), predictions]
    }

    /// Stops the commit monitor, asserting that it saw no violation so far
    /// (a recreated topic's commits start again from 0: see [`Self::watch_again`]).
    pub fn stop_watching(&self) {
        let found = lock(&self.monitor).take().expect("the monitor runs").finish();
        assert!(found.violations.is_empty(), "the commit monitor saw: {:#?}", found.violations);
    }

    /// Starts a fresh commit monitor after [`Self::stop_watching`].
    pub fn watch_again(&self) {
        *lock(&self.monitor) = Some(Monitor::start(&self.s, &self.tdb.url, Self::watched(&self.s), PARTITIONS));
    }

    /// Stops the commit monitor, prints the scenario's `SCENARIO` line and
    /// asserts that the monitor saw no violation while the scenario ran.
    pub fn report(&self, produced: usize, stored: usize, dead: usize, duplicates: usize) {
        let found = lock(&self.monitor).take().expect("the scenario is reported once").finish();
        println!(
            "SCENARIO {} {}: produced={produced} stored={stored} dead_lettered={dead} duplicates={duplicates} \
             commit_readings={} commit_advances_checked={} longest_reading_gap_ms={}",
            self.scenario,
            backend_name(self.backend),
            found.readings,
            found.checked,
            found.longest_gap.as_millis()
        );
        assert!(found.violations.is_empty(), "the commit monitor saw: {:#?}", found.violations);
        assert!(found.checked > 0, "the commit monitor checked no commit");
    }

    /// Starts `cronsumer run` (a fresh working directory `<dir>/<label>`, a
    /// free HTTP port) with the fixture's settings and `extra` on top.
    pub fn start(&self, label: &str, extra: &[(&str, &str)]) -> Service {
        let mut env = env_of(&self.s, &self.tdb.url);
        env.extend(self.env.iter().cloned());
        Service::start_in(&format!("{}/{label}", self.scenario), &self.dir.join(label), env, extra)
    }

    /// Partitions of every topic the service subscribes to.
    pub fn all_partitions(&self) -> f64 {
        (cronsumer::registry().topics(&self.s).len() as i32 * PARTITIONS).into()
    }

    pub fn rows(&self) -> i64 {
        count_notifications(&self.pool)
    }

    pub fn dead(&self) -> i64 {
        count_dead_letters(&self.pool)
    }

    /// Sum of the group's committed offsets of `topic` (`None`: the broker did not answer).
    pub fn commits(&self, topic: &str) -> Option<i64> {
        try_committed(&self.s, topic, PARTITIONS).map(|m| sum_offsets(&m))
    }

    /// Produces `notification(0..n)` to the notifications topic.
    pub fn produce_notifications(&self, n: usize) {
        let payloads: Vec<Vec<u8>> = (0..n).map(notification).collect();
        produce(&self.s, &self.topic, &payloads);
    }

    /// Waits until `n` records of the notifications topic are stored (rows or
    /// dead letters) and committed, while `services` keep running.
    pub fn wait_all(&self, services: &[&Service], n: usize, limit: Duration) {
        let want = n as i64;
        wait_running(services, &format!("all {n} records stored"), limit, || self.rows() + self.dead() >= want);
        wait_running(services, &format!("commits covering all {n} records"), Duration::from_secs(90), || {
            self.commits(&self.topic) == Some(want)
        });
    }

    /// Prints the SCENARIO line and asserts that each of the `produced`
    /// records of the notifications topic is stored exactly once: as a row, or
    /// (`want_dead` of them) as a dead letter, and that the commits cover them.
    pub fn assert_exactly_once(&self, produced: usize, want_dead: usize) {
        let (rows, dead) = stored_sources(&self.pool, &self.topic);
        let distinct: BTreeSet<(i32, i64)> = rows.iter().chain(&dead).copied().collect();
        let duplicates = rows.len() + dead.len() - distinct.len();
        self.report(produced, rows.len(), dead.len(), duplicates);
        assert_eq!(duplicates, 0, "a source (partition, offset) is stored twice (rows and/or dead letters)");
        assert_eq!(dead.len(), want_dead, "dead letters");
        assert_eq!(rows.len(), produced - want_dead, "stored rows");
        assert_eq!(self.rows() as usize, rows.len(), "notifications rows not from the topic");
        assert_eq!(self.dead() as usize, dead.len(), "dead letters of other topics");
        assert_eq!(self.commits(&self.topic), Some(produced as i64), "sum of committed offsets");
        self.assert_commits_covered();
    }

    /// The group's commits of the notifications topic pass no record that is not stored.
    pub fn assert_commits_covered(&self) {
        assert_commits_covered(&self.s, &self.pool, &self.topic, PARTITIONS);
    }

    /// Once the first copy is gone mid-stream: a fresh copy (`second`)
    /// stores the rest of the `n` records, each exactly once.
    pub fn second_copy_finishes(&self, n: usize) {
        let second = self.start("second", &[]);
        self.wait_all(&[&second], n, Duration::from_secs(300));
        second.assert_running("at the end");
        self.assert_exactly_once(n, 0);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fault test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// The shared broker, stopped and started.

fn port_open(addr: &str) -> bool {
    addr.parse::<SocketAddr>().is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

pub fn services_script() -> PathBuf {
    std::env::var_os("CRONSUMER_SERVICES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh"))
}

/// Stops and starts the shared broker through `scripts/services.sh`; starts it
/// again when dropped while it is down, so a failing test leaves it running.
pub struct Broker {
    addr: String,
    log: PathBuf,
    down: bool,
}

impl Broker {
    pub fn new(fx: &Fixture) -> Broker {
        Broker { addr: fx.s.kafka_bootstrap_servers.clone(), log: fx.dir.join("services.log"), down: false }
    }

    fn services(&self, command: &str) -> bool {
        let out = File::options().create(true).append(true).open(&self.log).unwrap();
        let err = out.try_clone().unwrap();
        Command::new("bash")
            .arg(services_script())
            .arg(command)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .is_ok_and(|s| s.success())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.down = true;
        assert!(self.services("broker-stop"), "`services.sh broker-stop` failed:\n{}", self.log_text());
        assert!(
            !port_open(&self.addr),
            "the broker still answers at {} after `{} broker-stop`: it was not started by that script \
             (run the fault tests through scripts/test.sh)",
            self.addr,
            services_script().display()
        );
    }

    pub fn start(&mut self) {
        assert!(self.services("broker-start"), "`services.sh broker-start` failed:\n{}", self.log_text());
        self.down = false;
        assert!(port_open(&self.addr), "the broker does not answer at {} after broker-start", self.addr);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.down && !port_open(&self.addr) {
            let _ = self.services("broker-start");
        }
    }
}
