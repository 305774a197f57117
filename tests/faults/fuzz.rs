//! Malformed input of every kind, on both topics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cronsumer::config::Settings;
use cronsumer::db::{self, Backend, Pool};
use diesel::prelude::*;

use crate::fixture::*;
use crate::support::*;

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
    let mut p = cronsumer::kafka::producer::RecordProducer::new(s).unwrap();
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
