//! Topic identity. A topic deleted and recreated under the same name gets a
//! new id (KIP-516); librdkafka's consumer does not notice, and goes on
//! fetching the new log from the old position, so the records below it
//! would never be read. This asks the cluster for the subscribed topics' ids
//! (DescribeTopics, not wrapped by rust-rdkafka) and says which changed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::{Duration, Instant};

use crate::events::{Event as _, TopicIdChanged};
use rdkafka::bindings as rd;

/// How often the ids are compared: the most a recreation goes unnoticed.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for the cluster's answer (the consumer thread waits on it).
const ANSWER_WITHIN: Duration = Duration::from_millis(500);
/// Longest time an assignment spends asking for its topics' ids.
const LOOK_WITHIN: Duration = Duration::from_secs(2);

/// The ids of a set of topics, as last seen.
#[derive(Debug, Default)]
pub struct TopicIds {
    seen: HashMap<String, String>,
    next_check: Option<Instant>,
}

impl TopicIds {
    /// When a check is due, the topics among `topics` whose id changed since
    /// the last check (a failed check changes nothing).
    pub fn changed(&mut self, client: *mut rd::rd_kafka_t, topics: &[String]) -> Vec<String> {
        let now = Instant::now();
        if self.next_check.is_some_and(|t| now < t) {
            return vec![];
        }
        self.next_check = Some(now + CHECK_EVERY);
        match describe(client, topics) {
            Ok(ids) => self.compare(ids),
            Err(e) => {
                log::debug!("cannot describe topics (their ids are checked again later): {e}");
                vec![]
            }
        }
    }

    /// The ids of `topics` now (retried within [`LOOK_WITHIN`]: a partition
    /// assigned without them would not be checked against its stored id),
    /// which later checks compare with.
    pub fn look(&mut self, client: *mut rd::rd_kafka_t, topics: &[String]) -> Result<BTreeMap<String, String>, String> {
        let until = Instant::now() + LOOK_WITHIN;
        let ids = loop {
            match describe(client, topics) {
                Ok(ids) => break ids,
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        for (topic, id) in &ids {
            if let Some(before) = self.seen.insert(topic.clone(), id.clone()).filter(|b| b != id) {
                TopicIdChanged { topic, before: &before, now: id }.emit();
            }
        }
        Ok(ids.into_iter().collect())
    }

    fn compare(&mut self, ids: HashMap<String, String>) -> Vec<String> {
        let mut changed = Vec::new();
        for (topic, id) in ids {
            if let Some(before) = self.seen.insert(topic.clone(), id.clone()) {
                if before != id {
                    TopicIdChanged { topic: &topic, before: &before, now: &id }.emit();
                    changed.push(topic);
                }
            }
        }
        changed.sort();
        changed
    }
}

/// Frees what librdkafka allocated, whatever path leaves [`describe`].
struct Owned<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from librdkafka's matching constructor and is freed once.
            unsafe { (self.1)(self.0) }
        }
    }
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their result.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Each existing topic's id (base64), by name.
fn describe(client: *mut rd::rd_kafka_t, topics: &[String]) -> Result<HashMap<String, String>, String> {
    let names: Vec<CString> = topics.iter().filter_map(|t| CString::new(t.as_str()).ok()).collect();
    let mut ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let wait_ms = ANSWER_WITHIN.as_millis() as i32;
    // SAFETY: every pointer passed is valid for the call (names outlive it), and
    // every object created is freed by its `Owned` guard after its last use.
    unsafe {
        let collection = Owned(
            rd::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len()),
            rd::rd_kafka_TopicCollection_destroy,
        );
        let queue = Owned(rd::rd_kafka_queue_new(client), rd::rd_kafka_queue_destroy);
        let options = Owned(
            rd::rd_kafka_AdminOptions_new(client, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS),
            rd::rd_kafka_AdminOptions_destroy,
        );
        rd::rd_kafka_AdminOptions_set_request_timeout(options.0, wait_ms, std::ptr::null_mut(), 0);
        rd::rd_kafka_DescribeTopics(client, collection.0, options.0, queue.0);
        let event = Owned(rd::rd_kafka_queue_poll(queue.0, wait_ms), rd::rd_kafka_event_destroy);
        if event.0.is_null() {
            return Err(format!("no answer within {ANSWER_WITHIN:?}"));
        }
        if rd::rd_kafka_event_error(event.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(text(rd::rd_kafka_event_error_string(event.0)));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event.0);
        if result.is_null() {
            return Err("not a DescribeTopics answer".into());
        }
        let mut count = 0usize;
        let described = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        let mut ids = HashMap::new();
        for i in 0..count {
            let topic = *described.add(i);
            if !rd::rd_kafka_TopicDescription_error(topic).is_null() {
                continue; // does not exist (now): nothing to compare
            }
            let id = rd::rd_kafka_TopicDescription_topic_id(topic);
            if !id.is_null() {
                ids.insert(text(rd::rd_kafka_TopicDescription_name(topic)), text(rd::rd_kafka_Uuid_base64str(id)));
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_whose_id_changes_is_named_once() {
        let mut ids = TopicIds::default();
        let seen = |pairs: &[(&str, &str)]| pairs.iter().map(|(t, i)| (t.to_string(), i.to_string())).collect();
        assert!(ids.compare(seen(&[("a", "1"), ("b", "2")])).is_empty(), "the first look only records");
        assert!(ids.compare(seen(&[("a", "1")])).is_empty(), "a topic missing from one answer");
        assert_eq!(ids.compare(seen(&[("a", "1"), ("b", "3")])), vec!["b".to_string()]);
        assert!(ids.compare(seen(&[("a", "1"), ("b", "3")])).is_empty());
    }
}
