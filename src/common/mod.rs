//! What every part of the service uses, and nothing of theirs: time
//! ([`clock`]), the shutdown signal ([`shutdown`]), retry delays
//! ([`backoff`]), a circuit [`breaker`], locks that survive a panicking holder ([`locks`]), the
//! Prometheus registry ([`metrics`]), and the record as handlers see it
//! ([`record`]). It may use nothing else of the crate.

pub mod backoff;
pub mod breaker;
pub mod clock;
pub mod locks;
pub mod metrics;
pub mod record;
pub mod shutdown;

/// The message a caught panic carried.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
