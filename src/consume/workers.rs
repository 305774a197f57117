//! Where lanes run their batches ([`Lanes`]): with one lane, on the polling
//! thread itself, the batch done as it is handed over ([`Inline`]: the
//! serial behaviour, nothing crosses a thread); with more, each lane on a
//! worker thread of its own with a sink of its own ([`Threads`]). Either way
//! a finished batch comes back to the pipeline, which alone marks offsets
//! and commits.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use super::lane::{self, Done, Job, Outcome};
use super::poison::PoisonLedger;
use super::sink::{LaneSink, Panicked};

/// The lanes' workers, as the pipeline drives them.
pub trait Lanes {
    /// How many lanes there are.
    fn count(&self) -> usize;
    /// Hands `job` to its lane, which has no other batch.
    fn submit(&mut self, job: Job);
    /// The batches finished since the last call; when there is none, waits
    /// at most `wait` for one.
    fn finished(&mut self, wait: Duration) -> Vec<Done>;
    /// How long the polling thread may wait (in a poll) while a lane works:
    /// a finished batch is taken back at the next step.
    fn back_within(&self) -> Duration {
        POLL_WAIT_IN_FLIGHT
    }
}

/// How long a poll waits while a lane works (when the lanes cannot say better).
pub const POLL_WAIT_IN_FLIGHT: Duration = Duration::from_millis(5);

/// One lane, on the caller's thread.
pub struct Inline<S> {
    sink: S,
    poison: PoisonLedger,
    done: Vec<Done>,
}

impl<S: LaneSink> Inline<S> {
    pub fn new(sink: S, poison: PoisonLedger) -> Self {
        Inline { sink, poison, done: Vec::new() }
    }
}

impl<S: LaneSink> Lanes for Inline<S> {
    fn count(&self) -> usize {
        1
    }

    fn submit(&mut self, job: Job) {
        let done = run_caught(&mut self.sink, &self.poison, job);
        self.done.push(done);
    }

    fn finished(&mut self, _wait: Duration) -> Vec<Done> {
        std::mem::take(&mut self.done)
    }
}

/// One worker thread per lane. A worker that is stuck in a call (the
/// database hangs) holds only its lane; the supervisor sees its lane busy
/// past the stall timeout and stops the consumer thread. Dropping this
/// waits for the workers to end their batch: the consumer thread does not
/// end while one of its workers is stuck (holding a connection, perhaps an
/// offset row's lock), so a stuck worker is a stuck consumer thread, and
/// the supervisor exits the process rather than start another beside it.
pub struct Threads {
    jobs: Vec<Sender<Job>>,
    done: Receiver<Done>,
    /// Batches whose worker was gone, told back at the next call.
    lost: Vec<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// `count` workers, each with the sink `sink(lane)` makes.
    pub fn start(
        count: usize,
        poison: &PoisonLedger,
        mut sink: impl FnMut(usize) -> Box<dyn LaneSink + Send>,
    ) -> std::io::Result<Threads> {
        let (done_tx, done) = mpsc::channel();
        let mut threads = Threads { jobs: Vec::new(), done, lost: Vec::new(), workers: Vec::new() };
        for lane in 0..count {
            let (tx, rx) = mpsc::channel::<Job>();
            let (mut sink, poison, done_tx) = (sink(lane), poison.clone(), done_tx.clone());
            // On an error, the workers started so far end as `threads` drops.
            let worker = std::thread::Builder::new().name(format!("lane-{lane}")).spawn(move || {
                for job in rx {
                    if done_tx.send(run_caught(&mut *sink, &poison, job)).is_err() {
                        return;
                    }
                }
            })?;
            threads.jobs.push(tx);
            threads.workers.push(worker);
        }
        Ok(threads)
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.jobs.clear();
        for worker in self.workers.drain(..) {
            _ = worker.join();
        }
    }
}

/// Runs `job`: handlers' panics come back as failures (the router catches
/// them); a panic of the lane's own code ends its batch as broken.
fn run_caught<S: LaneSink + ?Sized>(sink: &mut S, poison: &PoisonLedger, job: Job) -> Done {
    let (lane, seq) = (job.lane, job.seq);
    catch_unwind(AssertUnwindSafe(|| lane::run(sink, poison, job)))
        .unwrap_or_else(|p| broken(lane, seq, crate::common::panic_message(p.as_ref())))
}

/// A batch whose lane broke: the pipeline marks nothing of it (what its
/// transactions committed, the database holds, and the next consumer
/// thread reads from there), and the consumer thread ends.
fn broken(lane: usize, seq: u64, message: String) -> Done {
    let outcome = Outcome::Panicked(Panicked { at: format!("lane {lane}"), message });
    Done { lane, seq, outcome, handled: 0, stored: Default::default(), lost: None, rest: Vec::new() }
}

impl Lanes for Threads {
    fn count(&self) -> usize {
        self.jobs.len()
    }

    fn submit(&mut self, job: Job) {
        let (lane, seq) = (job.lane, job.seq);
        if self.jobs[lane].send(job).is_err() {
            // Its worker is gone: the batch counts for nothing, and the thread ends.
            self.lost.push(broken(lane, seq, "the lane's worker is gone".into()));
        }
    }

    fn finished(&mut self, wait: Duration) -> Vec<Done> {
        let mut out: Vec<Done> = std::mem::take(&mut self.lost);
        out.extend(self.done.try_iter());
        if out.is_empty() && !wait.is_zero() {
            out.extend(self.done.recv_timeout(wait).ok());
            out.extend(self.done.try_iter());
        }
        out
    }
}
