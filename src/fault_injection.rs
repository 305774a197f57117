//! Fault injection for the fault tests and drills, built only with the
//! `fault-injection` cargo feature (never in a release build): each consumer
//! module panics, as a buggy handler would, on a batch holding a record whose
//! payload contains `CRONSUMER_FAULT_PANIC_PAYLOAD`; and the outbox publisher
//! can die between a delivery and its marking.

use crate::handler::{Consumer, HandlerContext, HandlerError};
use crate::record::Record;

pub const PANIC_PAYLOAD_ENV: &str = "CRONSUMER_FAULT_PANIC_PAYLOAD";

/// Wraps each module when the variable is set; returns them as they are otherwise.
pub fn wrap(modules: Vec<Box<dyn Consumer>>) -> Vec<Box<dyn Consumer>> {
    let Some(needle) = std::env::var(PANIC_PAYLOAD_ENV).ok().filter(|v| !v.is_empty()) else {
        return modules;
    };
    modules
        .into_iter()
        .map(|inner| Box::new(PanicOn { inner, needle: needle.clone().into_bytes() }) as Box<dyn Consumer>)
        .collect()
}

struct PanicOn {
    inner: Box<dyn Consumer>,
    needle: Vec<u8>,
}

impl Consumer for PanicOn {
    fn topic(&self) -> &'static str {
        self.inner.topic()
    }

    fn handle(&self, records: &[Record], ctx: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        let n = &self.needle;
        let hit = records.iter().find(|r| r.payload.as_deref().is_some_and(|p| p.windows(n.len()).any(|w| w == n)));
        if let Some(r) = hit {
            panic!("fault injection ({PANIC_PAYLOAD_ENV}) at {}", r.position());
        }
        self.inner.handle(records, ctx)
    }
}

/// Set to `1`: the outbox publisher kills its own process (SIGKILL) after
/// its first delivered wave, before marking the rows published.
pub const KILL_AFTER_DELIVERY_ENV: &str = "CRONSUMER_FAULT_KILL_AFTER_DELIVERY";

/// Called by the publisher between a wave's delivery and its marking.
pub fn after_delivery(delivered: usize) {
    if delivered > 0 && std::env::var(KILL_AFTER_DELIVERY_ENV).is_ok_and(|v| v == "1") {
        log::warn!("fault injection ({KILL_AFTER_DELIVERY_ENV}): SIGKILL after {delivered} delivered row(s)");
        let _ = std::process::Command::new("kill").args(["-9", &std::process::id().to_string()]).status();
    }
}
