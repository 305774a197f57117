//! Settings named per module or per property, read from every variable
//! with their prefix: `KAFKA_PROP_<NAME>` (a librdkafka property),
//! `KAFKA_TOPIC_<MODULE>` (a module's topic), and `CONSUMER_BATCH_SIZE_<MODULE>`
//! and `CONSUMER_BATCH_TIMEOUT_MS_<MODULE>` (a module's own batches).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::value::{int, Kind, Millis};
use super::Reader;

/// `KAFKA_PROP_SESSION_TIMEOUT_MS=6000` → `session.timeout.ms = 6000`.
pub(super) fn kafka_props(vars: &HashMap<String, String>) -> BTreeMap<String, String> {
    vars.iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("KAFKA_PROP_")?;
            (!name.is_empty()).then(|| (name.to_ascii_lowercase().replace('_', "."), v.clone()))
        })
        .collect()
}

/// The `<MODULE>` of `KAFKA_TOPIC_<MODULE>` for a module's topic: `price-events` → `PRICE_EVENTS`.
pub fn module_key(topic: &str) -> String {
    topic.to_ascii_uppercase().replace(['-', '.'], "_")
}

/// The seed's name for the price topic, accepted as an alias of `KAFKA_TOPIC_PRICE_EVENTS`.
const PRICE_TOPIC_ALIAS: &str = "KAFKA_PRICE_EVENTS_TOPIC";

/// `KAFKA_TOPIC_PRICE_EVENTS=market.prices.v1` → `PRICE_EVENTS → market.prices.v1`.
pub(super) fn kafka_topics(r: &mut Reader<'_>, vars: &HashMap<String, String>) -> BTreeMap<String, String> {
    let mut named: Vec<(String, String, String)> = vars
        .iter()
        .filter_map(|(var, v)| {
            let module = var.strip_prefix("KAFKA_TOPIC_").filter(|m| !m.is_empty() && *m != "PREFIX")?;
            Some((module.to_string(), var.clone(), v.trim().to_string()))
        })
        .collect();
    named.sort();
    if let Some(v) = vars.get(PRICE_TOPIC_ALIAS) {
        named.push(("PRICE_EVENTS".into(), PRICE_TOPIC_ALIAS.into(), v.trim().to_string()));
    }
    let mut topics = BTreeMap::new();
    for (module, var, value) in named {
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if value.is_empty() || value.len() > 249 || !value.chars().all(legal) {
            r.problem(&var, &value, "a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)");
        } else if let Some(other) = topics.get(&module).filter(|other| **other != value) {
            let expected = format!("the name KAFKA_TOPIC_{module}={other} gives, or only one of the two");
            r.problem(&var, &value, &expected);
        } else {
            topics.insert(module, value);
        }
    }
    topics
}

/// A module's own batches (`None`: the consumer's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleBatch {
    pub size: Option<usize>,
    pub timeout: Option<Duration>,
}

/// The largest batch a module may ask for: its records are all in memory at once.
pub const MAX_BATCH_SIZE: u64 = 100_000;

/// `CONSUMER_BATCH_SIZE_PREDICTIONS=10000` → `PREDICTIONS → size 10000`.
pub(super) fn module_batches(r: &mut Reader<'_>, vars: &HashMap<String, String>) -> BTreeMap<String, ModuleBatch> {
    let mut named: Vec<(&String, &String)> = vars.iter().collect();
    named.sort();
    let mut out: BTreeMap<String, ModuleBatch> = BTreeMap::new();
    for (var, value) in named {
        let value = value.trim();
        if let Some(module) = var.strip_prefix("CONSUMER_BATCH_SIZE_").filter(|m| !m.is_empty()) {
            match int::<usize>(1, MAX_BATCH_SIZE).parse(value) {
                Ok(size) => out.entry(module.to_string()).or_default().size = Some(size),
                Err(expected) => r.problem(var, value, &expected),
            }
        } else if let Some(module) = var.strip_prefix("CONSUMER_BATCH_TIMEOUT_MS_").filter(|m| !m.is_empty()) {
            match Millis(1, 3_600_000).parse(value) {
                Ok(timeout) => out.entry(module.to_string()).or_default().timeout = Some(timeout),
                Err(expected) => r.problem(var, value, &expected),
            }
        }
    }
    out
}
