//! A simulated world: the cluster, the database ([`crate::db`]), and the
//! members, each the real `Pipeline` with its lanes ([`crate::lanes`]),
//! driven as the consumer thread drives it ([`Pipeline::tick`]). The
//! invariants are checked after every step and at the end ([`crate::checker`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cronsumer::common::clock::Clock;
use cronsumer::common::record::TopicPartition;
use cronsumer::common::shutdown::StopRequest;
use cronsumer::consume::heartbeat::Heartbeat;
use cronsumer::consume::operator_pauses::OperatorPauses;
use cronsumer::consume::pipeline::{Pipeline, Ticked, REVOKE_BUDGET};
use cronsumer::consume::poison::PoisonLedger;

use crate::cluster::{Cluster, SimBroker};
use crate::db::{Db, Nature, Pos, SimOffsets};
use crate::lanes::SimLanes;
use crate::rng::Rng;
use crate::SimClock;

pub struct Member {
    pub pipeline: Option<Pipeline<SimClock, SimLanes>>,
    pub heartbeat: Arc<Heartbeat>,
    pub broker: SimBroker,
    offsets: SimOffsets,
    stop: Arc<StopRequest>,
    /// Outlives the member's threads, as the supervisor's does.
    poison: PoisonLedger,
    pub restart_at: Option<Instant>,
    /// Thread starts so far (seeds each one's lanes).
    starts: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub members: usize,
    pub topics: usize,
    pub partitions: usize,
    pub cooperative: bool,
    pub batch_size: usize,
    pub batch_timeout: Duration,
    /// Lanes per member, and how long a lane's batch takes (at random in between).
    pub lanes: usize,
    pub min_latency: Duration,
    pub max_latency: Duration,
    /// The fewest records at which a lane pauses (production: `LANE_RECORDS`).
    pub pause_floor: usize,
}

pub struct World {
    pub config: Config,
    pub clock: SimClock,
    pub cluster: Rc<RefCell<Cluster>>,
    pub db: Rc<RefCell<Db>>,
    pub members: Vec<Member>,
    pub produced: BTreeMap<Pos, Nature>,
    /// Per partition, the offset below which I1 was already checked.
    pub(crate) checked: BTreeMap<TopicPartition, i64>,
    /// Per partition, the offset below which every record is stored or dead-lettered.
    pub(crate) settled: BTreeMap<TopicPartition, i64>,
    pub steps: u64,
    pub max_buffered: usize,
    /// Steps that ended in a handler panic (the member restarts).
    pub panics: u64,
    /// The partitions an operator paused: every member's, as the database's table.
    pub operator: Arc<OperatorPauses>,
    rng: Rng,
}

impl World {
    pub fn new(config: Config) -> World {
        let clock = SimClock::default();
        let tps: Vec<TopicPartition> = (0..config.topics)
            .flat_map(|t| (0..config.partitions).map(move |p| TopicPartition::new(format!("topic{t}"), p as i32)))
            .collect();
        let cluster =
            Rc::new(RefCell::new(Cluster::new(clock.clone(), config.seed, &tps, config.members, config.cooperative)));
        let db = Rc::new(RefCell::new(Db::new(clock.clone(), config.seed)));
        let members = (0..config.members)
            .map(|m| Member {
                pipeline: None,
                heartbeat: Arc::new(Heartbeat::default()),
                broker: SimBroker { cluster: cluster.clone(), member: m },
                offsets: SimOffsets(db.clone()),
                stop: Arc::default(),
                poison: PoisonLedger::default(),
                restart_at: None,
                starts: 0,
            })
            .collect();
        let mut w = World {
            rng: Rng::new(config.seed ^ 0x0f),
            config,
            clock,
            cluster,
            db,
            members,
            produced: BTreeMap::new(),
            checked: BTreeMap::new(),
            settled: BTreeMap::new(),
            steps: 0,
            max_buffered: 0,
            panics: 0,
            operator: Arc::default(),
        };
        for m in 0..w.members.len() {
            w.start(m);
        }
        w
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.cluster.borrow().logs.keys().cloned().collect()
    }

    pub fn produce(&mut self, tp: &TopicPartition, nature: Nature) {
        let offset = self.cluster.borrow().logs[tp].len() as i64;
        self.cluster.borrow_mut().produce(tp, nature.payload(self.produced.len() as u64));
        self.produced.insert((tp.clone(), offset), nature);
    }

    /// Starts the member's consumer thread: a fresh pipeline, with its
    /// lanes, joins the group.
    pub fn start(&mut self, m: usize) {
        let c = &self.config;
        let member = &mut self.members[m];
        member.heartbeat = Arc::new(Heartbeat::default());
        member.stop = Arc::default();
        member.starts += 1;
        let seed = c.seed ^ ((m as u64) << 32) ^ member.starts;
        let lanes = SimLanes::new(
            c.lanes,
            self.db.clone(),
            member.poison.clone(),
            self.clock.clone(),
            seed,
            (c.min_latency, c.max_latency),
        );
        let pipeline =
            Pipeline::new(c.batch_size, c.batch_timeout, self.clock.clone(), member.heartbeat.clone(), lanes)
                .with_stop(member.stop.clone())
                .with_pause_floor(c.pause_floor)
                .with_operator_pauses(self.operator.clone());
        member.pipeline = Some(pipeline);
        member.restart_at = None;
        self.cluster.borrow_mut().join(m);
    }

