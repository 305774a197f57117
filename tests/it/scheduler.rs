//! The scheduler's rules against real databases: a run is not started
//! twice, a panic is recorded, one copy runs each tick under the lease,
//! supervision goes on without the database, and a run that lost its lease
//! cannot write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cronsumer::config::cron::{CronError, Schedule};
use cronsumer::config::Settings;
use cronsumer::db::{self, notifications, Backend};
use cronsumer::schedule::{Job, JobContext, JobError, JobReport, RunOutcome, Trigger};

use crate::support::*;

/// A job for the guard tests: sleeps, or panics, as told.
struct TestJob {
    sleep: Duration,
    panic: bool,
    runs: Arc<AtomicUsize>,
}

impl Job for TestJob {
    fn name(&self) -> &'static str {
        "test_job"
    }
    fn schedule(&self, _: &Settings) -> Result<Schedule, CronError> {
        "*/10 * * * * *".parse()
    }
    fn run(&self, _: &JobContext) -> Result<JobReport, JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.sleep);
        if self.panic {
            panic!("job exploded");
        }
        Ok(JobReport::new("done"))
    }
}

fn a_long_run_is_not_started_twice_and_a_panic_is_recorded(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("guard"), &[]);
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = Arc::new(runner(
        Arc::new(TestJob { sleep: Duration::from_millis(800), panic: false, runs: runs.clone() }),
        job_context(&s, &pool),
    ));
    let first = {
        let r = slow.clone();
        std::thread::spawn(move || r.run(Trigger::Manual))
    };
    wait_for("first run started", Duration::from_secs(5), || slow.is_running());
    assert_eq!(slow.run(Trigger::Tick), RunOutcome::SkippedOverlap);
    assert_eq!(first.join().unwrap(), RunOutcome::Ok(JobReport::new("done")));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let boom =
        runner(Arc::new(TestJob { sleep: Duration::ZERO, panic: true, runs: runs.clone() }), job_context(&s, &pool));
    assert_eq!(boom.run(Trigger::Manual), RunOutcome::Failed("panicked: job exploded".into()));
    // and it runs again next time
    assert_eq!(boom.run(Trigger::Manual), RunOutcome::Failed("panicked: job exploded".into()));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let ledger = db::job_runs::list(&mut pool.get().unwrap(), Some("test_job"), 10).unwrap();
    assert_eq!(ledger.iter().filter(|r| r.outcome == "failed").count(), 2);
    assert_eq!(ledger[0].error.as_deref(), Some("panicked: job exploded"));
    assert!(ledger.iter().all(|r| r.finished_at.is_some()));
}
both_backends!(a_long_run_is_not_started_twice_and_a_panic_is_recorded);

#[test]
fn one_copy_per_tick_under_the_lease() {
    let tdb = TestDb::new(Backend::Postgres);
    let s = settings(&tdb.url, &unique("lease"), &[]);
    let runs = Arc::new(AtomicUsize::new(0));
    let job =
        || Arc::new(TestJob { sleep: Duration::from_millis(100), panic: false, runs: runs.clone() }) as Arc<dyn Job>;
    let a = Arc::new(runner(job(), job_context(&s, &tdb.pool())));
    let b = Arc::new(runner(job(), job_context(&s, &tdb.pool())));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|r| {
            let o = outcomes.clone();
            std::thread::spawn(move || o.lock().unwrap().push(r.run(Trigger::Tick)))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{outcomes:?}");
    assert!(outcomes.contains(&RunOutcome::SkippedLease), "{outcomes:?}");
}

/// Supervision must go on while the database is away (a stalled consumer
/// thread is most likely then): its runs do not wait for the ledger.
#[test]
fn supervision_runs_while_the_database_is_away() {
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("supervise"), &[]);
    let job = Arc::new(cronsumer::consume::supervise::SuperviseConsumer::new(None));
    let runner = runner(job, job_context(&s, &pool));
    tdb.pg_block(true);
    let outcome = runner.run(Trigger::Tick);
    tdb.pg_block(false);
    assert_eq!(outcome, RunOutcome::Ok(JobReport::new("no consumer thread in this process")));
}

