//! `fetch_prices` (`PRICE_FETCH_CRON`; off while `PRICE_SYMBOLS` is empty, and
//! with `KAFKA_ENABLED=false`, since no event could be published):
//! fetches each symbol's price from the provider, storing every answer in
//! `raw_responses` and each price's event in the outbox, and wakes the
//! outbox publisher. A provider that does not answer with a price fails that
//! symbol only; the run fails when no symbol got a price.

use crate::config::cron::{CronError, Schedule};
use crate::config::Settings;
use crate::market::{self, FetchError, Provider};
use crate::schedule::{Job, JobContext, JobError, JobReport};

pub struct FetchPrices;

impl Job for FetchPrices {
    fn name(&self) -> &'static str {
        "fetch_prices"
    }

    fn schedule(&self, settings: &Settings) -> Result<Schedule, CronError> {
        Ok(settings.price_fetch_cron.clone())
    }

    fn off(&self, settings: &Settings) -> Option<String> {
        if !settings.kafka_enabled {
            Some("KAFKA_ENABLED=false: its events could not be published".into())
        } else {
            settings.price_symbols.is_empty().then(|| "PRICE_SYMBOLS is empty".into())
        }
    }

    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let provider = Provider::new(&ctx.settings);
        let (mut fetched, mut failed) = (0, Vec::new());
        for symbol in &ctx.settings.price_symbols {
            if ctx.shutdown.is_triggered() {
                break;
            }
            match market::fetch(&ctx.settings, &provider, &ctx.pool, symbol) {
                Ok(_) => fetched += 1,
                Err(FetchError::Db(e)) => return Err(e.into()),
                Err(e) => failed.push(format!("{symbol}: {e}")),
            }
        }
        if fetched > 0 {
            ctx.wakers.wake(crate::market::outbox::JOB);
        }
        if fetched == 0 && !failed.is_empty() {
            return Err(JobError::Other(format!("no price fetched: {}", failed.join("; "))));
        }
        let mut details = format!("fetched={fetched} failed={}", failed.len());
        if !failed.is_empty() {
            details.push_str(&format!(" ({})", failed.join("; ")));
        }
        Ok(JobReport::new(details))
    }
}
