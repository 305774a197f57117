//! The consumer: records from Kafka to their handlers and the database,
//! exactly once, and the offsets committed after them.
//!
//! - The seam: [`broker`] (what the pipeline asks of Kafka and the events it
//!   gets back) and [`sink`] (where records go, and the ways handling fails).
//! - [`pipeline`]: the one state machine between the poll and the commit,
//!   with its [`batcher`], its commit bookkeeping ([`offsets`]), what it
//!   knows of the stored offsets ([`positions`]) and the poison rule's
//!   memory ([`poison`]); it names no Kafka client and reads time from a
//!   clock, so the simulator drives it too.
//! - Lanes: what a lane does with a batch ([`lane`]: one transaction, or
//!   one record at a time) and where lanes run ([`workers`]: on the polling
//!   thread, or a worker thread each).
//! - The handlers' side: the contract a module implements ([`handler`]),
//!   the [`router`] by topic, [`payload`] validation helpers, and the
//!   production sink ([`db_sink`]: one transaction per batch with its
//!   offsets; [`applied`] notices a database that lost commits).
//! - The rdkafka side: [`kafka_broker`] (the seam over a `BaseConsumer`),
//!   `kafka_error` (what a failed call was) and [`topic_ids`] (a recreated topic); the [`thread`] that runs it all,
//!   its [`heartbeat`], the partitions an operator paused
//!   ([`operator_pauses`]), the [`supervisor`] that restarts it and the job that
//!   runs the supervisor ([`supervise`]).
//!
//! It may use `common`, `events`, `config`, `db`, `kafka` and `schedule`.

// What a topic's module (under `consumers/`) uses, in one place.
pub use crate::common::record::Record;
pub use handler::{Handler, HandlerContext, HandlerError};

pub mod applied;
pub(crate) mod batcher;
pub mod broker;
pub(crate) mod db_sink;
#[cfg(feature = "fault-injection")]
pub mod fault_injection;
pub mod handler;
pub mod heartbeat;
pub(crate) mod kafka_broker;
mod kafka_error;
pub mod lane;
pub(crate) mod offsets;
pub mod operator_pauses;
pub(crate) mod payload;
pub mod pipeline;
pub mod poison;
pub mod positions;
pub mod replay;
pub(crate) mod router;
pub mod sink;
pub mod supervise;
pub mod supervisor;
pub mod thread;
pub(crate) mod topic_ids;
pub mod workers;
