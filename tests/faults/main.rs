//! Fault tests: the real `cronsumer` binary (`cronsumer run`, started as
//! child processes) against the real broker and real databases, while a fault
//! is injected from outside: SIGKILL mid-stream, a broker restart, a
//! PostgreSQL outage, a handler panic on a poison record, SIGTERM mid-batch,
//! one of two copies killed, a webhook outage, a SQLite file locked by another
//! process, and malformed input of every kind; and (in [`group`]) faults
//! combined with group changes: rebalances during an outage, a handler slower
//! than `max.poll.interval.ms`, bounded shutdown, the broker away past the
//! session timeout, rolling restarts under load; and (in [`delivery`]) two
//! copies whose clocks disagree sending notifications.
//!
//! Each scenario produces a known set of records, injects its fault, lets the
//! service recover by itself (no test code repairs anything but the fault it
//! injected), and then proves with exact counts that:
//!
//! - every produced record ended up exactly once in its table or in
//!   `dead_letters` (rows + dead letters == produced);
//! - no source `(partition, offset)` was stored twice;
//! - the group's committed offsets sum to the records produced and never pass
//!   a record that is not stored;
//! - while the scenario ran, the [`monitor`] saw no commit pass an unstored
//!   record and none move backwards.
//!
//! Each scenario prints one line:
//! `SCENARIO <name> <backend>: produced=N stored=N dead_lettered=N duplicates=N`.
//!
//! Some scenarios stop the shared broker, so every test takes the process-wide
//! [`SERIAL`] lock first. Run with `scripts/test.sh --test faults` (which starts
//! the broker and PostgreSQL and sets `CRONSUMER_SERVICES`); a failing test
//! prints the tail of each service's log and keeps its files.

#[macro_use]
#[path = "../it/common.rs"]
mod common;
mod delivery;
mod exactly_once;
mod group;
mod monitor;
#[path = "../it/sink.rs"]
mod sink;
mod topics;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cronsumer::config::Settings;
use cronsumer::db::{self, Backend, Pool};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use common::*;
use monitor::Monitor;
use sink::Sink;

/// Scenarios share one broker and some stop it: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Partitions of every topic the scenarios create.
const PARTITIONS: i32 = 4;
/// Records of the mid-stream scenarios.
const STREAM: usize = 20_000;

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

// ---------------------------------------------------------------------------
// Small helpers: ports, HTTP, signals, committed offsets.

