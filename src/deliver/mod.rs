//! Notifications to their receivers: the [`notifier`]s (a log line, or a
//! webhook behind a circuit breaker) and the [`sender`], the
//! `send_notifications` job that claims due rows, delivers them and marks
//! each once.
//!
//! It may use `common`, `events`, `config`, `db` and `schedule`.

pub mod notifier;
pub mod sender;
