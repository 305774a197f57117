//! Consumer modules, one per topic: the list below is the single source of
//! truth for the topics cronsumer subscribes to. To handle a new topic, add a
//! file next to this one implementing `cronsumer::consume::handler::Handler` and one
//! line to `registry()`.

pub mod notifications;
pub mod predictions;
pub mod price_events;

use crate::consume::Handler;

/// Every consumer module; the service subscribes to each one's topic.
pub fn registry() -> Vec<Box<dyn Handler>> {
    vec![
        Box::new(notifications::Notifications),
        Box::new(price_events::PriceEvents),
        Box::new(predictions::Predictions::default()),
    ]
}
