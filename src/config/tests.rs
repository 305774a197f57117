//! The settings' parsing, checks and descriptions.

use super::*;

fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
    load(pairs).unwrap_err().problems.iter().map(|p| p.to_string()).collect()
}

#[test]
fn defaults_are_valid_and_documented() {
    let s = load(&[]).unwrap();
    assert_eq!(s.kafka_bootstrap_servers, "localhost:9092");
    assert_eq!(s.kafka_group_id, "cronsumer");
    assert!(s.kafka_enabled);
    assert_eq!(s.kafka_auto_offset_reset, OffsetReset::Earliest);
    assert!(!s.kafka_auto_create_topics);
    assert_eq!(s.kafka_connect_max_retries, 5);
    assert_eq!(s.kafka_producer_compression, "lz4");
    assert_eq!(load(&[("KAFKA_PRODUCER_COMPRESSION", "snappy")]).unwrap().kafka_producer_compression, "snappy");
    assert!(problems(&[("KAFKA_PRODUCER_COMPRESSION", "brotli")])[0].contains("KAFKA_PRODUCER_COMPRESSION"));
    assert_eq!(s.consumer_batch_size, 25);
    assert_eq!(s.consumer_batch_timeout, Duration::from_millis(5000));
    assert_eq!(s.consumer_stall_timeout, Duration::from_millis(60000));
    assert_eq!(s.consumer_max_record_bytes, 1_048_576);
    assert_eq!(s.database_url, "./data/cronsumer.db");
    assert_eq!(s.database_pool_size, 8);
    assert_eq!(s.notifications_cron.as_str(), "*/30 * * * * *");
    assert_eq!(s.notifications_max_attempts, 5);
    assert_eq!(s.notifier, NotifierKind::Log);
    assert_eq!(s.retention_days, 7);
    assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(s.shutdown_timeout, Duration::from_millis(10000));
    // every default shows up in `cronsumer config`
    let described: Vec<String> = s.describe().into_iter().map(|(k, _)| k).collect();
    for d in DECLARED {
        assert!(described.iter().any(|n| n == d.var), "{} missing from describe()", d.var);
    }
}

#[test]
fn unparsable_number_names_variable_value_and_range() {
    assert_eq!(
        problems(&[("CONSUMER_BATCH_SIZE", "zero")]),
        vec![r#"invalid setting CONSUMER_BATCH_SIZE="zero": expected a whole number from 1 to 100000"#]
    );
    assert_eq!(problems(&[("CONSUMER_BATCH_SIZE", "0")]).len(), 1);
    assert_eq!(problems(&[("CONSUMER_BATCH_TIMEOUT_MS", "-5")]).len(), 1);
    assert_eq!(problems(&[("DATABASE_POOL_SIZE", "1.5")]).len(), 1);
}

#[test]
fn every_problem_is_reported_at_once() {
    let p = problems(&[
        ("CONSUMER_BATCH_SIZE", "x"),
        ("NOTIFIER", "carrier-pigeon"),
        ("KAFKA_ENABLED", "maybe"),
        ("HTTP_ADDR", "localhost"),
    ]);
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p.iter().any(|l| l.contains("NOTIFIER=\"carrier-pigeon\": expected one of log, webhook")));
    assert!(p.iter().any(|l| l.contains("KAFKA_ENABLED=\"maybe\": expected true or false")));
    assert!(p.iter().any(|l| l.contains("HTTP_ADDR=\"localhost\"")));
}

#[test]
fn unknown_enum_values_are_errors() {
    assert_eq!(problems(&[("KAFKA_AUTO_OFFSET_RESET", "smallest")]).len(), 1);
    assert_eq!(problems(&[("KAFKA_SECURITY_PROTOCOL", "TLS")]).len(), 1);
    assert_eq!(problems(&[("KAFKA_SASL_MECHANISM", "MAGIC")]).len(), 1);
    assert_eq!(load(&[("KAFKA_AUTO_OFFSET_RESET", "Latest")]).unwrap().kafka_auto_offset_reset, OffsetReset::Latest);
}

#[test]
fn cron_must_have_six_fields_and_parse() {
    let p = problems(&[("NOTIFICATIONS_CRON", "*/5 * * * *")]);
    assert!(p[0].starts_with("invalid setting NOTIFICATIONS_CRON=\"*/5 * * * *\""), "{p:?}");
    assert!(p[0].contains("it has 5 fields"));
    assert_eq!(problems(&[("NOTIFICATIONS_CRON", "61 * * * * *")]).len(), 1);
    assert!(load(&[("NOTIFICATIONS_CRON", "0 */2 * * * *")]).is_ok());
}

#[test]
fn webhook_needs_a_url() {
    let p = problems(&[("NOTIFIER", "webhook")]);
    assert!(p[0].contains("NOTIFY_WEBHOOK_URL") && p[0].contains("required when NOTIFIER=webhook"));
    assert_eq!(problems(&[("NOTIFIER", "webhook"), ("NOTIFY_WEBHOOK_URL", "ftp://x")]).len(), 1);
    assert!(load(&[("NOTIFIER", "webhook"), ("NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9/hook")]).is_ok());
}

