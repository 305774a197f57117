//! The supervisor: owns the consumer thread, and restarts it (with a fresh
//! client) when it has ended. Repeated restarts back off exponentially.
//!
//! A thread that made no poll for `CONSUMER_STALL_TIMEOUT_MS`, or whose
//! client kept failing that long (broker unreachable, authentication), still
//! holds its group membership, so no second one is started beside it: it is
//! told to stop (and `/healthz` fails meanwhile), it is restarted with a
//! fresh client once it ended, and if it has not ended after a further grace
//! ([`Verdict::Wedged`]) the process exits with status 1 for the service
//! manager to restart it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::thread::{spawn, ConsumerError, ConsumerSetup};
use crate::common::backoff::Backoff;
use crate::common::shutdown::StopRequest;
use crate::consume::heartbeat::Heartbeat;
use crate::events::{ConsumerEnded, ConsumerRestarted, Event as _, SupervisorActed};

/// Why the consumer thread was restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartCause {
    Ended(String),
    Stalled(Duration),
    /// The client kept failing (broker unreachable, authentication) for
    /// `CONSUMER_STALL_TIMEOUT_MS`: a fresh client may get through.
    ClientErrors(String),
}

impl RestartCause {
    pub fn label(&self) -> &'static str {
        match self {
            RestartCause::Ended(_) => "ended",
            RestartCause::Stalled(_) => "stalled",
            RestartCause::ClientErrors(_) => "client_errors",
        }
    }
}

/// A restart, as the web console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub at: chrono::DateTime<chrono::Utc>,
    pub cause: &'static str,
    pub detail: String,
}

/// Restarts kept for the console.
const RESTARTS_KEPT: usize = 20;

/// What [`Supervisor::check`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The thread was restarted.
    Restarted(RestartCause),
    /// The thread stalled, or its client kept failing, and it was told to
    /// stop; it is restarted once it ended.
    Stopping(RestartCause),
    /// The thread did not end within the grace after it was told to stop:
    /// only a new process helps.
    Wedged(Duration),
}

/// Least time a stalled thread is given to end before the process exits.
pub const MIN_STALL_GRACE: Duration = Duration::from_secs(30);

struct Running {
    handle: JoinHandle<Result<(), ConsumerError>>,
    stop: Arc<StopRequest>,
    heartbeat: Arc<Heartbeat>,
    started: Instant,
}

pub struct Supervisor {
    setup: ConsumerSetup,
    stall_timeout: Duration,
    running: Option<Running>,
    backoff: Backoff,
    not_before: Instant,
    restarts: u64,
    recent: VecDeque<Restart>,
    stopping: bool,
    /// When and why the running thread was told to stop.
    stopping_for: Option<(Instant, RestartCause)>,
}

/// A run that lasted this long resets the restart backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

impl Supervisor {
    pub fn new(setup: ConsumerSetup) -> Self {
        let stall_timeout = setup.settings.consumer_stall_timeout;
        Supervisor {
            setup,
            stall_timeout,
            running: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            not_before: Instant::now(),
            restarts: 0,
            recent: VecDeque::new(),
            stopping: false,
            stopping_for: None,
        }
    }

    /// Starts the consumer thread.
    pub fn start(&mut self) -> std::io::Result<()> {
        let heartbeat = Arc::new(Heartbeat::default());
        let stop = Arc::new(StopRequest::default());
        let handle = spawn(self.setup.clone(), heartbeat.clone(), stop.clone())?;
        self.running = Some(Running { handle, stop, heartbeat, started: Instant::now() });
        Ok(())
    }

    /// The current thread's heartbeat.
    pub fn heartbeat(&self) -> Option<Arc<Heartbeat>> {
        self.running.as_ref().map(|r| r.heartbeat.clone())
    }