fn port_open(addr: &str) -> bool {
    addr.parse::<SocketAddr>().is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// The value of one Prometheus series (`name{labels}` exactly as rendered).
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

fn sum_offsets(m: &BTreeMap<i32, i64>) -> i64 {
    m.values().map(|&o| o.max(0)).sum()
}

/// Every offset below each committed offset is in `stored`.
fn assert_covered(commits: &BTreeMap<i32, i64>, stored: &BTreeSet<(i32, i64)>, topic: &str) {
    for (&p, &c) in commits {
        for o in 0..c.max(0) {
            assert!(
                stored.contains(&(p, o)),
                "committed offset {c} of {topic}/{p} passes offset {o}, which is not stored"
            );
        }
    }
}

/// Polls `cond` every 250 ms until it holds; fails at once if one of
/// `services` exited, and after `limit`.
fn wait_running(services: &[&Service], what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        for s in services {
            s.assert_running(&format!("while waiting for {what}"));
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------
// One running `cronsumer run`.

/// A `cronsumer run` child process with its own HTTP port and log file;
/// killed (SIGKILL) when dropped, and its log tail printed if the test failed.
struct Service {
    label: String,
    child: Mutex<Child>,
    http: String,
    log: PathBuf,
}

impl Service {
    fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// `None` while it runs; its exit status once it exited.
    fn exited(&self) -> Option<ExitStatus> {
        lock(&self.child).try_wait().unwrap_or_else(|e| panic!("cannot check cronsumer {}: {e}", self.label))
    }

    fn assert_running(&self, when: &str) {
        if let Some(status) = self.exited() {
            panic!("cronsumer {} exited ({status}) {when}", self.label);
        }
    }

    /// SIGKILL, and reap it.
    fn kill9(&self) {
        self.assert_running("before it was to be killed");
        let mut c = lock(&self.child);
        let _ = c.kill();
        let _ = c.wait();
    }

    fn term(&self) {
        send_signal(self.pid(), "TERM");
    }

    fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.http, path)
    }

    fn healthz(&self) -> Option<(u16, String)> {
        self.get("/healthz")
    }

    fn metrics(&self) -> String {
        match self.get("/metrics") {
            Some((200, body)) => body,
            other => panic!("GET /metrics of cronsumer {} answered {other:?}", self.label),
        }
    }

    /// Partitions this copy holds, from `/metrics` (0 when it does not answer).
    fn assigned(&self) -> f64 {
        match self.get("/metrics") {
            Some((200, body)) => metric_value(&body, "cronsumer_assigned_partitions").unwrap_or(0.0),
            _ => 0.0,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- cronsumer {} (log {}), last lines ----\n{}\n----",
                self.label,
                self.log.display(),
                self.log_tail(120)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// One scenario's database, settings and topics.

/// A fresh database, a unique topic prefix and group with every registry
/// topic created ([`PARTITIONS`] each), and a directory for the services.
/// Declare it before the [`Service`]s so they are killed before it drops.
struct Fixture {
    scenario: &'static str,
    backend: Backend,
    prefix: String,
    s: Settings,
    /// The `notifications` topic.
    topic: String,
    /// Extra settings, passed to every service as environment variables.
    env: Vec<(String, String)>,
    dir: PathBuf,
    pool: Pool,
    /// Checks the group's commits while the scenario runs.
    monitor: Mutex<Option<Monitor>>,
    tdb: TestDb,
}

impl Fixture {
    fn new(scenario: &'static str, backend: Backend, extra: &[(&str, &str)]) -> Fixture {
        let tdb = TestDb::new(backend);
        let pool = tdb.pool();
        let prefix = format!("{}.", unique("fault"));
        let s = settings(&tdb.url, &prefix, extra);
        for t in cronsumer::registry().topics(&s) {
            create_topic(&s, &t, PARTITIONS);
        }
        let topic = s.topic("notifications");
        let dir = std::env::temp_dir().join(unique(&format!("cronsumer-{scenario}-")));
        std::fs::create_dir_all(&dir).unwrap();
        let env = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let monitor = Mutex::new(Some(Monitor::start(&s, &tdb.url, Self::watched(&s), PARTITIONS)));
        Fixture { scenario, backend, prefix, s, topic, env, dir, pool, monitor, tdb }
    }

    /// The topics the commit monitor watches, with the table each is stored in.
    fn watched(s: &Settings) -> Vec<monitor::Watched> {
        vec![(s.topic("notifications"), "notifications"), (s.topic("price-events"), "price_events")]
    }

    /// Stops the commit monitor, asserting that it saw no violation so far
    /// (a recreated topic's commits start again from 0: see [`Self::watch_again`]).
    fn stop_watching(&self) {
        let found = lock(&self.monitor).take().expect("the monitor runs").finish();
        assert!(found.violations.is_empty(), "the commit monitor saw: {:#?}", found.violations);
    }

    /// Starts a fresh commit monitor after [`Self::stop_watching`].
    fn watch_again(&self) {
        *lock(&self.monitor) = Some(Monitor::start(&self.s, &self.tdb.url, Self::watched(&self.s), PARTITIONS));
    }

    /// Stops the commit monitor, prints the scenario's `SCENARIO` line and
    /// asserts that the monitor saw no violation while the scenario ran.
    fn report(&self, produced: usize, stored: usize, dead: usize, duplicates: usize) {
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

    /// Starts `cronsumer run` (a fresh working directory, a free HTTP port,
    /// output to `<dir>/<label>/cronsumer.log`) with the fixture's settings
    /// and `extra` on top.
    fn start(&self, label: &str, extra: &[(&str, &str)]) -> Service {
        let http = free_addr();
        let dir = self.dir.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("cronsumer.log");
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronsumer"));
        cmd.arg("run")
            .current_dir(&dir)
            .env_remove(cronsumer::fault_injection::PANIC_PAYLOAD_ENV)
            .envs(env_of(&self.s, &self.tdb.url))
            .envs(self.env.iter().cloned())
            .env("HTTP_ADDR", &http)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for &(k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_cronsumer")));
        Service { label: format!("{}/{label}", self.scenario), child: Mutex::new(child), http, log }
    }

    /// Partitions of every topic the service subscribes to.
    fn all_partitions(&self) -> f64 {
        (cronsumer::registry().topics(&self.s).len() as i32 * PARTITIONS).into()
    }

    fn rows(&self) -> i64 {
        count_notifications(&self.pool)
    }

    fn dead(&self) -> i64 {
        count_dead_letters(&self.pool)
    }

    /// Sum of the group's committed offsets of `topic` (`None`: the broker did not answer).
    fn commits(&self, topic: &str) -> Option<i64> {
        try_committed(&self.s, topic, PARTITIONS).map(|m| sum_offsets(&m))
    }

    /// Produces `notification(0..n)` to the notifications topic.
    fn produce_notifications(&self, n: usize) {
        let payloads: Vec<Vec<u8>> = (0..n).map(notification).collect();
        produce(&self.s, &self.topic, &payloads);
    }

    /// Waits until `n` records of the notifications topic are stored (rows or
    /// dead letters) and committed, while `services` keep running.
    fn wait_all(&self, services: &[&Service], n: usize, limit: Duration) {
        let want = n as i64;
        wait_running(services, &format!("all {n} records stored"), limit, || self.rows() + self.dead() >= want);
        wait_running(services, &format!("commits covering all {n} records"), Duration::from_secs(90), || {
            self.commits(&self.topic) == Some(want)
        });
    }

    /// Prints the SCENARIO line and asserts that each of the `produced`
    /// records of the notifications topic is stored exactly once: as a row, or
    /// (`want_dead` of them) as a dead letter, and that the commits cover them.
    fn assert_exactly_once(&self, produced: usize, want_dead: usize) {
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
        assert_commits_covered(&self.s, &self.pool, &self.topic, PARTITIONS);
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
// 1. SIGKILL mid-stream, then a restart.

/// SIGKILL while 20,000 records stream in; a fresh process re-reads the
/// uncommitted batch, and the unique source columns absorb the repeats.
fn kill_9_mid_stream(backend: Backend) {
    let _serial = serial();
    let fx = Fixture::new("kill_9_mid_stream", backend, &[]);
    fx.produce_notifications(STREAM);
    let first = fx.start("first", &[]);
    wait_running(&[&first], "3000 rows", Duration::from_secs(180), || fx.rows() >= 3000);
    first.kill9();
    let at_kill = fx.rows();
    println!("kill_9_mid_stream {}: SIGKILL with {at_kill} rows stored", backend_name(backend));
    assert!(at_kill < STREAM as i64, "the stream was not interrupted ({at_kill} rows): the test proves nothing");
    // The killed process never committed past what it had stored.
    assert_commits_covered(&fx.s, &fx.pool, &fx.topic, PARTITIONS);

    let second = fx.start("second", &[]);
    fx.wait_all(&[&second], STREAM, Duration::from_secs(300));
    second.assert_running("at the end");
    fx.assert_exactly_once(STREAM, 0);
}
both_backends!(kill_9_mid_stream);

// ---------------------------------------------------------------------------
// 2. Broker stopped for 15 s mid-stream.

fn services_script() -> PathBuf {
    std::env::var_os("CRONSUMER_SERVICES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh"))
}

/// Stops and starts the shared broker through `scripts/services.sh`; starts it
/// again when dropped while it is down, so a failing test leaves it running.
struct Broker {
    addr: String,
    log: PathBuf,
    down: bool,
}

impl Broker {
    fn new(fx: &Fixture) -> Broker {
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

    fn stop(&mut self) {
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

    fn start(&mut self) {
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

/// The broker goes away for 15 s while 20,000 records stream in: the service
/// keeps running (commits fail and are retried, handlers are idempotent) and
/// finishes the stream once the broker is back.
#[test]
fn broker_restart_mid_stream() {
    let _serial = serial();
    // Client errors that last longer than the stall timeout make /healthz fail and the client be recreated.
    let fx = Fixture::new("broker_restart_mid_stream", Backend::Sqlite, &[("CONSUMER_STALL_TIMEOUT_MS", "4000")]);
    fx.produce_notifications(STREAM);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "2000 rows", Duration::from_secs(180), || fx.rows() >= 2000);

    let mut broker = Broker::new(&fx);
    let outage = Instant::now();
    broker.stop();
    svc.assert_running("right after the broker stopped");
    // /healthz reports client errors that last longer than
    // CONSUMER_STALL_TIMEOUT_MS; /readyz, which checks that the broker
    // answers, must report the outage too.
    let mut healthz_saw: Option<String> = None;
    let mut readyz_saw: Option<String> = None;
    while outage.elapsed() < Duration::from_secs(15) {
        svc.assert_running("during the broker outage");
        if healthz_saw.is_none() {
            if let Some((code, body)) = svc.healthz().filter(|(code, _)| *code != 200) {
                healthz_saw = Some(format!("{code} {body}"));
            }
        }
        if readyz_saw.is_none() {
            if let Some((code, body)) = svc.get("/readyz").filter(|(code, _)| *code != 200) {
                readyz_saw = Some(format!("{code} {body}"));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("broker outage seen by /healthz: {}", healthz_saw.as_deref().unwrap_or("no (stayed 200)"));
    println!("broker outage seen by /readyz: {}", readyz_saw.as_deref().unwrap_or("no (stayed 200)"));
    broker.start();
    svc.assert_running("after the broker came back");
    assert!(readyz_saw.is_some(), "/readyz answered 200 throughout the 15 s broker outage");
    let healthz = healthz_saw.unwrap_or_default();
    assert!(healthz.starts_with("503") && healthz.contains("kafka client failing for"), "/healthz: {healthz}");
    // The failing thread finishes what it holds and leaves before the fresh client starts.
    wait_running(&[&svc], "the client recreated", Duration::from_secs(60), || {
        let m = svc.metrics();
        metric_value(&m, r#"cronsumer_consumer_restarts_total{cause="client_errors"}"#).unwrap_or(0.0) >= 1.0
    });

    fx.wait_all(&[&svc], STREAM, Duration::from_secs(300));
    svc.assert_running("at the end");
    let m = svc.metrics();
    println!(
        "broker_restart_mid_stream: commit errors during the outage: {}",
        metric_sum(&m, "cronsumer_commit_errors_total")
    );
    fx.assert_exactly_once(STREAM, 0);
}

// ---------------------------------------------------------------------------
// 3. PostgreSQL refuses every connection for 20 s mid-stream.

/// PostgreSQL refuses connections (and loses the open ones) for 20 s: the
/// batch in hand waits uncommitted, commits do not move, /healthz reports the
/// retry, and the same process finishes the stream afterwards.
#[test]
fn postgres_outage_mid_stream() {
    let _serial = serial();
    let fx = Fixture::new("postgres_outage_mid_stream", Backend::Postgres, &[]);
    fx.produce_notifications(STREAM);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "2000 rows", Duration::from_secs(180), || fx.rows() >= 2000);

    fx.tdb.pg_block(true);
    let blocked = Instant::now();
    // Nothing can be stored from here on: rows created later are from after the outage.
    let blocked_at = chrono::Utc::now().naive_utc();
    let mut max_seen: BTreeMap<i32, i64> = BTreeMap::new();
    let mut retrying_seen: Option<String> = None;
    while blocked.elapsed() < Duration::from_secs(20) {
        svc.assert_running("during the PostgreSQL outage");
        if let Some(now) = try_committed(&fx.s, &fx.topic, PARTITIONS) {
            for (p, o) in now {
                let e = max_seen.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
        if retrying_seen.is_none() {
            if let Some((code, body)) = svc.healthz() {
                if code == 503 && body.contains("retrying") {
                    retrying_seen = Some(body);
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    fx.tdb.pg_block(false);
    println!(
        "postgres_outage_mid_stream: highest commits during the outage {max_seen:?}; /healthz said {retrying_seen:?}"
    );
    assert!(retrying_seen.is_some(), "/healthz never reported the batch retrying during the 20 s outage");

    fx.wait_all(&[&svc], STREAM, Duration::from_secs(300));
    // Commits seen during the outage cover only rows stored before it began
    // (a commit of those may still land during the outage; commits are async).
    let before: BTreeSet<(i32, i64)> = {
        use cronsumer::db::schema::notifications::dsl as n;
        let mut conn = fx.pool.get().unwrap();
        let rows: Vec<(Option<i32>, Option<i64>)> = cronsumer::on_backend!(conn, |c| n::notifications
            .filter(n::source_topic.eq(&fx.topic))
            .filter(n::created_at.le(blocked_at))
            .select((n::source_partition, n::source_offset))
            .load(c))
        .unwrap();
        rows.into_iter().map(|(p, o)| (p.unwrap(), o.unwrap())).collect()
    };
    assert_covered(&max_seen, &before, &fx.topic);
    svc.assert_running("at the end");
    fx.assert_exactly_once(STREAM, 0);
}

// ---------------------------------------------------------------------------
// 4. A record that makes the handler panic, every time.

/// With `CRONSUMER_FAULT_PANIC_PAYLOAD=PANIC-ME` the handler panics on the one
/// record holding that text: the supervisor restarts the consumer thread after
/// each panic, the record is dead-lettered after its third panic, the other
/// 999 are stored, and the process never exits.
#[test]
fn handler_panic_poison_record() {
    let _serial = serial();
    const N: usize = 1000;
    const POISON_AT: usize = 500;
    let fx = Fixture::new("handler_panic_poison_record", Backend::Sqlite, &[]);
    let poison = format!(r#"{{"user_id":{POISON_AT},"event":"e","content":"PANIC-ME"}}"#).into_bytes();
    let payloads: Vec<Vec<u8>> =
        (0..N).map(|i| if i == POISON_AT { poison.clone() } else { notification(i) }).collect();
    produce(&fx.s, &fx.topic, &payloads);

    let svc = fx.start("service", &[(cronsumer::fault_injection::PANIC_PAYLOAD_ENV, "PANIC-ME")]);
    // Restarts back off 1 s, 2 s, 4 s... and the supervisor looks every 5 s.
    wait_running(&[&svc], "999 rows and 1 dead letter", Duration::from_secs(120), || {
        fx.rows() >= (N - 1) as i64 && fx.dead() >= 1
    });
    wait_running(&[&svc], "commits of all 1000", Duration::from_secs(60), || fx.commits(&fx.topic) == Some(N as i64));
    svc.assert_running("at the end");

    let dead = db::dead_letters::list(&mut fx.pool.get().unwrap(), Some(fx.topic.as_str()), 10).unwrap();
    assert_eq!(dead.len(), 1, "dead letters: {dead:?}");
    assert_eq!(dead[0].payload.as_deref(), Some(poison.as_slice()), "the dead letter is not the poison record");
    assert!(dead[0].error.contains("panicked"), "dead letter error {:?} does not say it panicked", dead[0].error);
    let m = svc.metrics();
    let restarts = metric_value(&m, r#"cronsumer_consumer_restarts_total{cause="ended"}"#).unwrap_or(0.0);
    println!(
        "handler_panic_poison_record: consumer restarts (ended) = {restarts}, dead letter error: {}",
        dead[0].error
    );
    assert!(restarts > 0.0, "no consumer restart counted in /metrics:\n{m}");
    fx.assert_exactly_once(N, 1);
}

// ---------------------------------------------------------------------------
// 5. SIGTERM mid-batch, then a restart.

/// SIGTERM while 20,000 records stream in: the process finishes and commits
/// the batch in hand and exits 0 within 10 s, its commits match the stored
/// rows exactly, and a restart stores the rest.
fn sigterm_mid_batch_then_restart(backend: Backend) {
    let _serial = serial();
    let fx = Fixture::new("sigterm_mid_batch_then_restart", backend, &[("SHUTDOWN_TIMEOUT_MS", "5000")]);
    fx.produce_notifications(STREAM);
    let first = fx.start("first", &[]);
    wait_running(&[&first], "2000 rows", Duration::from_secs(180), || fx.rows() >= 2000);
    first.term();
    let status = first.wait_exit(Duration::from_secs(10)).expect("cronsumer did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    let stored = fx.rows();
    assert!(stored < STREAM as i64, "the stream was not interrupted ({stored} rows): the test proves nothing");
    let commits = try_committed(&fx.s, &fx.topic, PARTITIONS).expect("committed offsets");
    assert_eq!(sum_offsets(&commits), stored, "after a clean stop, commits {commits:?} vs {stored} stored rows");
    assert_commits_covered(&fx.s, &fx.pool, &fx.topic, PARTITIONS);

    let second = fx.start("second", &[]);
    fx.wait_all(&[&second], STREAM, Duration::from_secs(300));
    second.assert_running("at the end");
    fx.assert_exactly_once(STREAM, 0);
}
both_backends!(sigterm_mid_batch_then_restart);

// ---------------------------------------------------------------------------
// 6. Two copies in one group, one SIGKILLed.

/// Two copies share the partitions; one is SIGKILLed mid-stream and the
/// survivor takes its partitions over (after the 6 s session timeout) and
/// stores everything exactly once.
#[test]
fn two_copies_one_killed() {
    let _serial = serial();
    let fx = Fixture::new("two_copies_one_killed", Backend::Postgres, &[]);
    let a = fx.start("copy-a", &[]);
    let b = fx.start("copy-b", &[]);
    // Both hold partitions before anything is produced, so the killed one dies holding work.
    wait_running(&[&a, &b], "both copies assigned partitions", Duration::from_secs(120), || {
        a.assigned() > 0.0 && b.assigned() > 0.0
    });
    fx.produce_notifications(STREAM);
    wait_running(&[&a, &b], "2000 rows", Duration::from_secs(180), || fx.rows() >= 2000);
    a.kill9();
    let at_kill = fx.rows();
    println!("two_copies_one_killed: copy-a SIGKILLed with {at_kill} rows stored");
    assert!(at_kill < STREAM as i64, "the stream was not interrupted ({at_kill} rows): the test proves nothing");

    fx.wait_all(&[&b], STREAM, Duration::from_secs(180));
    b.assert_running("at the end");
    fx.assert_exactly_once(STREAM, 0);
}

// ---------------------------------------------------------------------------
// 7. The webhook answers 503 for 10 s, with two copies sending.

fn status_count(pool: &Pool, status: &str) -> i64 {
    db::notifications::count_by_status(&mut pool.get().unwrap())
        .unwrap()
        .into_iter()
        .find(|(s, _)| s == status)
        .map(|(_, n)| n)
        .unwrap_or(0)
}

/// The webhook answers 503 for its first 10 s: two copies on one PostgreSQL
/// database retry with backoff and, once it answers 200, deliver each of the
/// 300 notifications exactly once and mark every row `sent`.
#[test]
fn webhook_down_then_back() {
    let _serial = serial();
    const N: usize = 300;
    // Down until the services run; then down for 10 s more, then up.
    let sink = Sink::start(Box::new(|_| 503));
    let fx = Fixture::new(
        "webhook_down_then_back",
        Backend::Postgres,
        &[
            ("NOTIFIER", "webhook"),
            ("NOTIFY_WEBHOOK_URL", sink.url.as_str()),
            ("NOTIFICATIONS_RETRY_BASE_MS", "500"),
            ("NOTIFICATIONS_MAX_ATTEMPTS", "20"),
            ("NOTIFICATIONS_CRON", "*/1 * * * * *"),
            ("NOTIFY_BREAKER_COOL_OFF_MS", "2000"),
        ],
    );
    fx.produce_notifications(N);
    let a = fx.start("copy-a", &[]);
    let b = fx.start("copy-b", &[]);
    let started = Instant::now();
    sink.set_plan(Box::new(move |_| if started.elapsed() < Duration::from_secs(10) { 503 } else { 200 }));

    wait_running(&[&a, &b], "300 notifications delivered", Duration::from_secs(180), || sink.delivered().len() >= N);
    wait_running(&[&a, &b], "300 rows sent", Duration::from_secs(60), || status_count(&fx.pool, "sent") == N as i64);
    // A few more cron ticks: a stray second delivery would show now.
    std::thread::sleep(Duration::from_secs(3));
    fx.wait_all(&[&a, &b], N, Duration::from_secs(60));

    let delivered = sink.delivered();
    let refused = sink.hits().iter().filter(|h| h.status == 503).count();
    println!("webhook_down_then_back: {refused} calls answered 503, {} notifications delivered", delivered.len());
    fx.assert_exactly_once(N, 0);
    let twice: Vec<(&String, &usize)> = delivered.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let (rows, _) = stored_sources(&fx.pool, &fx.topic);
    let expected: BTreeSet<String> = rows.iter().map(|(p, o)| format!("{}-{p}-{o}", fx.topic)).collect();
    let got: BTreeSet<String> = delivered.keys().cloned().collect();
    assert_eq!(got, expected, "delivered idempotency keys vs stored rows");
    assert_eq!(status_count(&fx.pool, "sent"), N as i64, "rows not sent: {:?}", {
        db::notifications::count_by_status(&mut fx.pool.get().unwrap()).unwrap()
    });
    assert!(refused > 0, "the webhook outage was never hit: nothing proves the retry");
    a.assert_running("at the end");
    b.assert_running("at the end");
}

// ---------------------------------------------------------------------------
// 8. The SQLite file locked by another process for 20 s.

const PY_HOLD_LOCK: &str = "\
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
c.execute('BEGIN EXCLUSIVE')
print('locked', flush=True)
time.sleep(float(sys.argv[2]))
c.execute('COMMIT')
print('released', flush=True)
";

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SQLite's write lock on a database file, held by someone else than the service.
enum WriteLock {
    /// A python3 process holding `BEGIN EXCLUSIVE` for the agreed time.
    Process(KillOnDrop, BufReader<ChildStdout>),
    /// Without python3: a connection of the test process.
    InProcess(diesel::sqlite::SqliteConnection),
    Released,
}

impl WriteLock {
    /// Takes the lock on `path` for `hold` (python3 releases it by itself after `hold`).
    fn take(path: &str, hold: Duration) -> WriteLock {
        let spawned = Command::new("python3")
            .arg("-c")
            .arg(PY_HOLD_LOCK)
            .arg(path)
            .arg(hold.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        match spawned {
            Ok(mut child) => {
                let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
                let child = KillOnDrop(child);
                let mut line = String::new();
                let _ = out.read_line(&mut line);
                assert_eq!(line.trim(), "locked", "python3 did not take the SQLite lock on {path}");
                WriteLock::Process(child, out)
            }
            Err(e) => {
                println!("python3 unavailable ({e}): the lock is held by a connection of the test process");
                let mut c = diesel::sqlite::SqliteConnection::establish(path).unwrap();
                c.batch_execute("PRAGMA busy_timeout = 60000; BEGIN EXCLUSIVE;").unwrap();
                WriteLock::InProcess(c)
            }
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            WriteLock::Process(..) => "a python3 process",
            WriteLock::InProcess(_) => "a connection of the test process",
            WriteLock::Released => "nobody",
        }
    }

    /// Ends the lock: waits for python3 to commit and exit, or commits here.
    fn release(&mut self) {
        match std::mem::replace(self, WriteLock::Released) {
            WriteLock::Process(mut child, mut out) => {
                let status = child.0.wait().expect("wait for python3");
                let mut rest = String::new();
                let _ = out.read_to_string(&mut rest);
                assert!(status.success() && rest.contains("released"), "python3 lock holder ended with {status}");
            }
            WriteLock::InProcess(mut c) => c.batch_execute("COMMIT;").unwrap(),
            WriteLock::Released => {}
        }
    }
}

/// Another process holds the SQLite file's write lock for 20 s mid-stream:
/// writes time out, the batch is retried (and /healthz says so with 503),
/// nothing is committed past what is stored, and the same process finishes
/// the stream once the lock is gone.
#[test]
fn sqlite_locked_by_another_process() {
    let _serial = serial();
    const N: usize = 5000;
    const DURING: usize = 1000;
    let hold = Duration::from_secs(20);
    let fx = Fixture::new("sqlite_locked_by_another_process", Backend::Sqlite, &[]);
    fx.produce_notifications(N - DURING);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "1000 rows", Duration::from_secs(120), || fx.rows() >= 1000);

    let mut write_lock = WriteLock::take(&fx.tdb.url, hold);
    let locked = Instant::now();
    // Records that arrive while the lock is held: the service must try to
    // write during the outage, however fast it drained the first ones.
    fx.produce_notifications(DURING);
    let mut retrying_seen: Option<String> = None;
    while locked.elapsed() < hold {
        svc.assert_running("while the database was locked");
        if retrying_seen.is_none() {
            if let Some((code, body)) = svc.healthz() {
                if code == 503 && body.contains("retrying") {
                    retrying_seen = Some(body);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let holder = write_lock.describe();
    write_lock.release();
    println!("sqlite_locked_by_another_process: lock held by {holder}; /healthz said {retrying_seen:?}");
    assert!(retrying_seen.is_some(), "/healthz never answered 503 'retrying' while the database was locked for 20 s");
    // Commits never passed a record that is not stored.
    assert_commits_covered(&fx.s, &fx.pool, &fx.topic, PARTITIONS);

    fx.wait_all(&[&svc], N, Duration::from_secs(180));
    svc.assert_running("at the end");
    fx.assert_exactly_once(N, 0);
}

// ---------------------------------------------------------------------------
// 9. Malformed input of every kind, on both topics.

/// xorshift64: deterministic noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Notifications,
    PriceEvents,
}

struct FuzzRecord {
    kind: &'static str,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    valid: bool,
    /// Valid, but PostgreSQL refuses a value in it (SQLite stores it).
    postgres_refuses: bool,
}

impl FuzzRecord {
    fn stored_on(&self, backend: Backend) -> bool {
        self.valid && !(self.postgres_refuses && backend == Backend::Postgres)
    }
}

/// Values the service accepts and PostgreSQL refuses: a NUL in text, a
/// timestamp outside PostgreSQL's range.
const POSTGRES_REFUSES_NOTIFICATIONS: &[&str] = &[
    r#"{"user_id":1,"event":"a\u0000b","content":"x"}"#,
    r#"{"user_id":1,"event":"e","content":"nul \u0000 inside"}"#,
];
const POSTGRES_REFUSES_PRICES: &[&str] = &[
    r#"{"symbol":"ACME","price":1.5,"timestamp":-300000000000,"source":"fuzz"}"#,
    r#"{"symbol":"ACME","price":1.5,"timestamp":"2026-11-23T10:00:00Z","source":"a\u0000b"}"#,
];

/// Size of the oversize records: twice `CONSUMER_MAX_RECORD_BYTES`' default.
const HUGE_BYTES: usize = 2 * 1024 * 1024;

const BAD_NOTIFICATIONS: &[&str] = &[
    r#"{"user_id":"","event":"e","content":"c"}"#,
    r#"{"users":[1,{"id":2}],"event":"e","content":"c"}"#,
    r#"{"user_id":-1,"event":"e","content":"c"}"#,
    r#"{"user_id":1.5,"event":"e","content":"c"}"#,
    r#"{"user_id":true,"event":"e","content":"c"}"#,
    r#"{"user_id":1,"event":5,"content":"c"}"#,
    r#"{"user_id":1,"event":"e","content":null}"#,
    r#"{"users":[],"event":"e","content":"c"}"#,
    r#"{"users":"1","event":"e","content":"c"}"#,
    r#"{"users":[1,""],"event":"e","content":"c"}"#,
    r#"{"user_id":1,"users":[1],"event":"e","content":"c"}"#,
    r#"{"user_id":1,"event":"e","content":"c","message":"m"}"#,
    r#"{"user_id":1e999,"event":"e","content":"c"}"#,
    r#"{"user_id":18446744073709551616,"event":"e","content":"c"}"#,
    r#"{"user_id":1,"event":"","content":"c"}"#,
    r#"{"user_id":1,"event":"   ","content":"c"}"#,
    r#"{"user_id":1,"event":"e","content":"\ud800"}"#,
    r#"{"user_id":1,"event":"e","content":"c""#,
    r#"[1,2,3]"#,
    r#""just a string""#,
    r#"null"#,
];

const BAD_PRICES: &[&str] = &[
    r#"{"symbol":"ACME","price":"1.5","timestamp":"2026-11-23T10:00:00Z","source":"fuzz"}"#,
    r#"{"symbol":"ACME","price":-1,"timestamp":"2026-11-23T10:00:00Z","source":"fuzz"}"#,
    r#"{"symbol":"ACME","price":null,"timestamp":"2026-11-23T10:00:00Z","source":"fuzz"}"#,
    r#"{"symbol":"ACME","price":1.5,"timestamp":"yesterday","source":"fuzz"}"#,
    r#"{"symbol":"ACME","price":1.5,"timestamp":true,"source":"fuzz"}"#,
    r#"{"symbol":"ACME","price":1.5,"timestamp":1e300,"source":"fuzz"}"#,
    r#"{"symbol":"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456","price":1.5,"timestamp":"2026-11-23T10:00:00Z","source":"fuzz"}"#,
    r#"{"symbol":123,"price":1.5,"timestamp":"2026-11-23T10:00:00Z","source":"fuzz"}"#,
    r#"{"symbol":"ACME","price":1.5,"timestamp":"2026-11-23T10:00:00Z"}"#,
    r#"{"symbol":"ACME","price":1.5,"timestamp":"2026-11-23T10:00:00Z","source":""}"#,
    r#"{}"#,
    r#"42"#,
];

const BAD_UTF8_NOTIFICATIONS: &[&[u8]] = &[
    b"{\"user_id\":1,\"event\":\"e\",\"content\":\"\xff\xfe\"}",
    b"{\"user_id\":1,\"event\":\"e\xc0\xaf\",\"content\":\"c\"}",
    b"{\"user_id\":1,\"event\":\"e\",\"content\":\"\xed\xa0\x80\"}",
];

const BAD_UTF8_PRICES: &[&[u8]] = &[
    b"{\"symbol\":\"\xc3\x28\",\"price\":1.5,\"timestamp\":\"2026-11-23T10:00:00Z\",\"source\":\"fuzz\"}",
    b"{\"symbol\":\"ACME\",\"price\":1.5,\"timestamp\":\"2026-11-23T10:00:00Z\",\"source\":\"\xf8\x88\x80\x80\x80\"}",
];

fn valid_payload(which: Which, i: usize, rng: &mut Rng) -> Vec<u8> {
    let text = match (which, rng.below(3)) {
        (Which::Notifications, 0) => format!(r#"{{"user_id":{i},"event":"e","content":"c"}}"#),
        (Which::Notifications, 1) => {
            format!(r#"{{"users":[{i},0,7],"event":"fuzz","message":"ünïcødé ✓ \"quoted\" \\ {i}"}}"#)
        }
        (Which::Notifications, _) => {
            format!(r#"{{"user_id":0,"event":"e","content":"c{i}","extra":{{"nested":[1,2,{{"x":null}}]}}}}"#)
        }
        (Which::PriceEvents, 0 | 1) => {
            r#"{"symbol":"ACME","price":1.5,"timestamp":"2026-11-23T10:00:00Z","source":"fuzz"}"#.to_string()
        }
        (Which::PriceEvents, _) => r#"{"symbol":"X","price":0,"timestamp":1795428000,"source":"fuzz"}"#.to_string(),
    };
    text.into_bytes()
}

fn huge_payload(which: Which) -> Vec<u8> {
    let filler = "x".repeat(HUGE_BYTES);
    let text = match which {
        Which::Notifications => format!(r#"{{"user_id":1,"event":"e","content":"{filler}"}}"#),
        Which::PriceEvents => {
            format!(r#"{{"symbol":"ACME","price":1.5,"timestamp":"2026-11-23T10:00:00Z","source":"{filler}"}}"#)
        }
    };
    text.into_bytes()
}

/// `n` records for one topic: valid ones (some with keys that are not UTF-8,
/// some without a key), random bytes, oversize JSON, 10,000-deep nesting,
/// wrong types, invalid UTF-8, empty payloads and truncated JSON.
fn fuzz_records(which: Which, n: usize, rng: &mut Rng) -> Vec<FuzzRecord> {
    let bad_json = match which {
        Which::Notifications => BAD_NOTIFICATIONS,
        Which::PriceEvents => BAD_PRICES,
    };
    let bad_utf8 = match which {
        Which::Notifications => BAD_UTF8_NOTIFICATIONS,
        Which::PriceEvents => BAD_UTF8_PRICES,
    };
    let refused = match which {
        Which::Notifications => POSTGRES_REFUSES_NOTIFICATIONS,
        Which::PriceEvents => POSTGRES_REFUSES_PRICES,
    };
    (0..n)
        .map(|i| {
            let key = Some(format!("k{i}").into_bytes());
            let binary_key = Some(vec![0xff, 0xfe, 0xfd, (i % 251) as u8, 0xc3, 0x28]);
            let (kind, key, payload, valid) = if i % 700 == 350 {
                ("huge", key, huge_payload(which), false)
            } else {
                match rng.below(100) {
                    0..=34 => ("valid", key, valid_payload(which, i, rng), true),
                    35..=44 => ("valid, key not UTF-8", binary_key, valid_payload(which, i, rng), true),
                    45..=49 => ("valid, no key", None, valid_payload(which, i, rng), true),
                    50..=61 => {
                        let len = 1 + rng.below(256);
                        ("random bytes", key, rng.bytes(len), false)
                    }
                    62..=66 => {
                        let len = 1 + rng.below(256);
                        ("random bytes, key not UTF-8", binary_key, rng.bytes(len), false)
                    }
                    67..=71 => {
                        let deep = if rng.below(2) == 0 {
                            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))
                        } else {
                            format!(
                                r#"{{"user_id":1,"event":"e","content":"c","x":{}1{}}}"#,
                                "[".repeat(10_000),
                                "]".repeat(10_000)
                            )
                        };
                        ("deeply nested", key, deep.into_bytes(), false)
                    }
                    72..=84 => ("wrong types", key, bad_json[rng.below(bad_json.len())].as_bytes().to_vec(), false),
                    85..=92 => ("invalid UTF-8", key, bad_utf8[rng.below(bad_utf8.len())].to_vec(), false),
                    93..=94 => ("empty", key, Vec::new(), false),
                    95..=96 => {
                        let payload = refused[rng.below(refused.len())].as_bytes().to_vec();
                        return FuzzRecord {
                            kind: "refused by PostgreSQL",
                            key,
                            payload,
                            valid: true,
                            postgres_refuses: true,
                        };
                    }
                    _ => {
                        // A strict prefix of a JSON object never parses.
                        let full = valid_payload(which, i, rng);
                        let cut = rng.below(full.len());
                        ("truncated", key, full[..cut].to_vec(), false)
                    }
                }
            };
            FuzzRecord { kind, key, payload, valid, postgres_refuses: false }
        })
        .collect()
}

fn produce_raw(s: &Settings, topic: &str, records: &[FuzzRecord]) {
    let mut p = cronsumer::producer::RecordProducer::new(s).unwrap();
    for r in records {
        p.send(topic, r.key.as_deref(), &r.payload).unwrap();
    }
    assert_eq!(p.finish(topic).unwrap(), records.len() as u64, "records delivered to {topic}");
}

fn price_sources(pool: &Pool) -> Vec<(i32, i64)> {
    use cronsumer::db::schema::price_events::dsl as p;
    let mut conn = pool.get().unwrap();
    let rows: Vec<(i32, i64)> =
        cronsumer::on_backend!(conn, |c| p::price_events.select((p::source_partition, p::source_offset)).load(c))
            .unwrap();
    rows
}

fn count_prices(pool: &Pool) -> i64 {
    db::price_events::count(&mut pool.get().unwrap()).unwrap()
}

/// Asserts the dead letters of `topic` are exactly the invalid records
/// produced to it (same key and payload bytes, as a multiset).
fn assert_dead_letters_are(pool: &Pool, backend: Backend, topic: &str, records: &[FuzzRecord]) {
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = records
        .iter()
        .filter(|r| !r.stored_on(backend))
        .map(|r| (r.key.clone().unwrap_or_default(), r.payload.clone()))
        .collect();
    let mut got: Vec<(Vec<u8>, Vec<u8>)> = db::dead_letters::list(&mut pool.get().unwrap(), Some(topic), 1_000_000)
        .unwrap()
        .into_iter()
        .map(|d| (d.key.unwrap_or_default(), d.payload.unwrap_or_default()))
        .collect();
    want.sort();
    got.sort();
    if want != got {
        let first = want.iter().zip(&got).position(|(w, g)| w != g).unwrap_or(want.len().min(got.len()));
        let show = |v: Option<&(Vec<u8>, Vec<u8>)>| {
            v.map(|(k, p)| {
                format!(
                    "key {:?}, payload {} bytes {:?}",
                    String::from_utf8_lossy(k),
                    p.len(),
                    String::from_utf8_lossy(&p[..p.len().min(80)])
                )
            })
        };
        panic!(
            "dead letters of {topic} are not the invalid records produced: {} stored, {} expected; first difference: \
             stored {:?}, expected {:?}",
            got.len(),
            want.len(),
            show(got.get(first)),
            show(want.get(first))
        );
    }
}

/// 2,000 records to each of `notifications` and `price-events`, a
/// deterministic mix of valid and malformed ones: exactly the valid ones
/// become rows, exactly the invalid ones (with their key and payload) become
/// dead letters, nothing panics, and the process never exits. On PostgreSQL,
/// values it refuses (a NUL in text, a timestamp out of its range) count as
/// invalid: they are dead-lettered, and the partition goes on.
fn bad_input_fuzz(backend: Backend) {
    let _serial = serial();
    const N: usize = 2000;
    let fx = Fixture::new("bad_input_fuzz", backend, &[]);
    let price_topic = fx.s.topic("price-events");
    // The producer must accept the oversize records (librdkafka's message.max.bytes is 1 MB by default).
    let producing = settings(&fx.tdb.url, &fx.prefix, &[("KAFKA_PROP_MESSAGE_MAX_BYTES", "3000000")]);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let notes = fuzz_records(Which::Notifications, N, &mut rng);
    let prices = fuzz_records(Which::PriceEvents, N, &mut rng);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in notes.iter().chain(&prices) {
        *kinds.entry(r.kind).or_default() += 1;
    }
    println!("bad_input_fuzz: produced per kind (both topics): {kinds:?}");
    let valid_notes = notes.iter().filter(|r| r.stored_on(backend)).count();
    let valid_prices = prices.iter().filter(|r| r.stored_on(backend)).count();
    let invalid = 2 * N - valid_notes - valid_prices;
    produce_raw(&producing, &fx.topic, &notes);
    produce_raw(&producing, &price_topic, &prices);

    let svc = fx.start("service", &[]);
    let total = (2 * N) as i64;
    wait_running(&[&svc], "all 4000 records stored", Duration::from_secs(240), || {
        fx.rows() + count_prices(&fx.pool) + fx.dead() >= total
    });
    wait_running(&[&svc], "commits of both topics", Duration::from_secs(90), || {
        fx.commits(&fx.topic) == Some(N as i64) && fx.commits(&price_topic) == Some(N as i64)
    });
    svc.assert_running("at the end");

    let (note_rows, note_dead) = stored_sources(&fx.pool, &fx.topic);
    let (_, price_dead) = stored_sources(&fx.pool, &price_topic);
    let price_rows = price_sources(&fx.pool);
    let note_set: BTreeSet<(i32, i64)> = note_rows.iter().chain(&note_dead).copied().collect();
    let price_set: BTreeSet<(i32, i64)> = price_rows.iter().chain(&price_dead).copied().collect();
    let duplicates =
        note_rows.len() + note_dead.len() - note_set.len() + price_rows.len() + price_dead.len() - price_set.len();
    let stored = note_rows.len() + price_rows.len();
    let dead = note_dead.len() + price_dead.len();
    fx.report(2 * N, stored, dead, duplicates);

    assert_eq!(duplicates, 0, "a source (partition, offset) is stored twice");
    assert_eq!(note_rows.len(), valid_notes, "notification rows vs valid notifications produced");
    assert_eq!(count_notifications(&fx.pool) as usize, valid_notes, "rows in notifications");
    assert_eq!(price_rows.len(), valid_prices, "price_events rows vs valid price events produced");
    assert_eq!(count_prices(&fx.pool) as usize, valid_prices, "rows in price_events");
    assert_eq!(dead, invalid, "dead letters vs invalid records produced");
    assert_eq!(count_dead_letters(&fx.pool) as usize, invalid, "rows in dead_letters");
    assert_eq!(stored + dead, 2 * N, "every record stored once");
    assert_dead_letters_are(&fx.pool, backend, &fx.topic, &notes);
    assert_dead_letters_are(&fx.pool, backend, &price_topic, &prices);
    let note_commits = try_committed(&fx.s, &fx.topic, PARTITIONS).expect("committed offsets");
    let price_commits = try_committed(&fx.s, &price_topic, PARTITIONS).expect("committed offsets");
    assert_covered(&note_commits, &note_set, &fx.topic);
    assert_covered(&price_commits, &price_set, &price_topic);

    let m = svc.metrics();
    assert_eq!(metric_sum(&m, "cronsumer_handler_panics_total"), 0.0, "a handler panicked on bad input");
    assert_eq!(metric_sum(&m, "cronsumer_consumer_restarts_total"), 0.0, "the consumer thread was restarted");
    let health = svc.healthz();
    assert_eq!(health.as_ref().map(|(code, _)| *code), Some(200), "/healthz after the fuzz: {health:?}");
}
both_backends!(bad_input_fuzz);
