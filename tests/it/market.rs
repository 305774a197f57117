//! The market-data producer against a local provider over real HTTP, the
//! real broker and both databases: a fetch stores the provider's answer and
//! publishes one event, which the price-events module stores once with its
//! `raw_response_id`; non-answers are stored with their error and publish
//! nothing; the moving average crosses its window; the API answers 200, 400
//! and 502; `PRICE_SYMBOLS` makes events flow end to end.

use std::sync::Arc;
use std::time::Duration;

use cronsumer::config::Settings;
use cronsumer::db::{outbox, price_events, price_stats, raw_responses, Backend, Pool};
use cronsumer::kafka::producer::RecordProducer;
use cronsumer::market::publish_outbox::PublishOutbox;
use cronsumer::market::{self, Failure, FetchError, Provider};
use cronsumer::schedule::{RunOutcome, Trigger};

use crate::consumer::Running;
use crate::support::*;

fn market_settings(tdb: &TestDb, provider: &FakeProvider, extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![("PRICE_PROVIDER_URL", provider.url.as_str()), ("PRICE_PROVIDER_API_KEY", "test-key-1234")];
    vars.extend_from_slice(extra);
    settings(&tdb.url, &unique("mkt"), &vars)
}

fn conn(pool: &Pool) -> cronsumer::db::Conn {
    pool.get().unwrap()
}

/// Publishes the outbox once, in this process, as `publish_outbox` does.
fn publish(s: &Settings, pool: &Pool) -> RunOutcome {
    runner(Arc::new(PublishOutbox::default()), job_context(s, pool)).run(Trigger::Manual)
}

fn fetch_stores_the_answer_and_publishes_one_event(backend: Backend) {
    let provider = FakeProvider::start(|symbol, n| Reply::quote(symbol, 100.0 + n as f64));
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = market_settings(&tdb, &provider, &[]);
    let _topics = TestTopics::registry(&s, 2);

    let event = market::fetch(&s, &Provider::new(&s), &pool, " aapl").unwrap();
    assert_eq!((event.symbol.as_str(), event.price, event.source.as_str()), ("AAPL", 101.0, "alpha_vantage"));
    assert_eq!(provider.calls(), vec!["AAPL"]);
    let raw = raw_responses::recent(&mut conn(&pool), 10).unwrap();
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert_eq!(raw[0].id, event.raw_response_id);
    assert_eq!((raw[0].http_status, raw[0].error.as_deref()), (Some(200), None));
    assert!(raw[0].body.as_deref().unwrap_or_default().contains("Global Quote"), "{raw:?}");
    let rows = outbox::list(&mut conn(&pool), true, 10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].topic.as_str(), rows[0].key.as_str()), (s.topic("price-events").as_str(), "AAPL"));
    assert_eq!(serde_json::from_str::<market::PriceEvent>(&rows[0].payload).unwrap(), event);

    match publish(&s, &pool) {
        RunOutcome::Ok(r) => assert_eq!(r.details, "published=1"),
        other => panic!("publish_outbox: {other:?}"),
    }
    assert_eq!(outbox::pending(&mut conn(&pool)).unwrap(), 0);
    assert!(outbox::list(&mut conn(&pool), true, 10).unwrap()[0].published_at.is_some());

    let run = Running::start(&s, &pool, vec![]);
    wait_for("the event stored", Duration::from_secs(60), || price_events::count(&mut conn(&pool)).unwrap() >= 1);
    run.stop();
    let stored = price_events::with_raw_ids(&mut conn(&pool)).unwrap();
    assert_eq!(stored, vec![("AAPL".to_string(), 101.0, event.raw_response_id.clone())]);
}
both_backends!(fetch_stores_the_answer_and_publishes_one_event);

