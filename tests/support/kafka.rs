//! The broker side of a test: topics (deleted again when the test ends),
//! producing records, and the group's committed offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use cronsumer::config::Settings;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::wait::wait_for;

/// Topics of a test, deleted when dropped. Declare it before whatever
/// consumes the topics (a service, a consumer thread), so that those stop
/// first: a client asking for a deleted topic's metadata makes the broker
/// create it again.
pub struct TestTopics {
    settings: Settings,
    names: Vec<String>,
}

impl TestTopics {
    /// Creates `names`, `partitions` each.
    pub fn create<N: AsRef<str>>(s: &Settings, names: &[N], partitions: i32) -> TestTopics {
        // The guard first: the topics made before a creation fails are deleted too.
        let topics = TestTopics::adopt(s, names);
        for name in names {
            create_topic(s, name.as_ref(), partitions);
        }
        topics
    }

    /// Creates every registry topic of `s`'s prefix.
    pub fn registry(s: &Settings, partitions: i32) -> TestTopics {
        TestTopics::create(s, &cronsumer::registry().topics(s), partitions)
    }

    /// Deletes `names` when dropped: topics that something else creates
    /// (the binary's `topics --create`, ...).
    pub fn adopt<N: AsRef<str>>(s: &Settings, names: &[N]) -> TestTopics {
        TestTopics { settings: s.clone(), names: names.iter().map(|n| n.as_ref().to_string()).collect() }
    }
}

impl Drop for TestTopics {
    /// Deletes the topics, ignoring every error: the broker may be down, or
    /// the test may have deleted one itself.
    fn drop(&mut self) {
        let Ok(admin) = cronsumer::kafka::admin_client(&self.settings) else { return };
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let timeout = Some(Duration::from_secs(10));
        let opts = AdminOptions::new().operation_timeout(timeout).request_timeout(timeout);
        let _ = futures_executor::block_on(admin.delete_topics(&names, &opts));
    }
}

/// Every registry topic of `s`'s prefix, `partitions` each, and the
/// notifications topic's name.
pub fn registry_topics(s: &Settings, partitions: i32) -> (TestTopics, String) {
    (TestTopics::registry(s, partitions), s.topic("notifications"))
}

/// Creates `name` (one that exists is accepted) and waits until the
/// metadata shows every partition. Tests hold their topics in [`TestTopics`].
pub fn create_topic(settings: &Settings, name: &str, partitions: i32) {
    let admin = cronsumer::kafka::admin_client(settings).unwrap();
    cronsumer::kafka::create_topics(&admin, &[name.to_string()], partitions).unwrap();
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
    let admin = cronsumer::kafka::admin_client(settings).unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in futures_executor::block_on(admin.delete_topics(&[name], &opts)).unwrap() {
        r.unwrap_or_else(|(t, code)| panic!("cannot delete topic {t}: {code}"));
    }
    std::thread::sleep(Duration::from_secs(1));
}

/// Produces `payloads` to `topic`, keys spreading them over partitions; waits for every delivery.
pub fn produce(settings: &Settings, topic: &str, payloads: &[Vec<u8>]) {
    let mut p = cronsumer::kafka::producer::RecordProducer::new(settings).unwrap();
    for (i, payload) in payloads.iter().enumerate() {
        p.send(topic, Some(format!("k{i}").as_bytes()), payload).unwrap();
    }
    assert_eq!(p.finish(topic).unwrap(), payloads.len() as u64);
}

pub fn notification(i: usize) -> Vec<u8> {
    format!(r#"{{"user_id": {i}, "event": "order_shipped", "content": "Your order {i} has shipped"}}"#).into_bytes()
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

/// The records committed offsets account for: their sum, none counting as 0.
pub fn sum_offsets(m: &BTreeMap<i32, i64>) -> i64 {
    m.values().map(|&o| o.max(0)).sum()
}

/// Records in `topic` (its partitions' high watermarks summed).
pub fn records_in(settings: &Settings, topic: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = cronsumer::kafka::consumer_config(settings).create().unwrap();
    (0..partitions).map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1).sum()
}
