//! The router: splits a batch by topic and hands each group, in offset order
//! per partition, to that topic's consumer module. A topic without a module
//! is logged once and treated as handled, so its offsets are committed.
//!
//! Poison rule: after a handler panics on a batch, that batch's partitions
//! are handled one record at a time (the [`PanicLedger`] outlives the thread),
//! so the next panic names its record; a record that panics the handler
//! [`POISON_AFTER_PANICS`] times in a row is dead-lettered with the panic
//! message and the partition goes on.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::handler::{Consumer, HandlerContext, HandlerError};
use crate::record::Record;

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

/// Panics a record may cause before it is dead-lettered.
pub const POISON_AFTER_PANICS: u32 = 3;

/// Fault injection for tests and drills: a record whose payload contains this
/// text makes the router panic as a handler would.
pub const FAULT_PANIC_ENV: &str = "CRONSUMER_FAULT_PANIC_PAYLOAD";

/// Which partitions panicked lately, and how often each record did; shared
/// by every consumer thread the supervisor starts.
#[derive(Debug, Default)]
pub struct PanicLedger {
    suspects: HashSet<(String, i32)>,
    counts: HashMap<(String, i32, i64), u32>,
}

pub type SharedPanicLedger = Arc<Mutex<PanicLedger>>;

fn ledger(l: &SharedPanicLedger) -> std::sync::MutexGuard<'_, PanicLedger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Router {
    routes: HashMap<String, Box<dyn Consumer>>,
    warned: HashSet<String>,
    panics: SharedPanicLedger,
    fault_panic: Option<Vec<u8>>,
}

impl Router {
    /// Routes `KAFKA_TOPIC_PREFIX` + each module's topic to that module.
    pub fn new(modules: Vec<Box<dyn Consumer>>, prefix: &str, panics: SharedPanicLedger) -> Router {
        let routes = modules.into_iter().map(|m| (format!("{prefix}{}", m.topic()), m)).collect();
        let fault_panic = std::env::var(FAULT_PANIC_ENV).ok().filter(|v| !v.is_empty()).map(String::into_bytes);
        Router { routes, warned: HashSet::new(), panics, fault_panic }
    }

    /// Calls the module, turning a panic into its message.
    fn call(
        &self,
        module: &dyn Consumer,
        records: &[Record],
        ctx: &mut HandlerContext<'_>,
    ) -> Result<Result<(), HandlerError>, String> {
        catch_unwind(AssertUnwindSafe(|| {
            if let Some(needle) = &self.fault_panic {
                let hit = records
                    .iter()
                    .find(|r| r.payload.as_deref().is_some_and(|p| p.windows(needle.len()).any(|w| w == needle)));
                if let Some(r) = hit {
                    panic!("fault injection ({FAULT_PANIC_ENV}) at {}", r.position());
                }
            }
            module.handle(records, ctx)
        }))
        .map_err(|p| panic_message(p.as_ref()))
    }

