//! A member's lanes in the simulation: each batch handed over runs the
//! service's own lane code ([`lane::run`]) against the simulated database,
//! but later, after a seeded latency, so batches of different lanes finish
//! out of order while the member goes on polling. Checked on every batch
//! handed over: a lane never gets a second batch, and a partition is never
//! in two batches at once.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cronsumer::common::clock::Clock;
use cronsumer::common::record::TopicPartition;
use cronsumer::consume::lane::{self, Done, Job};
use cronsumer::consume::poison::PoisonLedger;
use cronsumer::consume::workers::Lanes;

use crate::db::{Db, SimLaneSink};
use crate::rng::Rng;
use crate::SimClock;

pub struct SimLanes {
    count: usize,
    db: Rc<RefCell<Db>>,
    poison: PoisonLedger,
    clock: SimClock,
    rng: Rng,
    /// Each batch takes from the first to the second of these.
    latency: (Duration, Duration),
    /// Batches handed over, with when each finishes.
    pending: Vec<(Instant, Job)>,
}

impl SimLanes {
    pub fn new(
        count: usize,
        db: Rc<RefCell<Db>>,
        poison: PoisonLedger,
        clock: SimClock,
        seed: u64,
        latency: (Duration, Duration),
    ) -> Self {
        SimLanes { count, db, poison, clock, rng: Rng::new(seed), latency, pending: Vec::new() }
    }

    /// The member's thread ended with batches in flight: their workers
    /// finish them (a thread restart) or die with the process (kill -9).
    /// Finished ones count in the database only.
    pub fn orphan(mut self, finish: bool) {
        if finish {
            for (_, job) in std::mem::take(&mut self.pending) {
                lane::run(&mut SimLaneSink(self.db.clone()), &self.poison, job);
            }
        }
    }

    fn violation(&self, v: String) {
        self.db.borrow_mut().violations.push(v);
    }
}

impl Lanes for SimLanes {
    fn count(&self) -> usize {
        self.count
    }

    fn submit(&mut self, job: Job) {
        if self.pending.iter().any(|(_, j)| j.lane == job.lane) {
            self.violation(format!("lane {} got a second batch", job.lane));
        }
        let in_flight = |j: &Job, tp: &TopicPartition| j.parts.contains_key(tp);
        for tp in job.parts.keys() {
            if self.pending.iter().any(|(_, j)| in_flight(j, tp)) {
                self.violation(format!("two batches of {tp} in flight"));
            }
        }
        let (least, most) = (self.latency.0.as_millis() as u64, self.latency.1.as_millis() as u64);
        let latency = Duration::from_millis(least + self.rng.below(most.saturating_sub(least) + 1));
        self.pending.push((self.clock.now() + latency, job));
    }

    fn finished(&mut self, wait: Duration) -> Vec<Done> {
        let now = self.clock.now();
        let next = self.pending.iter().map(|(due, _)| *due).min();
        if let Some(next) = next.filter(|next| *next > now && !wait.is_zero()) {
            // Waiting for a lane: time passes until it finishes (or the wait ends).
            self.clock.sleep(next.saturating_duration_since(now).min(wait));
        }
        let now = self.clock.now();
        let (mut due, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|(t, _)| *t <= now);
        self.pending = rest;
        // Batches due at once finish in any order.
        for i in (1..due.len()).rev() {
            due.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        let sink = &mut SimLaneSink(self.db.clone());
        due.into_iter().map(|(_, job)| lane::run(sink, &self.poison, job)).collect()
    }

    /// Until the next batch finishes: the polling thread's poll waits no longer.
    fn back_within(&self) -> Duration {
        let next = self.pending.iter().map(|(due, _)| *due).min();
        next.map_or(Duration::ZERO, |t| t.saturating_duration_since(self.clock.now()))
    }
}
