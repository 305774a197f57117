//! The router: splits a batch by topic and hands each group, in offset order
//! per partition, to that topic's consumer module. A topic without a module
//! is logged once and treated as handled, so its offsets are committed.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::common::record::Record;
use crate::consume::handler::{Handler, HandlerContext, HandlerError};
use crate::events::{Event as _, TopicUnrouted};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("handler for topic {topic} failed: {source}")]
    Failed { topic: String, source: HandlerError },
    #[error("handler for topic {topic} panicked on the batch starting at {first}: {message}")]
    Panicked { topic: String, first: String, message: String },
}

/// What one dispatch did, per topic: records handed to a module, and records
/// of topics no module handles.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dispatched {
    pub handled: BTreeMap<String, usize>,
    pub unrouted: usize,
}

pub struct Router {
    routes: HashMap<String, Box<dyn Handler>>,
    warned: HashSet<String>,
}

impl Router {
    /// Routes each module's topic, as `topic` resolves it ([`topic_of`]), to
    /// that module; a module without one (it is off) gets nothing.
    ///
    /// [`topic_of`]: crate::consume::handler::topic_of
    pub fn new(modules: Vec<Box<dyn Handler>>, topic: impl Fn(&dyn Handler) -> Option<String>) -> Router {
        let routes = modules.into_iter().filter_map(|m| Some((topic(m.as_ref())?, m))).collect();
        Router { routes, warned: HashSet::new() }
    }

    /// Calls the module, turning a panic into its message.
    fn call(
        &self,
        module: &dyn Handler,
        records: &[Record],
        ctx: &mut HandlerContext<'_>,
    ) -> Result<Result<(), HandlerError>, String> {
        catch_unwind(AssertUnwindSafe(|| module.handle(records, ctx)))
            .map_err(|p| crate::common::panic_message(p.as_ref()))
    }