    /// Handles a suspect group one record at a time, counting panics per record.
    fn isolate(
        &self,
        topic: &str,
        module: &dyn Consumer,
        records: &[Record],
        ctx: &mut HandlerContext<'_>,
    ) -> Result<(), DispatchError> {
        for r in records {
            let key = (r.topic.clone(), r.partition, r.offset);
            match self.call(module, std::slice::from_ref(r), ctx) {
                Ok(Ok(())) => {
                    ledger(&self.panics).counts.remove(&key);
                }
                Ok(Err(source)) => return Err(DispatchError::Failed { topic: topic.to_string(), source }),
                Err(message) => {
                    let n = {
                        let mut l = ledger(&self.panics);
                        let n = l.counts.entry(key.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    if n < POISON_AFTER_PANICS {
                        return Err(DispatchError::Panicked { topic: topic.to_string(), first: r.position(), message });
                    }
                    ledger(&self.panics).counts.remove(&key);
                    ctx.reject(r, format!("handler panicked {n} times in a row on this record: {message}"));
                }
            }
        }
        let mut l = ledger(&self.panics);
        for r in records {
            l.suspects.remove(&(r.topic.clone(), r.partition));
        }
        Ok(())
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
                    log::warn!("unhandled topic={topic}: no consumer module; its records are committed unprocessed");
                }
                out.unrouted += records.len();
                continue;
            };
            let suspect = {
                let l = ledger(&self.panics);
                records.iter().any(|r| l.suspects.contains(&(r.topic.clone(), r.partition)))
            };
            if suspect {
                self.isolate(&topic, module.as_ref(), &records, ctx)?;
                *out.handled.entry(topic).or_default() += records.len();
                continue;
            }
            match self.call(module.as_ref(), &records, ctx) {
                Ok(Ok(())) => *out.handled.entry(topic).or_default() += records.len(),
                Ok(Err(source)) => return Err(DispatchError::Failed { topic, source }),
                Err(message) => {
                    let mut l = ledger(&self.panics);
                    for r in records.iter() {
                        l.suspects.insert((r.topic.clone(), r.partition));
                    }
                    return Err(DispatchError::Panicked { topic, first: records[0].position(), message });
                }
            }
        }
        Ok(out)
    }
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into())
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

    /// Panics on every batch that holds offset 7.
    struct PoisonAt7;
    impl Consumer for PoisonAt7 {
        fn topic(&self) -> &'static str {
            "t"
        }
        fn handle(&self, records: &[Record], _ctx: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
            assert!(records.iter().all(|r| r.offset != 7), "poison");
            Ok(())
        }
    }

    #[test]
    fn a_record_that_keeps_panicking_is_dead_lettered_and_the_rest_goes_on() {
        let pool = pool();
        let panics = SharedPanicLedger::default();
        let batch: Vec<Record> = (5..10).map(|o| rec("t", 0, o)).collect();
        // Each attempt is a fresh router, as after a thread restart.
        let attempt = || {
            let mut router = Router::new(vec![Box::new(PoisonAt7)], "", panics.clone());
            let mut ctx = HandlerContext::new(&pool, 100);
            let r = router.dispatch(&batch, &mut ctx);
            (r, ctx.rejected().to_vec())
        };
        // 1st: the whole batch panics, no record is blamed yet.
        assert!(matches!(attempt().0, Err(DispatchError::Panicked { first, .. }) if first == "t/0@5"));
        // 2nd and 3rd: one record at a time, the panic names offset 7.
        for _ in 0..2 {
            assert!(matches!(attempt().0, Err(DispatchError::Panicked { first, .. }) if first == "t/0@7"));
        }
        // 4th: the third panic on offset 7 dead-letters it; the others are handled.
        let (r, rejected) = attempt();
        assert_eq!(r.unwrap().handled.get("t"), Some(&5));
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].offset, 7);
        assert!(
            rejected[0].error.starts_with("handler panicked 3 times in a row on this record: poison"),
            "{}",
            rejected[0].error
        );
        // The partition is no longer suspect: batches go whole again.
        assert!(ledger(&panics).suspects.is_empty() && ledger(&panics).counts.is_empty());
    }

    impl Consumer for Recorder {
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

    fn pool() -> crate::db::Pool {
        // Never connected to by these tests: handlers here do not touch the database.
        crate::db::connect(":memory:", 1).unwrap()
    }

    fn recorder(topic: &'static str, fail: bool, panic: bool) -> (Box<dyn Consumer>, Arc<Mutex<Vec<(i32, i64)>>>) {
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
        let mut router = Router::new(vec![m], "dev.", Default::default());
        assert_eq!(router.topics(), vec!["dev.orders".to_string()]);
        let pool = pool();
        let mut ctx = HandlerContext::new(&pool, 100);
        let batch = vec![rec("dev.orders", 0, 1), rec("other", 0, 1), rec("orders", 0, 2), rec("dev.orders", 0, 2)];
        let out = router.dispatch(&batch, &mut ctx).unwrap();
        assert_eq!(out.handled.get("dev.orders"), Some(&2));
        assert_eq!(out.unrouted, 2);
        assert_eq!(*seen.lock().unwrap(), vec![(0, 1), (0, 2)]);
    }

    #[test]
    fn handler_error_and_panic_are_reported_distinctly() {
        let pool = pool();
        let (m, _) = recorder("t", true, false);
        let mut router = Router::new(vec![m], "", Default::default());
        let mut ctx = HandlerContext::new(&pool, 100);
        assert!(matches!(router.dispatch(&[rec("t", 0, 0)], &mut ctx), Err(DispatchError::Failed { .. })));

        let (m, _) = recorder("t", false, true);
        let mut router = Router::new(vec![m], "", Default::default());
        match router.dispatch(&[rec("t", 2, 40)], &mut ctx) {
            Err(DispatchError::Panicked { topic, first, message }) => {
                assert_eq!((topic.as_str(), first.as_str(), message.as_str()), ("t", "t/2@40", "boom at 40"));
            }
            other => panic!("expected a caught panic, got {other:?}"),
        }
    }
}