fn non_answers_are_stored_with_their_error_and_publish_nothing(backend: Backend) {
    let provider = FakeProvider::start(|symbol, _| match symbol {
        "NOTE" => Reply::json(
            200,
            r#"{"Note": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day."}"#,
        ),
        "INFO" => Reply::json(200, r#"{"Information": "Please subscribe to any of the premium plans."}"#),
        "ERR" => Reply::json(200, r#"{"Error Message": "Invalid API call. Please retry or visit the documentation."}"#),
        "HTML" => Reply::json(200, "<html><head><title>502 Bad Gateway</title></head></html>"),
        "EMPTY" => Reply::json(200, r#"{"Global Quote": {}}"#),
        "DOWN" => Reply::json(503, r#"{"error": "maintenance"}"#),
        "SLOW" => Reply { delay: Duration::from_secs(3), ..Reply::quote("SLOW", 1.0) },
        other => Reply::quote(other, 1.0),
    });
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = market_settings(&tdb, &provider, &[("PRICE_PROVIDER_TIMEOUT_MS", "500")]);
    let closed = settings(&tdb.url, &unique("mkt"), &[("PRICE_PROVIDER_URL", "http://127.0.0.1:1")]);
    let cases = [
        (&s, "NOTE", Failure::RateLimited),
        (&s, "INFO", Failure::RateLimited),
        (&s, "ERR", Failure::ProviderError),
        (&s, "HTML", Failure::NotJson),
        (&s, "EMPTY", Failure::EmptyQuote),
        (&s, "DOWN", Failure::HttpStatus),
        (&s, "SLOW", Failure::Timeout),
        (&closed, "AAPL", Failure::Unreachable),
    ];
    for (s, symbol, want) in cases {
        match market::fetch(s, &Provider::new(s), &pool, symbol) {
            Err(FetchError::Provider { kind, message }) => {
                assert_eq!(kind, want, "{symbol}: {message}");
                assert!(!message.contains("test-key-1234"), "{symbol}: the API key leaked: {message}");
            }
            other => panic!("{symbol}: expected a {want:?} failure, got {other:?}"),
        }
    }
    let raw = raw_responses::recent(&mut conn(&pool), 20).unwrap();
    assert_eq!(raw.len(), cases.len(), "one stored answer per fetch: {raw:?}");
    for r in &raw {
        assert!(r.error.as_deref().is_some_and(|e| !e.is_empty()), "stored without its error: {r:?}");
        let answered = !matches!(r.symbol.as_str(), "SLOW" | "AAPL");
        assert_eq!(r.http_status.is_some(), answered, "{r:?}");
    }
    assert!(outbox::list(&mut conn(&pool), true, 10).unwrap().is_empty(), "a non-answer enqueued an event");
}
both_backends!(non_answers_are_stored_with_their_error_and_publish_nothing);

fn price(symbol: &str, price: f64, id: &str) -> Vec<u8> {
    format!(
        r#"{{"symbol":"{symbol}","price":{price},"timestamp":1795428000,"source":"test","raw_response_id":"{id}"}}"#
    )
    .into_bytes()
}

/// Produces the events keyed by symbol (one partition each, in order).
fn produce_prices(s: &Settings, events: &[(&str, f64, &str)]) {
    let topic = s.topic("price-events");
    let mut p = RecordProducer::new(s).unwrap();
    for (symbol, value, id) in events {
        p.send(&topic, Some(symbol.as_bytes()), &price(symbol, *value, id)).unwrap();
    }
    assert_eq!(p.finish(&topic).unwrap(), events.len() as u64);
}

fn moving_average_crosses_its_window_and_a_repeated_event_counts_once(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("sma"), &[("PRICE_SMA_WINDOW", "3")]);
    let _topics = TestTopics::registry(&s, 2);
    let stats = |symbol: &str| price_stats::of(&mut conn(&pool), symbol).unwrap();
    let run = Running::start(&s, &pool, vec![]);

    produce_prices(&s, &[("X", 1.0, "r1"), ("X", 2.0, "r2")]);
    wait_for("2 events of X", Duration::from_secs(60), || stats("X").is_some_and(|st| st.events == 2));
    let st = stats("X").unwrap();
    assert_eq!((st.moving_average, st.moving_average_window), (Some(1.5), Some(3)), "fewer prices than the window");

    produce_prices(&s, &[("X", 3.0, "r3"), ("X", 4.0, "r4"), ("Y", 10.0, "y1"), ("X", 5.0, "r5")]);
    wait_for("5 events of X", Duration::from_secs(60), || stats("X").is_some_and(|st| st.events == 5));
    assert_eq!(stats("X").unwrap().moving_average, Some(4.0), "the last 3 of 1..=5");
    assert_eq!(stats("Y").unwrap().moving_average, Some(10.0));

    // An outbox re-publishes r4 and r5 (a crash between delivery and marking), then a new price.
    produce_prices(&s, &[("X", 4.0, "r4"), ("X", 5.0, "r5"), ("X", 6.0, "r6")]);
    wait_for("6 events of X", Duration::from_secs(60), || stats("X").is_some_and(|st| st.events == 6));
    wait_for("all 9 records handled", Duration::from_secs(60), || run.heartbeat.records() >= 9);
    run.stop();
    assert_eq!(stats("X").unwrap().events, 6, "a repeated event was counted twice");
    assert_eq!(stats("X").unwrap().moving_average, Some(5.0), "the last 3 of 1..=6");
    let stored = price_events::with_raw_ids(&mut conn(&pool)).unwrap();
    let ids = |symbol: &str| -> Vec<String> { stored.iter().filter(|r| r.0 == symbol).map(|r| r.2.clone()).collect() };
    assert_eq!(ids("X"), ["r1", "r2", "r3", "r4", "r5", "r6"].map(String::from).to_vec(), "X in order, once each");
    assert_eq!(ids("Y"), vec!["y1".to_string()]);
    let dead = cronsumer::db::dead_letters::list(&mut conn(&pool), None, 10).unwrap();
    let mut repeated: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    repeated.sort();
    assert_eq!(
        repeated,
        ["r4", "r5"].map(|id| format!(
            "repeats the event with identity raw_response_id {id}, stored already: not stored again"
        )),
        "each repeat is dead-lettered, saying so"
    );
}
both_backends!(moving_average_crosses_its_window_and_a_repeated_event_counts_once);

/// `PRICE_SYMBOLS=AAPL,MSFT` with the local provider: events flow from the
/// provider to `price_events` with their moving averages, and the API
/// answers 200, 400 and 502.
#[test]
fn symbols_flow_end_to_end_and_the_api_answers() {
    let provider = FakeProvider::start(|symbol, n| match symbol {
        "NOPE" => Reply::json(200, r#"{"Global Quote": {}}"#),
        "DOWN" => Reply::json(503, "{}"),
        other => Reply::quote(other, n as f64),
    });
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    let extra = [
        ("PRICE_SYMBOLS", "AAPL,MSFT"),
        ("PRICE_FETCH_CRON", "* * * * * *"),
        ("PRICE_SMA_WINDOW", "3"),
        ("PRICE_CACHE_SECONDS", "30"),
    ];
    let s = market_settings(&tdb, &provider, &extra);
    let _topics = TestTopics::registry(&s, 2);
    let svc = Service::start(&s, &tdb.url, &[]);
    let events_of = |symbol: &str| -> Vec<f64> {
        let rows = price_events::with_raw_ids(&mut conn(&pool)).unwrap();
        rows.into_iter().filter(|r| r.0 == symbol).map(|r| r.1).collect()
    };
    svc.wait_for("4 events of each symbol", Duration::from_secs(120), || {
        events_of("AAPL").len() >= 4 && events_of("MSFT").len() >= 4
    });
    for symbol in ["AAPL", "MSFT"] {
        // The provider's n-th answer for a symbol is n: stored in fetch order.
        let prices = events_of(symbol);
        let expected: Vec<f64> = (1..=prices.len()).map(|n| n as f64).collect();
        assert_eq!(prices, expected, "{symbol}'s events out of order or missing");
        svc.wait_for(&format!("{symbol}'s moving average"), Duration::from_secs(30), || {
            let st = price_stats::of(&mut conn(&pool), symbol).unwrap().unwrap();
            let prices = events_of(symbol);
            let last: Vec<f64> = prices.iter().rev().take(3).copied().collect();
            st.events as usize == prices.len()
                && st.moving_average == Some(last.iter().sum::<f64>() / last.len() as f64)
        });
    }
    svc.wait_for("the moving average in /metrics", Duration::from_secs(30), || {
        metric(&svc.metrics(), r#"cronsumer_price_moving_average{symbol="AAPL"}"#).is_some()
    });

    let get = |symbol: &str| -> (u16, serde_json::Value) {
        let (status, body) = svc.get(&format!("/v1/prices/latest?symbol={symbol}")).expect("the API answers");
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{symbol}: {e}: {body}")))
    };
    let (status, aapl) = get("AAPL");
    assert_eq!(status, 200, "{aapl}");
    assert_eq!((aapl["symbol"].as_str(), aapl["cached"].as_bool()), (Some("AAPL"), Some(true)), "{aapl}");
    assert!(aapl["raw_response_id"].as_str().is_some_and(|id| id.len() == 36), "{aapl}");
    assert_eq!(aapl["moving_average"]["window"], 3, "{aapl}");
    assert!(aapl["moving_average"]["value"].is_f64(), "{aapl}");

    let (status, ibm) = get("ibm");
    assert_eq!((status, ibm["cached"].as_bool(), ibm["price"].as_f64()), (200, Some(false), Some(1.0)), "{ibm}");
    let (_, again) = get("IBM");
    assert_eq!((again["cached"].as_bool(), &again["raw_response_id"]), (Some(true), &ibm["raw_response_id"]));
    assert_eq!(provider.calls().iter().filter(|c| *c == "IBM").count(), 1, "a cached answer called the provider");
    let ibm_id = ibm["raw_response_id"].as_str().unwrap().to_string();
    svc.wait_for("IBM's event stored", Duration::from_secs(60), || {
        price_events::with_raw_ids(&mut conn(&pool)).unwrap().iter().any(|r| r.2 == ibm_id)
    });

    for (path, want) in [("a$b", 400), ("NOPE", 400), ("DOWN", 502)] {
        let (status, body) = get(path);
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    }
    assert!(get("DOWN").1["error"].as_str().unwrap().contains("HTTP 503"));
    let (status, _) = svc.get("/v1/prices/latest").unwrap();
    assert_eq!(status, 400, "no symbol");
    svc.assert_running("at the end");
}

/// 32 clients ask for prices while the provider takes 8 s to answer. The
/// consumer keeps its database connections: 200 notifications are stored
/// before any of those requests is answered with a price. A symbol being
/// fetched is fetched once for all who ask; past the bound of provider
/// calls at once the API answers 429 with `Retry-After` at once; the
/// database is never said to be away.
#[test]
fn clients_of_a_slow_provider_cannot_starve_the_consumer() {
    use std::sync::Mutex;
    let provider =
        FakeProvider::start(|symbol, n| Reply { delay: Duration::from_secs(8), ..Reply::quote(symbol, n as f64) });
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    let extra =
        [("PRICE_PROVIDER_TIMEOUT_MS", "20000"), ("PRICE_CACHE_SECONDS", "0"), ("CONSUMER_BATCH_TIMEOUT_MS", "100")];
    let s = market_settings(&tdb, &provider, &extra);
    let (_topics, topic) = registry_topics(&s, 2);
    let svc = Service::start(&s, &tdb.url, &[]);
    svc.wait_for("partitions assigned", Duration::from_secs(60), || svc.assigned() > 0.0);

    // Each answer: the symbol, the status, the head and the body.
    type Answers = Arc<Mutex<Vec<(String, u16, String, String)>>>;
    let answers: Answers = Arc::default();
    let symbols: Vec<String> = (0..24).map(|i| format!("S{i:02}")).chain((0..8).map(|_| "SAME".to_string())).collect();
    let clients: Vec<_> = symbols
        .into_iter()
        .map(|symbol| {
            let (addr, answers) = (svc.http.clone(), answers.clone());
            std::thread::spawn(move || {
                let path = format!("/v1/prices/latest?symbol={symbol}");
                let (status, head, body) = request(&addr, "GET", &path, &[], "").expect("the API answers");
                answers.lock().unwrap().push((symbol, status, head, body));
            })
        })
        .collect();
    svc.wait_for("the provider busy with its calls", Duration::from_secs(10), || provider.calls().len() >= 4);
    let priced = || answers.lock().unwrap().iter().filter(|a| a.1 == 200).count();
    produce(&s, &topic, &(0..200).map(notification).collect::<Vec<_>>());
    svc.wait_for("200 notifications stored", Duration::from_secs(60), || count_notifications(&pool) == 200);
    assert_eq!(priced(), 0, "the notifications waited for the provider's answers");
    for c in clients {
        c.join().unwrap();
    }

    let answers = answers.lock().unwrap();
    let calls = provider.calls();
    assert!(calls.len() <= 4, "provider calls at once are bounded: {calls:?}");
    for (symbol, status, head, body) in answers.iter() {
        match status {
            200 => assert!(calls.contains(symbol), "{symbol}: {body}"),
            429 => assert!(head.to_ascii_lowercase().contains("retry-after: 20"), "{symbol}: {head}"),
            other => panic!("{symbol}: {other} {body}"),
        }
    }
    assert!(answers.iter().filter(|a| a.1 == 200).count() >= 1, "some symbols were fetched");
    let same: Vec<_> = answers.iter().filter(|a| a.0 == "SAME").collect();
    assert_eq!(calls.iter().filter(|c| *c == "SAME").count().max(1), 1, "SAME fetched once for its 8 clients");
    assert!(same.windows(2).all(|w| (w[0].1, &w[0].3) == (w[1].1, &w[1].3)), "SAME answered alike: {same:?}");
    svc.assert_running("at the end");
}

/// A publisher run whose lease another copy took sends and marks nothing
/// more: its rows wait for the lease's new holder, which sends each once.
fn a_publisher_that_lost_its_lease_sends_and_marks_nothing(backend: Backend) {
    use cronsumer::db::job_leases;
    use cronsumer::market::outbox::{Fence, PublishError, Publisher, JOB};
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let s = settings(&tdb.url, &unique("fence"), &[]);
    let (_topics, _) = registry_topics(&s, 2);
    let topic = s.topic(market::TOPIC);
    for (i, symbol) in ["AAPL", "MSFT", "AAPL"].iter().enumerate() {
        outbox::enqueue(&mut conn(&pool), &topic, symbol, &format!(r#"{{"n": {i}}}"#)).unwrap();
    }
    // Copy A's run took the lease; it expired and copy B took it (a higher token).
    let a = job_leases::acquire(&mut conn(&pool), JOB, "copy-a", Duration::from_millis(300)).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let b = job_leases::acquire(&mut conn(&pool), JOB, "copy-b", Duration::from_secs(60)).unwrap().unwrap();
    assert!(b.token > a.token);
    let ctx = job_context(&s, &pool);
    ctx.leases.insert(a);
    let fence: Fence<'_> = &|c, write| Ok(ctx.fenced_write(JOB, c, write)?.is_some());
    let run = Publisher::default().run(&s, &mut conn(&pool), fence, || false);
    assert!(matches!(run, Err(PublishError::LeaseLost)), "{run:?}");
    assert_eq!(outbox::pending(&mut conn(&pool)).unwrap(), 3, "nothing marked");
    assert_eq!(records_in(&s, &topic, 2), 0, "nothing sent");
}
both_backends!(a_publisher_that_lost_its_lease_sends_and_marks_nothing);