#[test]
fn lanes_default_by_backend_and_stay_below_the_pool() {
    let pg = [("DATABASE_URL", "postgres://u@127.0.0.1:5432/db")];
    assert_eq!(load(&pg).unwrap().consumer_lanes(), 4);
    assert_eq!(load(&[pg[0], ("DATABASE_POOL_SIZE", "4")]).unwrap().consumer_lanes(), 2, "half the pool");
    assert_eq!(load(&[pg[0], ("DATABASE_POOL_SIZE", "1")]).unwrap().consumer_lanes(), 1);
    assert_eq!(load(&[]).unwrap().consumer_lanes(), 1, "SQLite");
    assert_eq!(load(&[("CONSUMER_CONCURRENCY", "3")]).unwrap().consumer_lanes(), 3);
    let p = problems(&[("CONSUMER_CONCURRENCY", "8")]);
    assert!(p[0].contains("CONSUMER_CONCURRENCY=\"8\"") && p[0].contains("below DATABASE_POOL_SIZE (8)"), "{p:?}");
    assert_eq!(problems(&[("CONSUMER_CONCURRENCY", "0")]).len(), 1);
}

#[test]
fn sasl_protocol_needs_a_mechanism() {
    let p = problems(&[("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")]);
    assert!(p[0].contains("KAFKA_SASL_MECHANISM"), "{p:?}");
}

#[test]
fn database_url_scheme_is_checked_and_redacted() {
    let p = problems(&[("DATABASE_URL", "mysql://root:hunter2@db/x")]);
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("DATABASE_URL") && !p[0].contains("hunter2"), "{p:?}");
    assert!(load(&[("DATABASE_URL", "postgres://u:p@h/db")]).is_ok());
    assert!(load(&[("DATABASE_URL", "sqlite:///tmp/x.db")]).is_ok());
}

#[test]
fn topic_names_per_module_with_the_seed_alias_and_the_prefix() {
    let s = load(&[("KAFKA_PRICE_EVENTS_TOPIC", "market.prices.v1"), ("KAFKA_TOPIC_PREFIX", "dev.")]).unwrap();
    assert_eq!(s.topic("price-events"), "dev.market.prices.v1");
    assert_eq!(s.topic("notifications"), "dev.notifications");
    let s = load(&[("KAFKA_TOPIC_NOTIFICATIONS", "alerts")]).unwrap();
    assert_eq!(s.topic("notifications"), "alerts");
    assert!(s.describe().contains(&("KAFKA_TOPIC_NOTIFICATIONS".into(), "alerts".into())));
    let e = load(&[("KAFKA_TOPIC_PRICE_EVENTS", "a"), ("KAFKA_PRICE_EVENTS_TOPIC", "b")]).unwrap_err().to_string();
    assert!(e.contains("KAFKA_PRICE_EVENTS_TOPIC"), "{e}");
    let e = load(&[("KAFKA_TOPIC_ORDERS", "no spaces")]).unwrap_err().to_string();
    assert!(e.contains("KAFKA_TOPIC_ORDERS"), "{e}");
}

#[test]
fn kafka_props_pass_through_and_secrets_are_redacted() {
    let s = load(&[
        ("KAFKA_PROP_SESSION_TIMEOUT_MS", "6000"),
        ("KAFKA_PROP_SSL_KEY_PASSWORD", "hunter2"),
        ("KAFKA_SASL_PASSWORD", "hunter3"),
        ("DATABASE_URL", "postgres://app:hunter4@db:5432/app"),
    ])
    .unwrap();
    assert_eq!(s.kafka_props.get("session.timeout.ms").map(String::as_str), Some("6000"));
    let text = format!("{:?}", s.describe());
    assert!(text.contains("6000"));
    for secret in ["hunter2", "hunter3", "hunter4"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("postgres://app:***@db:5432/app"));
}

#[test]
fn a_pass_through_may_not_weaken_a_delivery_guarantee() {
    let p = problems(&[("KAFKA_PROP_ACKS", "1"), ("KAFKA_PROP_ENABLE_IDEMPOTENCE", "false")]);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with(r#"invalid setting KAFKA_PROP_ACKS="1": expected all or -1"#), "{p:?}");
    assert!(p[1].starts_with(r#"invalid setting KAFKA_PROP_ENABLE_IDEMPOTENCE="false""#), "{p:?}");
    assert_eq!(problems(&[("KAFKA_PROP_ENABLE_AUTO_COMMIT", "true")]).len(), 1);
    // Restating the guarantee is fine.
    let s = load(&[("KAFKA_PROP_ACKS", "all"), ("KAFKA_PROP_ENABLE_IDEMPOTENCE", "TRUE")]).unwrap();
    assert_eq!(s.kafka_props.get("acks").map(String::as_str), Some("all"));
}