    /// The thread ended (panic, kill): the client closes, nothing more is
    /// committed; the batches its lanes hold finish (a thread restart) or
    /// not (the process died); the supervisor starts a new one after `restart_in`.
    pub fn crash(&mut self, m: usize, restart_in: Duration) {
        if let Some(p) = self.members[m].pipeline.take() {
            let finish = self.rng.chance(0.5);
            p.into_lanes().orphan(finish);
        }
        self.members[m].restart_at = Some(self.now() + restart_in);
        self.cluster.borrow_mut().leave(m);
    }

    /// Graceful stop, as on SIGTERM: asked through its stop request, the
    /// pipeline finishes and commits at its next tick, then leaves. With the
    /// database up throughout, everything in memory must be finished.
    pub fn stop(&mut self, m: usize, restart_in: Duration) {
        let now = self.now();
        let db_works = self.db.borrow().is_up() && self.db.borrow().blip == 0.0;
        let member = &mut self.members[m];
        if let Some(p) = &mut member.pipeline {
            // Time to finish every batch a lane can hold, one after another at the longest latency.
            let batches = p.pause_at().div_ceil(self.config.batch_size) as u32 + 2;
            let budget = REVOKE_BUDGET + self.config.max_latency * batches;
            member.stop.request_at(now, now + budget);
            let ticked = p.tick(&mut member.broker, &mut member.offsets);
            // Records dropped to be read again (the database lost them) are the next owner's.
            let again = p.reading_again();
            let buffered = p.buffered();
            let lanes = p.describe();
            let held = self.in_memory_except(m, &again);
            let ok = match ticked {
                Ok(Ticked::Stopped { unstored: false }) => held == 0,
                Ok(Ticked::Stopped { unstored: true }) => !db_works,
                Ok(Ticked::Running) => false,
                Err(_) => true,
            };
            if !ok {
                let v = format!("member {m} stopped: tick said {ticked:?} with {held} records unsettled db_works={db_works} now={:?} budget={budget:?} buffered={} again={again:?}\n{lanes}\n{}", self.clock.now()-now, buffered, self.describe_short());
                self.db.borrow_mut().violations.push(v);
            }
        }
        self.crash(m, restart_in);
    }

    pub fn is_running(&self, m: usize) -> bool {
        self.members[m].pipeline.is_some()
    }

    /// One step of member `m` (restarting it first when its time came).
    pub fn step(&mut self, m: usize) {
        self.steps += 1;
        if self.members[m].restart_at.is_some_and(|t| t <= self.now()) {
            self.start(m);
        }
        let member = &mut self.members[m];
        let Some(p) = &mut member.pipeline else {
            self.clock.sleep(Duration::from_millis(10));
            return;
        };
        if p.tick(&mut member.broker, &mut member.offsets).is_err() {
            self.panics += 1;
            self.crash(m, Duration::from_millis(500));
        }
        self.cluster.borrow_mut().tick();
    }

    pub fn describe_short(&self) -> String {
        format!(
            "{:?} db up={} down_until={:?}",
            self.config,
            self.db.borrow().is_up(),
            self.db.borrow().down_until.map(|t| t.saturating_duration_since(self.now()))
        )
    }
    /// The state of every member, for a failure message.
    pub fn describe(&self) -> String {
        let cluster = self.cluster.borrow();
        let mut out = format!("{:?}\ncommitted={:?}\n", self.config, cluster.committed);
        for (m, member) in self.members.iter().enumerate() {
            out += &format!("member {m}: client {}\n", cluster.describe(m));
            out += &format!(
                "  running={} heartbeat assigned={}\n",
                member.pipeline.is_some(),
                member.heartbeat.assigned()
            );
            if let Some(p) = &member.pipeline {
                out += &format!("  {}\n", p.describe().replace('\n', "\n  "));
            }
        }
        out
    }

    /// An operator pauses `tp` (every member that holds it, now or later),
    /// or resumes it.
    pub fn operator_toggles(&mut self, tp: &TopicPartition) {
        let mut paused = self.operator.get();
        if paused.remove(tp).is_none() {
            paused.insert(tp.clone(), chrono::DateTime::UNIX_EPOCH.naive_utc());
        }
        self.operator.set(paused);
    }

    /// I3: with the faults over (and every partition resumed), steps every
    /// member until everything is done, within `limit` of simulated time.
    pub fn settle(&mut self, limit: Duration) -> Result<Duration, String> {
        self.operator.set(BTreeMap::new());
        {
            let mut c = self.cluster.borrow_mut();
            c.commit_fail = 0.0;
            c.poll_error = 0.0;
            c.rebalance_in_poll = 0.0;
            c.seek_fail = 0.0;
            let mut db = self.db.borrow_mut();
            db.up = true;
            db.down_until = None;
            db.blip = 0.0;
            db.answer_lost = 0.0;
        }
        let start = self.now();
        let mut rng = Rng::new(self.config.seed ^ 0x5e771e);
        loop {
            self.check()?;
            if self.done().is_ok() {
                return Ok(self.now() - start);
            }
            if self.now() - start > limit {
                let why = self.done().unwrap_err();
                return Err(format!("I3: not done {limit:?} after the faults stopped: {why}\n{}", self.describe()));
            }
            let m = rng.below(self.members.len() as u64) as usize;
            self.step(m);
        }
    }
}