    /// The topics with a module, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.routes.keys().cloned().collect();
        t.sort();
        t
    }

    /// Groups a batch by topic (topics in first-seen order), each group sorted
    /// by partition then offset.
    pub fn group(batch: &[Record]) -> Vec<(String, Vec<Record>)> {
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<&str, Vec<Record>> = HashMap::new();
        for r in batch {
            if !groups.contains_key(r.topic.as_str()) {
                order.push(r.topic.clone());
            }
            groups.entry(r.topic.as_str()).or_default().push(r.clone());
        }
        order
            .into_iter()
            .map(|t| {
                let mut g = groups.remove(t.as_str()).unwrap_or_default();
                g.sort_by_key(|r| (r.partition, r.offset));
                (t, g)
            })
            .collect()
    }

    /// Hands every group to its module. A handler panic is caught here, at
    /// the batch boundary, and reported as [`DispatchError::Panicked`].
    pub fn dispatch(&mut self, batch: &[Record], ctx: &mut HandlerContext<'_>) -> Result<Dispatched, DispatchError> {
        let mut out = Dispatched::default();
        // The common case, one topic, needs no copy: arrival order is already
        // offset order within each partition.
        let groups: Vec<(String, Cow<'_, [Record]>)> = match batch.first() {
            Some(first) if batch.iter().all(|r| r.topic == first.topic) => {
                vec![(first.topic.clone(), Cow::Borrowed(batch))]
            }
            _ => Self::group(batch).into_iter().map(|(t, g)| (t, Cow::Owned(g))).collect(),
        };
        for (topic, records) in groups {
            let Some(module) = self.routes.get(&topic) else {
                if self.warned.insert(topic.clone()) {
                    TopicUnrouted { topic: &topic }.emit();
                }
                out.unrouted += records.len();
                continue;
            };
            match self.call(module.as_ref(), &records, ctx) {
                Ok(Ok(())) => *out.handled.entry(topic).or_default() += records.len(),
                Ok(Err(source)) => return Err(DispatchError::Failed { topic, source }),
                Err(message) => {
                    return Err(DispatchError::Panicked { topic, first: records[0].position(), message });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn rec(topic: &str, partition: i32, offset: i64) -> Record {
        Record { topic: topic.into(), partition, offset, key: None, payload: None, timestamp: None }
    }

    struct Recorder {
        topic: &'static str,
        seen: Arc<Mutex<Vec<(i32, i64)>>>,
        fail: bool,
        panic: bool,
    }

    impl Handler for Recorder {
        fn topic(&self) -> &'static str {
            self.topic
        }
        fn handle(&self, records: &[Record], _ctx: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
            if self.panic {
                panic!("boom at {}", records[0].offset);
            }
            self.seen.lock().unwrap().extend(records.iter().map(|r| (r.partition, r.offset)));
            if self.fail {
                return Err(HandlerError::Other("db down".into()));
            }
            Ok(())
        }
    }

    fn conn() -> crate::db::Conn {
        // Handlers here do not touch the database.
        crate::db::connect(":memory:", 1).unwrap().get().unwrap()
    }

    /// The (partition, offset) of each record a recorder was handed.
    type Seen = Arc<Mutex<Vec<(i32, i64)>>>;

    fn recorder(topic: &'static str, fail: bool, panic: bool) -> (Box<dyn Handler>, Seen) {
        let seen = Arc::new(Mutex::new(vec![]));
        (Box::new(Recorder { topic, seen: seen.clone(), fail, panic }), seen)
    }

    #[test]
    fn groups_by_topic_in_offset_order_per_partition() {
        let batch = vec![rec("b", 1, 7), rec("a", 0, 3), rec("b", 0, 9), rec("b", 1, 5), rec("a", 0, 2)];
        let groups = Router::group(&batch);
        assert_eq!(groups.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), vec!["b", "a"]);
        let b: Vec<(i32, i64)> = groups[0].1.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(b, vec![(0, 9), (1, 5), (1, 7)]);
    }

    #[test]
    fn routes_with_prefix_and_skips_unknown_topics() {
        let (m, seen) = recorder("orders", false, false);
        let mut router = Router::new(vec![m], |m| Some(format!("dev.{}", m.topic())));
        assert_eq!(router.topics(), vec!["dev.orders".to_string()]);
        let mut conn = conn();
        let settings = crate::config::Settings::from_vars(Default::default()).unwrap();
        let mut ctx = HandlerContext::new(&mut conn, &settings);
        let batch = vec![rec("dev.orders", 0, 1), rec("other", 0, 1), rec("orders", 0, 2), rec("dev.orders", 0, 2)];
        let out = router.dispatch(&batch, &mut ctx).unwrap();
        assert_eq!(out.handled.get("dev.orders"), Some(&2));
        assert_eq!(out.unrouted, 2);
        assert_eq!(*seen.lock().unwrap(), vec![(0, 1), (0, 2)]);
    }

    #[test]
    fn handler_error_and_panic_are_reported_distinctly() {
        let mut conn = conn();
        let (m, _) = recorder("t", true, false);
        let mut router = Router::new(vec![m], |m| Some(m.topic().to_string()));
        let settings = crate::config::Settings::from_vars(Default::default()).unwrap();
        let mut ctx = HandlerContext::new(&mut conn, &settings);
        assert!(matches!(router.dispatch(&[rec("t", 0, 0)], &mut ctx), Err(DispatchError::Failed { .. })));

        let (m, _) = recorder("t", false, true);
        let mut router = Router::new(vec![m], |m| Some(m.topic().to_string()));
        match router.dispatch(&[rec("t", 2, 40)], &mut ctx) {
            Err(DispatchError::Panicked { topic, first, message }) => {
                assert_eq!((topic.as_str(), first.as_str(), message.as_str()), ("t", "t/2@40", "boom at 40"));
            }
            other => panic!("expected a caught panic, got {other:?}"),
        }
    }
}
