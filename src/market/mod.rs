//! The market-data producer. A fetch asks the provider for a symbol's price
//! and stores, in one transaction, the answer in `raw_responses` and (when
//! it held a price) the price event in the `outbox`; the outbox publisher
//! ([`crate::market::outbox`]) takes the event to Kafka, keyed by symbol. Events are
//! `{"symbol", "price", "timestamp", "source", "raw_response_id"}`, read back
//! by the price-events module.
//!
//! Inside: the fetch (here), the [`Provider`], the [`outbox`] publisher, and
//! the jobs that run them ([`fetch_prices`], [`publish_outbox`]). It may use
//! `common`, `events`, `config`, `db`, `kafka` and `schedule`.

pub(crate) mod fetch_prices;
pub mod outbox;
mod provider;
pub mod publish_outbox;

use chrono::{NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

pub use provider::{Failure, Provider, BODY_KEPT};

use crate::config::Settings;
use crate::db::raw_responses::{self, RawResponse};
use crate::db::{self, DbConnection, DbError, Pool};
use crate::events::{Event as _, PriceFetched};

/// The topic price events go to (before `KAFKA_TOPIC_PREFIX` and
/// `KAFKA_TOPIC_PRICE_EVENTS`), the one the price-events module reads.
pub const TOPIC: &str = "price-events";

/// The provider's name in `raw_responses`.
pub const PROVIDER: &str = "alpha_vantage";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceEvent {
    pub symbol: String,
    pub price: f64,
    /// When the price was fetched (RFC 3339, UTC).
    pub timestamp: String,
    pub source: String,
    pub raw_response_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    BadSymbol(String),
    #[error("{message}")]
    Provider { kind: Failure, message: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

pub use crate::config::symbol;

fn event(settings: &Settings, symbol: &str, price: f64, fetched_at: NaiveDateTime, id: &str) -> PriceEvent {
    PriceEvent {
        symbol: symbol.to_string(),
        price,
        timestamp: Utc.from_utc_datetime(&fetched_at).to_rfc3339_opts(SecondsFormat::Millis, true),
        source: settings.price_source.clone(),
        raw_response_id: id.to_string(),
    }
}

/// Fetches `symbol` now: stores the answer and, with a price, enqueues its
/// event (one transaction; with `KAFKA_ENABLED=false` no event is enqueued,
/// since nothing would publish it). The caller wakes the outbox publisher.
/// No database connection is held during the provider's call: one is
/// taken from `pool` once the answer is in.
pub fn fetch(
    settings: &Settings,
    provider: &Provider,
    pool: &Pool,
    symbol_text: &str,
) -> Result<PriceEvent, FetchError> {
    let symbol = symbol(symbol_text).map_err(FetchError::BadSymbol)?;
    let answer = provider.fetch(&symbol);
    let conn = &mut db::checkout(pool, None)?;
    let fetched_at = db::now();
    let id = uuid::Uuid::new_v4().to_string();
    let row = RawResponse {
        id: id.clone(),
        provider: PROVIDER.into(),
        symbol: symbol.clone(),
        http_status: answer.http_status.map(i32::from),
        // PostgreSQL text cannot hold NUL.
        body: answer.body.map(|b| b.replace('\0', "\u{fffd}")),
        error: answer.quote.as_ref().err().map(|(_, why)| why.clone()),
        fetched_at,
    };
    let event = answer.quote.as_ref().ok().map(|q| event(settings, &symbol, q.price, fetched_at, &id));
    db::transaction(conn, false, |c| {
        raw_responses::insert(c, &row)?;
        if let Some(e) = event.as_ref().filter(|_| settings.kafka_enabled) {
            let payload = serde_json::to_string(e).unwrap_or_default();
            db::outbox::enqueue(c, &settings.topic(TOPIC), &e.symbol, &payload)?;
        }
        Ok::<_, DbError>(())
    })?;
    let failure = answer.quote.as_ref().err();
    PriceFetched { symbol: &symbol, failure: failure.map(|(k, why)| (k.as_str(), why.as_str())) }.emit();
    match (event, answer.quote) {
        (Some(e), _) => Ok(e),
        (None, Err((kind, message))) => Err(FetchError::Provider { kind, message }),
        (None, Ok(_)) => unreachable!("a quote makes an event"),
    }
}

/// The outcome of `symbol`'s latest fetch within `max_age`, read back from
/// its stored answer: its event, or why it held none (a failure is served
/// from the cache too, so that asking again does not spend provider calls).
pub fn cached(
    settings: &Settings,
    conn: &mut DbConnection,
    symbol: &str,
    max_age: std::time::Duration,
) -> Result<Option<Result<PriceEvent, FetchError>>, DbError> {
    if max_age.is_zero() {
        return Ok(None);
    }
    let since = db::now() - chrono::Duration::from_std(max_age).unwrap_or_default();
    let Some(row) = raw_responses::latest(conn, symbol, since)? else {
        return Ok(None);
    };
    let answer = match row.http_status {
        Some(status) => provider::parse(status as u16, row.body.as_deref().unwrap_or_default(), symbol),
        None => Err((Failure::Unreachable, row.error.clone().unwrap_or_default())),
    };
    Ok(Some(
        answer
            .map(|q| event(settings, symbol, q.price, row.fetched_at, &row.id))
            .map_err(|(kind, message)| FetchError::Provider { kind, message }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_upper_cased_and_checked() {
        assert_eq!(symbol(" brk.b "), Ok("BRK.B".into()));
        assert!(symbol("").is_err());
        assert!(symbol("AAPL&apikey=x").is_err());
        assert!(symbol(&"A".repeat(17)).is_err());
    }
}
