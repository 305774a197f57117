//! The supervisor restarts a consumer thread that panicked or stalled, and
//! nothing is lost; end to end, a produced record reaches the webhook.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cronsumer::common::record::Record;
use cronsumer::common::shutdown::Shutdown;
use cronsumer::consume::handler::{Handler, HandlerContext, HandlerError};
use cronsumer::consume::supervisor::{RestartCause, Supervisor, Verdict, MIN_STALL_GRACE};
use cronsumer::db::Backend;
use cronsumer::schedule::{JobContext, Trigger};

use crate::support::*;

/// Topics whose module did its one fault already (the tests share a process).
static FIRED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

fn first_time(topic: &'static str) -> bool {
    FIRED.lock().unwrap().insert(topic)
}

/// Panics on its first batch, then handles records normally.
struct PanicOnce(&'static str);
impl Handler for PanicOnce {
    fn topic(&self) -> &'static str {
        self.0
    }
    fn handle(&self, _: &[Record], _: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        if first_time(self.0) {
            panic!("forced handler panic");
        }
        Ok(())
    }
}

/// Blocks its first batch for 4 s (longer than the stall timeout).
struct StallOnce(&'static str);
impl Handler for StallOnce {
    fn topic(&self) -> &'static str {
        self.0
    }
    fn handle(&self, _: &[Record], _: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        if first_time(self.0) {
            std::thread::sleep(Duration::from_secs(4));
        }
        Ok(())
    }
}

/// Blocks every batch for longer than the stall grace: a wedged thread.
struct Wedged;
impl Handler for Wedged {
    fn topic(&self) -> &'static str {
        "wedged"
    }
    fn handle(&self, _: &[Record], _: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        std::thread::sleep(MIN_STALL_GRACE + Duration::from_secs(15));
        Ok(())
    }
}

fn wedged_only() -> Vec<Box<dyn Handler>> {
    vec![Box::new(Wedged)]
}

fn with(module: impl Handler + 'static) -> Vec<Box<dyn Handler>> {
    let mut m = cronsumer::consumers::registry();
    m.push(Box::new(module));
    m
}

/// Runs the `supervise_consumer` job (as the scheduler would every 5 s, here
/// every 200 ms) until the supervisor restarted the thread once.
fn supervise_until_restart(supervisor: &Arc<Mutex<Supervisor>>, ctx: &Arc<JobContext>, limit: Duration) {
    let job = cronsumer::consume::supervise::SuperviseConsumer::new(Some(supervisor.clone()));
    let runner = runner(Arc::new(job), ctx.clone());
    wait_for("a restart", limit, || {
        runner.run(Trigger::Tick);
        supervisor.lock().unwrap().restarts() >= 1
    });
}

/// Runs the consumer with `modules` (one of them, of `extra_topic`, faulty)
/// on 500 notifications, until the supervisor restarted it once; returns
/// what it diagnosed.
fn run_fault(backend: Backend, modules: Modules, extra_topic: &str, extra: &[(&str, &str)]) -> RestartCause {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("sup"), extra);
    let (_topics, topic) = registry_topics(&s, 2);
    let fault_topic = s.topic(extra_topic);
    let _fault_topic = TestTopics::create(&s, &[&fault_topic], 1);
    produce(&s, &fault_topic, &[b"{}".to_vec()]);
    produce(&s, &topic, &(0..500).map(notification).collect::<Vec<_>>());

    let supervisor = Arc::new(Mutex::new(Supervisor::new(setup(&s, &pool).modules(modules).build())));
    supervisor.lock().unwrap().start().unwrap();
    let ctx = Arc::new(JobContext::new(Arc::new(s.clone()), pool.clone(), Shutdown::new()));
    let wait_fault = Instant::now();
    let mut diagnosed = None;
    wait_for("the fault", Duration::from_secs(60), || {
        diagnosed = supervisor.lock().unwrap().diagnose();
        diagnosed.is_some()
    });
    let noticed = Instant::now();
    supervise_until_restart(&supervisor, &ctx, Duration::from_secs(10));
    println!(
        "FIGURE supervisor: fault after {:?}, restarted {:?} after it was visible",
        noticed - wait_fault,
        noticed.elapsed()
    );
    let now = supervisor.lock().unwrap().diagnose();
    assert!(now.is_none() || supervisor.lock().unwrap().is_alive());
    wait_for("500 rows after the restart", Duration::from_secs(90), || count_notifications(&pool) >= 500);
    wait_for("fault record committed", Duration::from_secs(60), || committed(&s, &fault_topic, 1).get(&0) == Some(&1));
    supervisor.lock().unwrap().stop(Instant::now() + Duration::from_secs(10));
    assert_eq!(count_notifications(&pool), 500);
    assert_commits_covered(&s, &pool, &topic, 2);
    let restarts = cronsumer::common::metrics::get().consumer_restarts.with_label_values(&["ended"]).get()
        + cronsumer::common::metrics::get().consumer_restarts.with_label_values(&["stalled"]).get();
    assert!(restarts >= 1);
    diagnosed.expect("a diagnosis")
}

#[test]
fn a_panicking_consumer_thread_is_restarted_and_nothing_is_lost() {
    let cause = run_fault(Backend::Sqlite, || with(PanicOnce("boom")), "boom", &[]);
    assert!(matches!(cause, RestartCause::Ended(_)), "{cause:?}");
}