/// Waits for the test's go, then writes one notification through the fence.
struct FencedWriter {
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Job for FencedWriter {
    fn name(&self) -> &'static str {
        "fenced_writer"
    }
    /// A 1 s lease (half the period), renewed every third of it.
    fn schedule(&self, _: &Settings) -> Result<Schedule, CronError> {
        "*/2 * * * * *".parse()
    }
    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        self.go.lock().unwrap().recv().unwrap();
        let mut conn = ctx.pool.get().unwrap();
        let row = notifications::NewNotification::pending(None, "[1]".into(), "e".into(), "written".into());
        let n = ctx.fenced(self.name(), &mut conn, |c| {
            notifications::insert_all(c, std::slice::from_ref(&row)).map(|s| s.inserted.len())
        })?;
        Ok(JobReport::new(format!("wrote {n}")))
    }
}

/// A run whose lease expired and was taken by another copy (with a higher
/// fencing token) writes nothing: its fenced write is refused.
fn a_run_that_lost_its_lease_cannot_write(backend: Backend) {
    use cronsumer::db::schema::job_leases::dsl as l;
    use diesel::prelude::*;
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("fence"), &[]);
    let (go, wait) = std::sync::mpsc::channel();
    let runner = Arc::new(runner(Arc::new(FencedWriter { go: Mutex::new(wait) }), job_context(&s, &pool)));
    let run = {
        let r = runner.clone();
        std::thread::spawn(move || r.run(Trigger::Tick))
    };
    wait_for("the run holding its lease", Duration::from_secs(10), || runner.is_running());
    std::thread::sleep(Duration::from_millis(500));
    let mut conn = pool.get().unwrap();
    let first = l::job_leases.filter(l::job.eq("fenced_writer")).select(l::token);
    let first: i64 = cronsumer::on_backend!(conn, |c| first.first(c)).unwrap();
    // The lease lapses (as if the run stalled past it), and another copy takes it.
    let expire = diesel::update(l::job_leases.filter(l::job.eq("fenced_writer")))
        .set(l::lease_until.eq(db::now() - chrono::Duration::hours(1)));
    cronsumer::on_backend!(conn, |c| expire.execute(c)).unwrap();
    let other = db::job_leases::acquire(&mut conn, "fenced_writer", "another-copy", Duration::from_secs(60))
        .unwrap()
        .expect("another copy takes the expired lease");
    assert_eq!(other.token, first + 1, "a takeover raises the fencing token");
    go.send(()).unwrap();
    let outcome = run.join().unwrap();
    assert!(
        matches!(&outcome, RunOutcome::Failed(e) if e.contains("lost its lease")),
        "the run wrote without its lease: {outcome:?}"
    );
    assert_eq!(notifications::count(&mut conn).unwrap(), 0, "a row was written without the lease");
}
both_backends!(a_run_that_lost_its_lease_cannot_write);

/// A fenced write is a write transaction from its start (immediate on
/// SQLite): another writer committing between its check and its writes
/// waits for it, instead of failing it with a stale snapshot.
#[test]
fn a_fenced_write_holds_the_write_lock_from_its_check_on() {
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("fence"), &[]);
    let ctx = job_context(&s, &pool);
    let checked = std::sync::Barrier::new(2);
    let (fenced, other) = std::thread::scope(|scope| {
        let fenced = scope.spawn(|| {
            let mut conn = pool.get().unwrap();
            ctx.fenced("test_job", &mut conn, |c| {
                notifications::count(c)?;
                checked.wait();
                // Another writer tries its write meanwhile.
                std::thread::sleep(Duration::from_millis(300));
                db::job_runs::start(c, "test_job", "fenced")
            })
        });
        let other = scope.spawn(|| {
            checked.wait();
            std::thread::sleep(Duration::from_millis(50));
            db::job_runs::start(&mut pool.get().unwrap(), "test_job", "other")
        });
        (fenced.join().unwrap(), other.join().unwrap())
    });
    assert!(fenced.is_ok(), "the fenced write failed: {fenced:?}");
    assert!(other.is_ok(), "the other write failed: {other:?}");
}
