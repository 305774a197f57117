//! The consumer thread's events: its Kafka client, the thread and its supervisor.

use std::time::Duration;

use super::consume::names;
use super::Event;
use crate::common::metrics;
use crate::common::record::TopicPartition;

/// The supervisor restarts the consumer thread.
pub struct ConsumerRestarted<'a> {
    pub cause: &'static str,
    pub detail: &'a str,
    pub restarts: u64,
    pub not_before: Duration,
}

impl Event for ConsumerRestarted<'_> {
    fn emit(self) {
        metrics::get().consumer_restarts.with_label_values(&[self.cause]).inc();
        log::warn!(
            "event=consumer_restarted cause={} restarts={} next_restart_not_before_ms={} detail={:?}",
            self.cause,
            self.restarts,
            self.not_before.as_millis(),
            self.detail
        );
    }
}

/// A call to the Kafka client failed (pause, resume, assign, seek, ...).
/// `serious`: the partitions are not read (or not let go) until it works.
pub struct ClientCallFailed<'a> {
    pub call: &'static str,
    pub partitions: &'a [TopicPartition],
    /// The error's kind (`unreachable`, `timeout`, `refused`, `client`) and message.
    pub kind: &'static str,
    pub error: &'a str,
    pub serious: bool,
}

impl Event for ClientCallFailed<'_> {
    fn emit(self) {
        let level = if self.serious { log::Level::Error } else { log::Level::Warn };
        let partitions = names(self.partitions);
        let (call, kind, error) = (self.call, self.kind, self.error);
        log::log!(level, "event=client_call_failed call={call} partitions={partitions} kind={kind} error={error:?}");
    }
}

/// Something the consumer needs could not be read, and it goes on without
/// it (`what`: the stored offsets, the topics' ids).
pub struct ReadFailed<'a> {
    pub what: &'static str,
    pub then: &'static str,
    pub error: &'a str,
}

impl Event for ReadFailed<'_> {
    fn emit(self) {
        log::warn!("event=read_failed what={:?} then={:?} error={:?}", self.what, self.then, self.error);
    }
}

/// A poll returned a client error (broker unreachable, authentication).
pub struct PollFailed<'a> {
    pub kind: &'static str,
    pub error: &'a str,
}

impl Event for PollFailed<'_> {
    fn emit(self) {
        log::warn!("event=poll_failed kind={} error={:?}", self.kind, self.error);
    }
}

/// The client subscribed to the topics as a member of the group.
pub struct Subscribed<'a> {
    pub group: &'a str,
    pub topics: &'a [String],
}

impl Event for Subscribed<'_> {
    fn emit(self) {
        log::info!("event=subscribed group={} topics={}", self.group, self.topics.join(","));
    }
}

/// A topic's id differs from the one seen before: it was deleted and
/// recreated (noticed while running, or at an assignment).
pub struct TopicIdChanged<'a> {
    pub topic: &'a str,
    pub before: &'a str,
    pub now: &'a str,
}

impl Event for TopicIdChanged<'_> {
    fn emit(self) {
        log::warn!("event=topic_id_changed topic={} id_before={} id_now={}", self.topic, self.before, self.now);
    }
}

/// The consumer thread ended: stopped as asked (`unstored`: records left in
/// memory at the deadline, read again later), or with an error.
pub struct ConsumerEnded<'a> {
    pub error: Option<&'a str>,
    pub unstored: bool,
}

impl Event for ConsumerEnded<'_> {
    fn emit(self) {
        match self.error {
            Some(e) => log::error!("event=consumer_ended error={e:?}"),
            None if self.unstored => {
                log::warn!("event=consumer_ended unstored=true why=\"stop deadline reached: they are consumed again\"")
            }
            None => log::info!("event=consumer_ended unstored=false"),
        }
    }
}

/// The supervisor acts on a consumer thread that stalled or whose client
/// kept failing: it is asked to stop (`stopping`), or it did not stop in
/// time and the process exits for its service manager (`wedged`), or the
/// thread could not be started or joined.
pub struct SupervisorActed<'a> {
    pub action: &'static str,
    pub detail: &'a str,
}

impl Event for SupervisorActed<'_> {
    fn emit(self) {
        log::error!("event=supervisor_acted action={} detail={:?}", self.action, self.detail);
    }
}
