//! The commit monitor: a thread that reads the group's committed offsets
//! every [`EVERY`] while a scenario runs, and checks each reading at once:
//!
//! - no committed offset passes a record that is neither stored nor
//!   dead-lettered (the rows and dead letters below it number the offset);
//! - no committed offset moves backwards.
//!
//! It reads the database over its own connection, which a PostgreSQL outage
//! of the scenario spares (see `TestDb::pg_block`), and the broker with its
//! own client; readings the broker does not answer (it is down) are skipped
//! and show as the longest gap between readings.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cronsumer::config::Settings;
use cronsumer::db::{self, Pool};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::OBSERVER;

/// Time between two readings.
pub const EVERY: Duration = Duration::from_millis(100);

/// A topic and the table its records are stored in (source columns
/// `source_topic`, `source_partition`, `source_offset`).
pub type Watched = (String, &'static str);

#[derive(Debug, Default)]
pub struct Findings {
    /// Readings the broker answered.
    pub readings: u64,
    /// Commit advances checked against the database.
    pub checked: u64,
    pub longest_gap: Duration,
    pub violations: Vec<String>,
}

pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Findings>>,
}

impl Monitor {
    pub fn start(s: &Settings, db_url: &str, watched: Vec<Watched>, partitions: i32) -> Monitor {
        let consumer: BaseConsumer = cronsumer::kafka::consumer_config(s).create().expect("monitor's Kafka client");
        let (pool, _) = db::connect_and_migrate(&observer_url(db_url), 1).expect("monitor's database connection");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("commit-monitor".into())
            .spawn(move || watch(&consumer, &pool, &watched, partitions, &flag))
            .unwrap();
        Monitor { stop, thread: Some(thread) }
    }

    /// Stops the monitor and returns what it saw.
    pub fn finish(mut self) -> Findings {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("commit monitor panicked")
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn observer_url(db_url: &str) -> String {
    if db_url.starts_with("postgres") {
        let sep = if db_url.contains('?') { '&' } else { '?' };
        format!("{db_url}{sep}application_name={OBSERVER}")
    } else {
        db_url.to_string()
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Rows and dead letters of `topic`/`partition` below `offset`.
fn stored_below(pool: &Pool, table: &str, topic: &str, partition: i32, offset: i64) -> Option<i64> {
    let mut conn = pool.get().ok()?;
    let rows = format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE source_topic = '{topic}' AND source_partition = {partition} \
         AND source_offset < {offset}"
    );
    let dead = format!(
        "SELECT COUNT(*) AS n FROM dead_letters WHERE topic = '{topic}' AND \"partition\" = {partition} AND \"offset\" < {offset}"
    );
    let mut total = 0;
    for q in [rows, dead] {
        let got: Count = cronsumer::on_backend!(conn, |c| diesel::sql_query(&q).get_result(c)).ok()?;
        total += got.n;
    }
    Some(total)
}

/// Readings every [`EVERY`] until `stop`, then one last reading that the
/// broker answered for every topic (retried for up to [`LAST_READING`]), so
/// the commits as the scenario left them are checked however short it was.
fn watch(consumer: &BaseConsumer, pool: &Pool, watched: &[Watched], partitions: i32, stop: &AtomicBool) -> Findings {
    let mut w = Watcher::new();
    while !stop.load(Ordering::SeqCst) {
        let tick = Instant::now();
        w.read(consumer, pool, watched, partitions);
        std::thread::sleep(EVERY.saturating_sub(tick.elapsed()));
    }
    let deadline = Instant::now() + LAST_READING;
    while !w.read(consumer, pool, watched, partitions) && Instant::now() < deadline {
        std::thread::sleep(EVERY);
    }
    w.f
}

/// How long the last reading is retried while the broker does not answer.
const LAST_READING: Duration = Duration::from_secs(10);

struct Watcher {
    f: Findings,
    highest: BTreeMap<(String, i32), i64>,
    verified: BTreeMap<(String, i32), i64>,
    last_reading: Instant,
}

impl Watcher {
    fn new() -> Watcher {
        Watcher {
            f: Findings::default(),
            highest: BTreeMap::new(),
            verified: BTreeMap::new(),
            last_reading: Instant::now(),
        }
    }

    /// One reading of every watched topic; false when the broker or the
    /// database did not answer for one of them.
    fn read(&mut self, consumer: &BaseConsumer, pool: &Pool, watched: &[Watched], partitions: i32) -> bool {
        let mut complete = true;
        for (topic, table) in watched {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(topic, p);
            }
            let Ok(got) = consumer.committed_offsets(tpl, Duration::from_millis(500)) else {
                complete = false;
                continue;
            };
            let f = &mut self.f;
            f.readings += 1;
            f.longest_gap = f.longest_gap.max(self.last_reading.elapsed());
            self.last_reading = Instant::now();
            for e in got.elements() {
                let Offset::Offset(c) = e.offset() else { continue };
                let key = (topic.clone(), e.partition());
                let before = self.highest.get(&key).copied().unwrap_or(-1);
                if c < before {
                    f.violations
                        .push(format!("committed offset of {topic}/{} moved backwards: {before} -> {c}", key.1));
                }
                self.highest.insert(key.clone(), c.max(before));
                if c <= self.verified.get(&key).copied().unwrap_or(0) {
                    continue;
                }
                // Rows only grow, so a reading taken after the commit's can only under-report a gap.
                match stored_below(pool, table, topic, key.1, c) {
                    Some(n) if n >= c => {
                        self.verified.insert(key, c);
                        f.checked += 1;
                    }
                    Some(n) => {
                        f.violations.push(format!(
                            "committed offset {c} of {topic}/{} passes records neither stored nor dead-lettered \
                             ({n} of the {c} below it are)",
                            key.1
                        ));
                        self.verified.insert(key, c);
                    }
                    None => complete = false, // the database did not answer: checked at the next reading
                }
            }
        }
        complete
    }
}
