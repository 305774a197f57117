//! Fault injection for the fault tests and drills, built only with the
//! `fault-injection` cargo feature (never in a release build): each consumer
//! module panics, as a buggy handler would, on a batch holding a record whose
//! payload contains `CRONSUMER_FAULT_PANIC_PAYLOAD`. (The outbox publisher's
//! own hook is in `market::outbox`.)

use crate::common::record::Record;
use crate::consume::handler::{Handler, HandlerContext, HandlerError};

pub const PANIC_PAYLOAD_ENV: &str = "CRONSUMER_FAULT_PANIC_PAYLOAD";

/// Wraps each module when the variable is set; returns them as they are otherwise.
pub fn wrap(modules: Vec<Box<dyn Handler>>) -> Vec<Box<dyn Handler>> {
    let Some(needle) = std::env::var(PANIC_PAYLOAD_ENV).ok().filter(|v| !v.is_empty()) else {
        return modules;
    };
    modules
        .into_iter()
        .map(|inner| Box::new(PanicOn { inner, needle: needle.clone().into_bytes() }) as Box<dyn Handler>)
        .collect()
}

struct PanicOn {
    inner: Box<dyn Handler>,
    needle: Vec<u8>,
}

impl Handler for PanicOn {
    fn topic(&self) -> &'static str {
        self.inner.topic()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn off(&self, settings: &crate::config::Settings) -> Option<String> {
        self.inner.off(settings)
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
