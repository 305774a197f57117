//! The market-data producer under faults: the broker away while prices are
//! fetched, and a publisher killed between a delivery and its marking.

use std::collections::BTreeSet;
use std::time::Duration;

use cronsumer::db::{outbox, price_events, raw_responses, Backend};

use crate::fixture::*;
use crate::support::*;

/// Answers whose price came through, fetched since the start.
fn good_answers(fx: &Fixture) -> Vec<raw_responses::RawResponse> {
    let mut all = raw_responses::recent(&mut fx.pool.get().unwrap(), 100_000).unwrap();
    all.retain(|r| r.error.is_none());
    all
}

/// `(symbol, price, raw_response_id)` of the stored events, in applying order.
fn stored_events(fx: &Fixture) -> Vec<(String, f64, String)> {
    price_events::with_raw_ids(&mut fx.pool.get().unwrap()).unwrap()
}

/// Outbox rows not published whose last attempt failed.
fn failed_attempts(fx: &Fixture) -> usize {
    let waiting = outbox::list(&mut fx.pool.get().unwrap(), false, 1000).unwrap();
    waiting.iter().filter(|r| r.last_error.is_some()).count()
}

fn pending(fx: &Fixture) -> i64 {
    outbox::pending(&mut fx.pool.get().unwrap()).unwrap()
}

/// Asserts that every answer with a price was stored as exactly one event.
fn assert_each_answer_stored_once(fx: &Fixture) -> usize {
    let answers: BTreeSet<String> = good_answers(fx).into_iter().map(|r| r.id).collect();
    let events = stored_events(fx);
    let ids: BTreeSet<String> = events.iter().map(|e| e.2.clone()).collect();
    assert_eq!(ids.len(), events.len(), "an event is stored twice: {events:?}");
    assert_eq!(ids, answers, "stored events differ from the answers with a price");
    events.len()
}

/// Prices per symbol: the provider's n-th quote of a symbol is n.
const QUOTES_PER_SYMBOL: usize = 20;

/// The broker is stopped while at least 20 fetches happen: every event is
/// published once it is back, each symbol's in fetch order, and stored once.
#[test]
fn prices_fetched_while_the_broker_is_away_are_published_in_order() {
    let _serial = serial();
    let provider = FakeProvider::start(|symbol, n| {
        if n <= QUOTES_PER_SYMBOL {
            Reply::quote(symbol, n as f64)
        } else {
            Reply::json(200, r#"{"Note": "rate limit reached for today"}"#)
        }
    });
    let extra = [
        ("PRICE_SYMBOLS", "AAPL,MSFT"),
        ("PRICE_FETCH_CRON", "* * * * * *"),
        ("PRICE_PROVIDER_URL", provider.url.as_str()),
        ("CONSUMER_STALL_TIMEOUT_MS", "4000"),
    ];
    let fx = Fixture::new("prices_fetched_while_the_broker_is_away", Backend::Sqlite, &extra);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "the first events stored", Duration::from_secs(120), || stored_events(&fx).len() >= 2);

    let mut broker = Broker::new(&fx);
    broker.stop();
    let at_stop = good_answers(&fx).len();
    // The outage lasts until a publish attempt failed: a broker back within
    // the producer's message timeout would leave nothing to retry.
    wait_running(&[&svc], "20 fetches and a failed publish while the broker is away", Duration::from_secs(90), || {
        good_answers(&fx).len() >= at_stop + 20 && failed_attempts(&fx) > 0
    });
    let fetched_during = good_answers(&fx).len() - at_stop;
    let waiting = pending(&fx);
    println!("prices: {fetched_during} fetched while the broker was away, {waiting} outbox rows waiting");
    assert!(waiting >= 10, "the outbox did not hold the events of the outage ({waiting} waiting)");
    broker.start();

    let total = 2 * QUOTES_PER_SYMBOL;
    wait_running(&[&svc], "every event published and stored", Duration::from_secs(240), || {
        pending(&fx) == 0 && stored_events(&fx).len() >= total
    });
    svc.assert_running("at the end");
    assert_eq!(assert_each_answer_stored_once(&fx), total);
    let events = stored_events(&fx);
    for symbol in ["AAPL", "MSFT"] {
        let prices: Vec<f64> = events.iter().filter(|e| e.0 == symbol).map(|e| e.1).collect();
        let fetch_order: Vec<f64> = (1..=QUOTES_PER_SYMBOL).map(|n| n as f64).collect();
        assert_eq!(prices, fetch_order, "{symbol}'s events are not in fetch order");
    }
    let rows = outbox::list(&mut fx.pool.get().unwrap(), true, 1000).unwrap();
    let retried = rows.iter().filter(|r| r.attempts > 1).count();
    println!("prices: {retried} outbox rows needed more than one attempt");
    assert!(retried > 0, "no outbox row was retried: the outage proved nothing");
    fx.report(total, events.len(), 0, 0);
}

/// A publisher killed (SIGKILL) after its first delivery and before marking
/// it: the next copy publishes the row again, and the event is stored once.
#[test]
fn publisher_killed_between_delivery_and_marking_stores_each_event_once() {
    let _serial = serial();
    let provider = FakeProvider::start(|symbol, n| Reply::quote(symbol, n as f64));
    let extra = [("PRICE_PROVIDER_URL", provider.url.as_str())];
    let fx = Fixture::new("publisher_killed_between_delivery_and_marking", Backend::Postgres, &extra);
    let killed = fx.start(
        "killed",
        &[
            ("PRICE_SYMBOLS", "AAPL"),
            ("PRICE_FETCH_CRON", "* * * * * *"),
            (cronsumer::market::outbox::KILL_AFTER_DELIVERY_ENV, "1"),
        ],
    );
    let status = killed.wait_exit(Duration::from_secs(120)).expect("the publisher did not kill itself");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "exit: {status}");
    assert!(pending(&fx) >= 1, "the delivered row was marked published before the kill");

    // The next copy fetches nothing: it only publishes the outbox and consumes.
    let next = fx.start("next", &[("PRICE_SYMBOLS", "")]);
    wait_running(&[&next], "the outbox published and every event stored", Duration::from_secs(120), || {
        pending(&fx) == 0 && stored_events(&fx).len() >= good_answers(&fx).len()
    });
    let price_topic = fx.s.topic("price-events");
    wait_running(&[&next], "every record of the price topic consumed", Duration::from_secs(60), || {
        fx.commits(&price_topic).unwrap_or(0) > stored_events(&fx).len() as i64
            && fx.commits(&price_topic).unwrap_or(0) == stored_events(&fx).len() as i64 + fx.dead()
    });
    next.assert_running("at the end");
    let stored = assert_each_answer_stored_once(&fx);
    let records = fx.commits(&price_topic).unwrap_or(0);
    let repeats = metric_sum(&next.metrics(), "cronsumer_duplicate_records_total");
    println!("publisher kill: {records} records on the topic, {stored} events stored, {repeats} repeats dead-lettered");
    assert!(records > stored as i64, "no event was published twice: the kill proved nothing");
    // Every record is accounted for: an event stored once, or a repeat dead-lettered saying so.
    let dead = fx.dead();
    assert_eq!(stored as i64 + dead, records, "records on the topic vs events stored + repeats dead-lettered");
    let reasons =
        cronsumer::db::dead_letters::list(&mut fx.pool.get().unwrap(), Some(price_topic.as_str()), 10).unwrap();
    assert!(
        reasons.iter().all(|d| d.error.starts_with("repeats the event with identity raw_response_id")),
        "{reasons:?}"
    );
    fx.report(records as usize, stored, dead as usize, 0);
}
