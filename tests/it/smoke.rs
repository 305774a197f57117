//! The broker works the way the service relies on: produce with acks=all,
//! consume in a group, commit by hand, and resume from the committed offset.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;

use crate::support::*;

fn poll_one(c: &BaseConsumer, limit: Duration) -> (i32, i64, Vec<u8>) {
    let mut got = None;
    let polled = poll(limit, Duration::ZERO, || {
        got = c.poll(Duration::from_millis(200)).map(|m| {
            let m = m.expect("poll error");
            (m.partition(), m.offset(), m.payload().unwrap().to_vec())
        });
        got.is_some()
    });
    assert!(polled, "no record within {limit:?}");
    got.unwrap()
}

#[test]
fn produce_consume_commit_and_resume_in_a_group() {
    let prefix = unique("smoke");
    let s = settings("unused.db", &prefix, &[]);
    let topic = format!("{prefix}t");
    let _topics = TestTopics::create(&s, &[&topic], 1);
    produce(&s, &topic, &[b"first".to_vec(), b"second".to_vec()]);

    let first: BaseConsumer = cronsumer::kafka::consumer_config(&s).create().unwrap();
    first.subscribe(&[&topic]).unwrap();
    let (p, o, payload) = poll_one(&first, Duration::from_secs(30));
    assert_eq!((p, o, payload.as_slice()), (0, 0, &b"first"[..]));
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, p, rdkafka::Offset::Offset(o + 1)).unwrap();
    first.commit(&tpl, CommitMode::Sync).unwrap();
    drop(first);

    // A second member of the same group starts after the committed record.
    let second: BaseConsumer = cronsumer::kafka::consumer_config(&s).create().unwrap();
    second.subscribe(&[&topic]).unwrap();
    let (_, o, payload) = poll_one(&second, Duration::from_secs(30));
    assert_eq!((o, payload.as_slice()), (1, &b"second"[..]));
    assert_eq!(committed(&s, &topic, 1).get(&0), Some(&1));
}