    pub fn is_alive(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.handle.is_finished())
    }

    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The latest restarts, newest first.
    pub fn recent_restarts(&self) -> Vec<Restart> {
        self.recent.iter().rev().cloned().collect()
    }

    /// Why the thread needs a restart, if it does.
    pub fn diagnose(&self) -> Option<RestartCause> {
        let r = self.running.as_ref()?;
        if r.handle.is_finished() {
            return Some(RestartCause::Ended("thread ended".into()));
        }
        let since = r.heartbeat.since_poll().unwrap_or_else(|| r.started.elapsed());
        if since >= self.stall_timeout {
            return Some(RestartCause::Stalled(since));
        }
        // With lanes, polling goes on while one lane hangs: a stuck lane is a stuck consumer.
        if let Some((_, busy)) = r.heartbeat.stuck_lane(self.stall_timeout) {
            return Some(RestartCause::Stalled(busy));
        }
        let (_, error) = r.heartbeat.client_failing_for(self.stall_timeout)?;
        Some(RestartCause::ClientErrors(error))
    }

    /// Restarts the thread when it ended and the backoff allows; asks a
    /// stalled or failing one to stop first (see the module doc).
    pub fn check(&mut self) -> Option<Verdict> {
        if self.stopping {
            return None;
        }
        let cause = self.diagnose()?;
        if !matches!(cause, RestartCause::Ended(_)) {
            let Some((at, why)) = &self.stopping_for else {
                let detail = format!("consumer {} ({cause:?}): asking it to stop before a restart", cause.label());
                SupervisorActed { action: "stopping", detail: &detail }.emit();
                if let Some(r) = &self.running {
                    r.stop.request(Instant::now() + self.setup.settings.shutdown_timeout);
                }
                self.stopping_for = Some((Instant::now(), cause.clone()));
                return Some(Verdict::Stopping(cause));
            };
            let grace = self.stall_timeout.max(MIN_STALL_GRACE);
            if at.elapsed() >= grace {
                let detail = format!(
                    "asked to stop {} ms ago ({why:?}) and still running; exiting for a restart",
                    at.elapsed().as_millis()
                );
                SupervisorActed { action: "wedged", detail: &detail }.emit();
                return Some(Verdict::Wedged(at.elapsed()));
            }
            return Some(Verdict::Stopping(why.clone()));
        }
        if Instant::now() < self.not_before {
            return None;
        }
        let old = self.running.take()?;
        let joined = match old.handle.join() {
            Ok(Ok(())) => RestartCause::Ended("thread returned".into()),
            Ok(Err(e)) => RestartCause::Ended(e.to_string()),
            Err(p) => RestartCause::Ended(crate::common::panic_message(p.as_ref())),
        };
        let cause = self.stopping_for.take().map_or(joined, |(_, why)| why);
        if old.started.elapsed() >= HEALTHY_RUN {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        self.not_before = Instant::now() + delay;
        self.restarts += 1;
        if self.recent.len() == RESTARTS_KEPT {
            self.recent.pop_front();
        }
        let detail = format!("{cause:?}");
        ConsumerRestarted { cause: cause.label(), detail: &detail, restarts: self.restarts, not_before: delay }.emit();
        self.recent.push_back(Restart { at: chrono::Utc::now(), cause: cause.label(), detail });
        if let Err(e) = self.start() {
            SupervisorActed { action: "start_failed", detail: &e.to_string() }.emit();
        }
        Some(Verdict::Restarted(cause))
    }

    /// Asks the thread to finish its batch and stop by `by`, without
    /// waiting; no restart happens after this.
    pub fn request_stop(&mut self, by: Instant) {
        self.stopping = true;
        if let Some(r) = &self.running {
            r.stop.request(by);
        }
    }

    /// Asks the thread to finish its batch and stop by `by`, and waits for
    /// it until then (plus [`JOIN_GRACE`]). A thread still running after
    /// that is left behind: the process exits without it, and what it did
    /// not commit is consumed again.
    pub fn stop(&mut self, by: Instant) {
        self.request_stop(by);
        let Some(r) = self.running.take() else { return };
        while !r.handle.is_finished() && Instant::now() < by + JOIN_GRACE {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !r.handle.is_finished() {
            let detail = "still running at the shutdown deadline; exiting without it";
            SupervisorActed { action: "left_behind", detail }.emit();
            return;
        }
        match r.handle.join() {
            Ok(Ok(())) => {}
            // The thread said why it ended.
            Ok(Err(_)) => {}
            Err(p) => {
                let detail = format!("panicked: {}", crate::common::panic_message(p.as_ref()));
                ConsumerEnded { error: Some(&detail), unstored: false }.emit()
            }
        }
    }
}

/// How long past its deadline a stopping consumer thread is waited for.
pub const JOIN_GRACE: Duration = Duration::from_millis(500);