/// With lanes (PostgreSQL: 4), a panic in one lane ends the thread after
/// the others' batches came back; nothing is lost.
#[test]
fn a_panicking_lane_is_restarted_and_nothing_is_lost() {
    let cause = run_fault(Backend::Postgres, || with(PanicOnce("boom_lanes")), "boom_lanes", &[]);
    assert!(matches!(cause, RestartCause::Ended(_)), "{cause:?}");
}

#[test]
fn a_stalled_consumer_thread_is_restarted_and_nothing_is_lost() {
    let stall = [("CONSUMER_STALL_TIMEOUT_MS", "1000")];
    let cause = run_fault(Backend::Sqlite, || with(StallOnce("slow")), "slow", &stall);
    assert!(matches!(cause, RestartCause::Stalled(_)), "{cause:?}");
}

/// With lanes the polling thread goes on while one lane hangs: the stuck
/// lane is what the supervisor sees, and /healthz names it.
#[test]
fn a_stuck_lane_is_restarted_and_nothing_is_lost() {
    let stall = [("CONSUMER_STALL_TIMEOUT_MS", "1000")];
    let cause = run_fault(Backend::Postgres, || with(StallOnce("slow_lanes")), "slow_lanes", &stall);
    assert!(matches!(cause, RestartCause::Stalled(_)), "{cause:?}");
}

#[test]
fn end_to_end_a_produced_record_reaches_the_webhook() {
    let tdb = TestDb::new(Backend::Sqlite);
    let sink = Sink::ok();
    let s = settings(
        &tdb.url,
        &unique("e2e"),
        &[
            ("NOTIFIER", "webhook"),
            ("NOTIFY_WEBHOOK_URL", &sink.url),
            ("CONSUMER_BATCH_TIMEOUT_MS", "100"),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ],
    );
    let (_topics, topic) = registry_topics(&s, 2);
    let shutdown = Shutdown::new();
    let service = {
        let (s, sd) = (s.clone(), shutdown.clone());
        std::thread::spawn(move || cronsumer::app::run(s, sd, cronsumer::registry()))
    };
    let mut producer = cronsumer::kafka::producer::RecordProducer::new(&s).unwrap();
    // Let the group settle before timing.
    std::thread::sleep(Duration::from_secs(3));
    let n = 200;
    let mut sent_at = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_millis(100 * i as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        sent_at.push(Instant::now());
        producer.send(&topic, None, &notification(i)).unwrap();
        producer.delivered(); // serve delivery reports
    }
    producer.finish(&topic).unwrap();
    wait_for("200 deliveries", Duration::from_secs(60), || sink.delivered().len() >= n);
    shutdown.trigger();
    service.join().unwrap().unwrap();
    let mut lat: Vec<Duration> = sink
        .hits()
        .iter()
        .map(|h| {
            let i = h.body["users"][0].as_u64().unwrap() as usize;
            h.at - sent_at[i]
        })
        .collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "FIGURE produce->webhook latency over {n} records at 10/s, batch timeout 100 ms: p50={:?} p99={:?} max={:?}",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
    assert_eq!(sink.delivered().len(), n);
    assert!(sink.delivered().values().all(|&c| c == 1));
}

/// A stalled thread still holds its group membership: the supervisor asks it
/// to stop and never starts a second member beside it; when it does not end
/// within the grace, the verdict is to end the process.
#[test]
fn a_wedged_consumer_thread_gets_no_second_member_and_ends_the_process() {
    wedged_ends_the_process(Backend::Sqlite);
}

/// With lanes, a lane's worker that hangs keeps its consumer thread from
/// ending (it may hold a connection and an offset row's lock): again no
/// second member, and the process ends.
#[test]
fn a_wedged_lane_gets_no_second_member_and_ends_the_process() {
    wedged_ends_the_process(Backend::Postgres);
}

fn wedged_ends_the_process(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("wedge"), &[("CONSUMER_STALL_TIMEOUT_MS", "1000")]);
    let topic = s.topic("wedged");
    let _topics = TestTopics::create(&s, &[&topic], 1);
    produce(&s, &topic, &[b"{}".to_vec()]);
    let mut supervisor = Supervisor::new(setup(&s, &pool).modules(wedged_only).build());
    supervisor.start().unwrap();
    let first = supervisor.heartbeat().unwrap();
    wait_for("the stall", Duration::from_secs(60), || matches!(supervisor.diagnose(), Some(RestartCause::Stalled(_))));
    assert!(matches!(supervisor.check(), Some(Verdict::Stopping(_))));
    let stalled = Instant::now();
    let verdict = loop {
        std::thread::sleep(Duration::from_millis(500));
        let v = supervisor.check();
        assert_eq!(supervisor.restarts(), 0, "a second consumer was started beside the stalled one");
        assert!(Arc::ptr_eq(&first, &supervisor.heartbeat().unwrap()));
        match v {
            Some(Verdict::Stopping(_)) => assert!(stalled.elapsed() < MIN_STALL_GRACE + Duration::from_secs(5)),
            other => break other,
        }
    };
    assert!(matches!(verdict, Some(Verdict::Wedged(d)) if d >= MIN_STALL_GRACE), "{verdict:?}");
    assert!(stalled.elapsed() >= MIN_STALL_GRACE - Duration::from_secs(1));
}
