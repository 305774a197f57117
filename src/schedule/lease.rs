//! A job's lease while its run goes: renewed in the background every third
//! of its length (so a long run keeps it), and the fence its writes go
//! through ([`crate::schedule::JobContext::fenced`]). A run whose lease was
//! lost, because it expired and another copy took it with a higher token,
//! writes nothing more.

use std::collections::HashMap;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::locks::lock;
use crate::db::job_leases::{self, Lease};
use crate::db::{checkout, Pool};
use crate::events::{Event as _, LeaseTrouble};

/// Renews one lease until stopped or lost.
pub struct Keeper {
    /// `true`: give the lease up when stopping.
    stop: mpsc::Sender<bool>,
    thread: JoinHandle<()>,
}

impl Keeper {
    pub fn start(pool: Pool, lease: Lease, lease_for: Duration) -> Keeper {
        let (stop, stopped) = mpsc::channel::<bool>();
        // A renewal never waits for a connection past its turn: a lease that
        // outlived its keeper's wait would be another copy's by then.
        let turn = lease_for / 3;
        let connection = move |pool: &Pool| checkout(pool, Some(std::time::Instant::now() + turn));
        let thread = std::thread::spawn(move || loop {
            let renewed = match stopped.recv_timeout(turn) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    connection(&pool).and_then(|mut c| job_leases::renew(&mut c, &lease, lease_for))
                }
                Ok(true) => {
                    let released = connection(&pool).and_then(|mut c| job_leases::release(&mut c, &lease));
                    if let Err(e) = released {
                        let (job, token, error) = (&lease.job, lease.token, Some(e.to_string()));
                        LeaseTrouble { job, token, what: "not_given_up", error: error.as_deref() }.emit();
                    }
                    return;
                }
                Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match renewed {
                Ok(true) => {}
                Ok(false) => {
                    LeaseTrouble { job: &lease.job, token: lease.token, what: "lost", error: None }.emit();
                    return;
                }
                // Tried again at the next third; the fence decides if it expired meanwhile.
                Err(e) => {
                    let (job, token, error) = (&lease.job, lease.token, Some(e.to_string()));
                    LeaseTrouble { job, token, what: "not_renewed", error: error.as_deref() }.emit()
                }
            }
        });
        Keeper { stop, thread }
    }

    /// Stops renewing; with `release`, gives the lease up at once, so that
    /// the next acquisition (by any copy) need not wait for it to expire.
    pub fn stop(self, release: bool) {
        let _ = self.stop.send(release);
        let _ = self.thread.join();
    }
}

/// The leases held by the runs going on in this copy, by job.
#[derive(Default)]
pub struct Held(Mutex<HashMap<String, Lease>>);

impl Held {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        // One insert or remove per update: a poisoned lock holds consistent data.
        lock(&self.0)
    }

    pub fn insert(&self, lease: Lease) {
        self.map().insert(lease.job.clone(), lease);
    }

    pub fn remove(&self, job: &str) {
        self.map().remove(job);
    }

    pub fn get(&self, job: &str) -> Option<Lease> {
        self.map().get(job).cloned()
    }
}
