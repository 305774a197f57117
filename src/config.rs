//! Settings: read once at start from the environment and `.env` (the
//! environment wins), validated in one pass so that every problem is reported
//! at once, each naming its variable, the bad value and what is allowed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::redact::{self, is_secret_name, REDACTED};

/// Every problem found in the settings; bad settings exit with code 2.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// One bad setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub var: String,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting {}={:?}: expected {}", self.var, self.value, self.expected)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifierKind {
    Log,
    Webhook,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub enabled: bool,
    pub auto_offset_reset: OffsetReset,
    pub auto_create_topics: bool,
    pub security_protocol: String,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub connect_max_retries: u32,
    /// The producer's `compression.type`.
    pub producer_compression: String,
    /// Prepended to every registered topic name (e.g. `staging.`).
    pub topic_prefix: String,
    /// `KAFKA_PROP_<NAME>` pass-through properties, already turned into
    /// librdkafka names (`session.timeout.ms`).
    pub props: BTreeMap<String, String>,
    /// `KAFKA_TOPIC_<MODULE>` topic names by module key (`PRICE_EVENTS`).
    pub topics: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub stall_timeout: Duration,
    pub max_record_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub consumer: ConsumerSettings,
    pub database_url: String,
    pub database_pool_size: u32,
    /// Whether consumer transactions wait for PostgreSQL's WAL flush (their
    /// offsets are in the same transaction, so a lost one is read again).
    pub database_consumer_sync_commit: bool,
    pub notifications_cron: String,
    pub notifications_max_attempts: u32,
    /// First retry delay of a failed delivery; doubles per attempt, capped at 1 h.
    pub notifications_retry_base: Duration,
    pub notifier: NotifierKind,
    pub notify_webhook_url: Option<String>,
    /// Webhook deliveries in flight at once.
    pub notify_concurrency: usize,
    /// How long the webhook's breaker stays open.
    pub notify_breaker_cool_off: Duration,
    pub retention_days: u32,
    pub http_addr: SocketAddr,
    /// Enables the web console's actions; `None`: the console is read-only.
    pub http_admin_token: Option<String>,
    pub shutdown_timeout: Duration,
    pub rust_log: String,
}

/// Every documented setting with its default, in the order `cronsumer config`
/// prints them. `None` means "unset unless given".
pub const DEFAULTS: &[(&str, Option<&str>)] = &[
    ("KAFKA_BOOTSTRAP_SERVERS", Some("localhost:9092")),
    ("KAFKA_GROUP_ID", Some("cronsumer")),
    ("KAFKA_ENABLED", Some("true")),
    ("KAFKA_AUTO_OFFSET_RESET", Some("earliest")),
    ("KAFKA_AUTO_CREATE_TOPICS", Some("false")),
    ("KAFKA_TOPIC_PREFIX", Some("")),
    ("KAFKA_SECURITY_PROTOCOL", Some("PLAINTEXT")),
    ("KAFKA_SASL_MECHANISM", None),
    ("KAFKA_SASL_USERNAME", None),
    ("KAFKA_SASL_PASSWORD", None),
    ("KAFKA_CONNECT_MAX_RETRIES", Some("5")),
    ("KAFKA_PRODUCER_COMPRESSION", Some("lz4")),
    ("CONSUMER_BATCH_SIZE", Some("25")),
    ("CONSUMER_BATCH_TIMEOUT_MS", Some("5000")),
    ("CONSUMER_STALL_TIMEOUT_MS", Some("60000")),
    ("CONSUMER_MAX_RECORD_BYTES", Some("1048576")),
    ("DATABASE_URL", Some("./data/cronsumer.db")),
    ("DATABASE_POOL_SIZE", Some("8")),
    ("DATABASE_CONSUMER_SYNC_COMMIT", Some("false")),
    ("NOTIFICATIONS_CRON", Some("*/30 * * * * *")),
    ("NOTIFICATIONS_MAX_ATTEMPTS", Some("5")),
    ("NOTIFICATIONS_RETRY_BASE_MS", Some("5000")),
    ("NOTIFIER", Some("log")),
    ("NOTIFY_WEBHOOK_URL", None),
    ("NOTIFY_CONCURRENCY", Some("32")),
    ("NOTIFY_BREAKER_COOL_OFF_MS", Some("30000")),
    ("RETENTION_DAYS", Some("7")),
    ("HTTP_ADDR", Some("127.0.0.1:8080")),
    ("HTTP_ADMIN_TOKEN", None),
    ("SHUTDOWN_TIMEOUT_MS", Some("10000")),
    ("RUST_LOG", Some("info")),
];

const COMPRESSIONS: &[&str] = &["NONE", "GZIP", "SNAPPY", "LZ4", "ZSTD"];
const SECURITY_PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

impl Settings {
    /// Loads `.env` (when present) under the process environment, then validates.
    pub fn load() -> Result<Settings, ConfigError> {
        crate::env_file::load(std::path::Path::new(".env")).map_err(|e| ConfigError {
            problems: vec![Problem { var: ".env".into(), value: format!("line {}", e.line), expected: e.reason }],
        })?;
        Settings::from_vars(std::env::vars().collect())
    }

    /// Validates a complete variable map (the environment, or a test's map).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Settings, ConfigError> {
        let mut r = Reader { vars: &vars, problems: Vec::new() };
        let kafka = KafkaSettings {
            bootstrap_servers: r.non_empty("KAFKA_BOOTSTRAP_SERVERS"),
            group_id: r.non_empty("KAFKA_GROUP_ID"),
            enabled: r.boolean("KAFKA_ENABLED"),
            auto_offset_reset: r.choice(
                "KAFKA_AUTO_OFFSET_RESET",
                &[("earliest", OffsetReset::Earliest), ("latest", OffsetReset::Latest)],
                OffsetReset::Earliest,
            ),
            auto_create_topics: r.boolean("KAFKA_AUTO_CREATE_TOPICS"),
            topic_prefix: r.raw("KAFKA_TOPIC_PREFIX").unwrap_or_default(),
            security_protocol: r.one_of("KAFKA_SECURITY_PROTOCOL", SECURITY_PROTOCOLS),
            sasl_mechanism: r.optional_one_of("KAFKA_SASL_MECHANISM", SASL_MECHANISMS),
            sasl_username: r.raw("KAFKA_SASL_USERNAME").filter(|v| !v.is_empty()),
            sasl_password: r.raw("KAFKA_SASL_PASSWORD").filter(|v| !v.is_empty()),
            connect_max_retries: r.number("KAFKA_CONNECT_MAX_RETRIES", 0, 1000) as u32,
            producer_compression: r.one_of("KAFKA_PRODUCER_COMPRESSION", COMPRESSIONS).to_ascii_lowercase(),
            props: kafka_props(&vars),
            topics: kafka_topics(&mut r, &vars),
        };
        let consumer = ConsumerSettings {
            batch_size: r.number("CONSUMER_BATCH_SIZE", 1, 100_000) as usize,
            batch_timeout: r.millis("CONSUMER_BATCH_TIMEOUT_MS", 1, 3_600_000),
            stall_timeout: r.millis("CONSUMER_STALL_TIMEOUT_MS", 1_000, 86_400_000),
            max_record_bytes: r.number("CONSUMER_MAX_RECORD_BYTES", 1, 1 << 30) as usize,
        };
        let database_url = r.non_empty("DATABASE_URL");
        if !database_url.is_empty() {
            if let Err(e) = crate::db::Backend::of_url(&database_url) {
                r.problem("DATABASE_URL", &redact::url(&database_url), &e);
            }
        }
        let notifier =
            r.choice("NOTIFIER", &[("log", NotifierKind::Log), ("webhook", NotifierKind::Webhook)], NotifierKind::Log);
        let notify_webhook_url = r.raw("NOTIFY_WEBHOOK_URL").filter(|v| !v.is_empty());
        match (&notifier, &notify_webhook_url) {
            (NotifierKind::Webhook, None) => {
                r.problem("NOTIFY_WEBHOOK_URL", "", "an http:// or https:// URL (required when NOTIFIER=webhook)")
            }
            (_, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                r.problem("NOTIFY_WEBHOOK_URL", &redact::webhook_url(url), "an http:// or https:// URL")
            }
            _ => {}
        }
        let settings = Settings {
            consumer,
            database_pool_size: r.number("DATABASE_POOL_SIZE", 1, 256) as u32,
            database_consumer_sync_commit: r.boolean("DATABASE_CONSUMER_SYNC_COMMIT"),
            notifications_cron: r.cron("NOTIFICATIONS_CRON"),
            notifications_max_attempts: r.number("NOTIFICATIONS_MAX_ATTEMPTS", 1, 1000) as u32,
            notifications_retry_base: r.millis("NOTIFICATIONS_RETRY_BASE_MS", 10, 3_600_000),
            notifier,
            notify_webhook_url,
            notify_concurrency: r.number("NOTIFY_CONCURRENCY", 1, 256) as usize,
            notify_breaker_cool_off: r.millis("NOTIFY_BREAKER_COOL_OFF_MS", 100, 3_600_000),
            retention_days: r.number("RETENTION_DAYS", 1, 36_500) as u32,
            http_addr: r.socket_addr("HTTP_ADDR"),
            http_admin_token: r.secret("HTTP_ADMIN_TOKEN", MIN_ADMIN_TOKEN_CHARS),
            shutdown_timeout: r.millis("SHUTDOWN_TIMEOUT_MS", 0, 3_600_000),
            rust_log: r.raw("RUST_LOG").unwrap_or_else(|| "info".into()),
            database_url,
            kafka,
        };
        if settings.kafka.security_protocol.starts_with("SASL") && settings.kafka.sasl_mechanism.is_none() {
            r.problem(
                "KAFKA_SASL_MECHANISM",
                "",
                &format!("one of {} when KAFKA_SECURITY_PROTOCOL is SASL_*", SASL_MECHANISMS.join(", ")),
            );
        }
        if r.problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError { problems: r.problems })
        }
    }

    /// The effective settings as `NAME=value` lines, secrets redacted.
    pub fn describe(&self) -> Vec<(String, String)> {
        let k = &self.kafka;
        let c = &self.consumer;
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut out: Vec<(String, String)> = vec![
            ("KAFKA_BOOTSTRAP_SERVERS".into(), k.bootstrap_servers.clone()),
            ("KAFKA_GROUP_ID".into(), k.group_id.clone()),
            ("KAFKA_ENABLED".into(), k.enabled.to_string()),
            ("KAFKA_AUTO_OFFSET_RESET".into(), k.auto_offset_reset.as_str().into()),
            ("KAFKA_AUTO_CREATE_TOPICS".into(), k.auto_create_topics.to_string()),
            ("KAFKA_TOPIC_PREFIX".into(), k.topic_prefix.clone()),
            ("KAFKA_SECURITY_PROTOCOL".into(), k.security_protocol.clone()),
            ("KAFKA_SASL_MECHANISM".into(), opt(&k.sasl_mechanism)),
            ("KAFKA_SASL_USERNAME".into(), opt(&k.sasl_username)),
            ("KAFKA_SASL_PASSWORD".into(), k.sasl_password.as_ref().map(|_| REDACTED.to_string()).unwrap_or_default()),
            ("KAFKA_CONNECT_MAX_RETRIES".into(), k.connect_max_retries.to_string()),
            ("KAFKA_PRODUCER_COMPRESSION".into(), k.producer_compression.clone()),
            ("CONSUMER_BATCH_SIZE".into(), c.batch_size.to_string()),
            ("CONSUMER_BATCH_TIMEOUT_MS".into(), c.batch_timeout.as_millis().to_string()),
            ("CONSUMER_STALL_TIMEOUT_MS".into(), c.stall_timeout.as_millis().to_string()),
            ("CONSUMER_MAX_RECORD_BYTES".into(), c.max_record_bytes.to_string()),
            ("DATABASE_URL".into(), redact::url(&self.database_url)),
            ("DATABASE_POOL_SIZE".into(), self.database_pool_size.to_string()),
            ("DATABASE_CONSUMER_SYNC_COMMIT".into(), self.database_consumer_sync_commit.to_string()),
            ("NOTIFICATIONS_CRON".into(), self.notifications_cron.clone()),
            ("NOTIFICATIONS_MAX_ATTEMPTS".into(), self.notifications_max_attempts.to_string()),
            ("NOTIFICATIONS_RETRY_BASE_MS".into(), self.notifications_retry_base.as_millis().to_string()),
            (
                "NOTIFIER".into(),
                match self.notifier {
                    NotifierKind::Log => "log".into(),
                    NotifierKind::Webhook => "webhook".into(),
                },
            ),
            (
                "NOTIFY_WEBHOOK_URL".into(),
                self.notify_webhook_url.as_deref().map(redact::webhook_url).unwrap_or_default(),
            ),
            ("NOTIFY_CONCURRENCY".into(), self.notify_concurrency.to_string()),
            ("NOTIFY_BREAKER_COOL_OFF_MS".into(), self.notify_breaker_cool_off.as_millis().to_string()),
            ("RETENTION_DAYS".into(), self.retention_days.to_string()),
            ("HTTP_ADDR".into(), self.http_addr.to_string()),
            (
                "HTTP_ADMIN_TOKEN".into(),
                self.http_admin_token.as_ref().map(|_| REDACTED.to_string()).unwrap_or_default(),
            ),
            ("SHUTDOWN_TIMEOUT_MS".into(), self.shutdown_timeout.as_millis().to_string()),
            ("RUST_LOG".into(), self.rust_log.clone()),
        ];
        for (module, name) in &k.topics {
            out.push((format!("KAFKA_TOPIC_{module}"), name.clone()));
        }
        for (name, value) in &k.props {
            let env = format!("KAFKA_PROP_{}", name.replace('.', "_").to_uppercase());
            let shown = if is_secret_name(name) { REDACTED.to_string() } else { value.clone() };
            out.push((format!("{env} ({name})"), shown));
        }
        out
    }

    /// Full topic name of a module's topic: `KAFKA_TOPIC_PREFIX` + its
    /// `KAFKA_TOPIC_<MODULE>` name, or + the module's own name.
    pub fn topic(&self, base: &str) -> String {
        let name = self.kafka.topics.get(&module_key(base)).map_or(base, String::as_str);
        format!("{}{name}", self.kafka.topic_prefix)
    }
}

/// A shorter admin token is too easy to guess.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// `KAFKA_PROP_SESSION_TIMEOUT_MS=6000` → `session.timeout.ms = 6000`.
fn kafka_props(vars: &HashMap<String, String>) -> BTreeMap<String, String> {
    vars.iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("KAFKA_PROP_")?;
            (!name.is_empty()).then(|| (name.to_ascii_lowercase().replace('_', "."), v.clone()))
        })
        .collect()
}

/// The `<MODULE>` of `KAFKA_TOPIC_<MODULE>` for a module's topic: `price-events` → `PRICE_EVENTS`.
pub fn module_key(topic: &str) -> String {
    topic.to_ascii_uppercase().replace(['-', '.'], "_")
}

/// The seed's name for the price topic, accepted as an alias of `KAFKA_TOPIC_PRICE_EVENTS`.
const PRICE_TOPIC_ALIAS: &str = "KAFKA_PRICE_EVENTS_TOPIC";

/// `KAFKA_TOPIC_PRICE_EVENTS=market.prices.v1` → `PRICE_EVENTS → market.prices.v1`.
fn kafka_topics(r: &mut Reader<'_>, vars: &HashMap<String, String>) -> BTreeMap<String, String> {
    let mut named: Vec<(String, String, String)> = vars
        .iter()
        .filter_map(|(var, v)| {
            let module = var.strip_prefix("KAFKA_TOPIC_").filter(|m| !m.is_empty() && *m != "PREFIX")?;
            Some((module.to_string(), var.clone(), v.trim().to_string()))
        })
        .collect();
    named.sort();
    if let Some(v) = vars.get(PRICE_TOPIC_ALIAS) {
        named.push(("PRICE_EVENTS".into(), PRICE_TOPIC_ALIAS.into(), v.trim().to_string()));
    }
    let mut topics = BTreeMap::new();
    for (module, var, value) in named {
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if value.is_empty() || value.len() > 249 || !value.chars().all(legal) {
            r.problem(&var, &value, "a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)");
        } else if let Some(other) = topics.get(&module).filter(|other| **other != value) {
            let expected = format!("the name KAFKA_TOPIC_{module}={other} gives, or only one of the two");
            r.problem(&var, &value, &expected);
        } else {
            topics.insert(module, value);
        }
    }
    topics
}

/// Reads one variable at a time, collecting problems instead of stopping.
struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn problem(&mut self, var: &str, value: &str, expected: &str) {
        self.problems.push(Problem { var: var.into(), value: value.into(), expected: expected.into() });
    }

    fn default_of(var: &str) -> Option<&'static str> {
        DEFAULTS.iter().find(|(n, _)| *n == var).and_then(|(_, d)| *d)
    }

    fn raw(&self, var: &str) -> Option<String> {
        self.vars.get(var).cloned().or_else(|| Self::default_of(var).map(String::from))
    }

    fn value(&self, var: &str) -> String {
        self.raw(var).unwrap_or_default().trim().to_string()
    }

    /// An optional secret of at least `min` characters; a bad one is named, never shown.
    fn secret(&mut self, var: &str, min: usize) -> Option<String> {
        let v = self.value(var);
        if v.is_empty() {
            return None;
        }
        if v.chars().count() < min {
            self.problem(var, REDACTED, &format!("at least {min} characters (or unset)"));
        }
        Some(v)
    }

    fn non_empty(&mut self, var: &str) -> String {
        let v = self.value(var);
        if v.is_empty() {
            self.problem(var, &v, "a non-empty value");
        }
        v
    }

    fn boolean(&mut self, var: &str) -> bool {
        let v = self.value(var);
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                self.problem(var, &v, "true or false");
                false
            }
        }
    }

    fn number(&mut self, var: &str, min: u64, max: u64) -> u64 {
        let v = self.value(var);
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.problem(var, &v, &format!("a whole number from {min} to {max}"));
                min.max(1)
            }
        }
    }

    fn millis(&mut self, var: &str, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.number(var, min, max))
    }

    fn choice<T: Copy>(&mut self, var: &str, options: &[(&str, T)], fallback: T) -> T {
        let v = self.value(var);
        match options.iter().find(|(name, _)| name.eq_ignore_ascii_case(&v)) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.problem(var, &v, &format!("one of {}", names.join(", ")));
                fallback
            }
        }
    }

    fn one_of(&mut self, var: &str, options: &[&str]) -> String {
        let v = self.value(var).to_ascii_uppercase();
        if !options.contains(&v.as_str()) {
            self.problem(var, &v, &format!("one of {}", options.join(", ")));
        }
        v
    }

    fn optional_one_of(&mut self, var: &str, options: &[&str]) -> Option<String> {
        let v = self.value(var);
        if v.is_empty() {
            return None;
        }
        Some(self.one_of(var, options))
    }

    fn cron(&mut self, var: &str) -> String {
        let v = self.value(var);
        if let Err(e) = parse_cron(&v) {
            self.problem(
                var,
                &v,
                &format!("a 6-field cron expression with seconds first, e.g. \"*/30 * * * * *\" ({e})"),
            );
        }
        v
    }

    fn socket_addr(&mut self, var: &str) -> SocketAddr {
        let v = self.value(var);
        match v.parse() {
            Ok(a) => a,
            Err(_) => {
                self.problem(var, &v, "HOST:PORT with an IP address, e.g. 127.0.0.1:8080");
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        }
    }
}

/// Parses a 6-field (seconds first) cron expression the way the scheduler does.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!("it has {fields} fields"));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
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
        assert_eq!(s.kafka.bootstrap_servers, "localhost:9092");
        assert_eq!(s.kafka.group_id, "cronsumer");
        assert!(s.kafka.enabled);
        assert_eq!(s.kafka.auto_offset_reset, OffsetReset::Earliest);
        assert!(!s.kafka.auto_create_topics);
        assert_eq!(s.kafka.connect_max_retries, 5);
        assert_eq!(s.kafka.producer_compression, "lz4");
        assert_eq!(load(&[("KAFKA_PRODUCER_COMPRESSION", "snappy")]).unwrap().kafka.producer_compression, "snappy");
        assert!(problems(&[("KAFKA_PRODUCER_COMPRESSION", "brotli")])[0].contains("KAFKA_PRODUCER_COMPRESSION"));
        assert_eq!(s.consumer.batch_size, 25);
        assert_eq!(s.consumer.batch_timeout, Duration::from_millis(5000));
        assert_eq!(s.consumer.stall_timeout, Duration::from_millis(60000));
        assert_eq!(s.consumer.max_record_bytes, 1_048_576);
        assert_eq!(s.database_url, "./data/cronsumer.db");
        assert_eq!(s.database_pool_size, 8);
        assert_eq!(s.notifications_cron, "*/30 * * * * *");
        assert_eq!(s.notifications_max_attempts, 5);
        assert_eq!(s.notifier, NotifierKind::Log);
        assert_eq!(s.retention_days, 7);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.shutdown_timeout, Duration::from_millis(10000));
        // every default shows up in `cronsumer config`
        let described: Vec<String> = s.describe().into_iter().map(|(k, _)| k).collect();
        for (name, _) in DEFAULTS {
            assert!(described.iter().any(|d| d == name), "{name} missing from describe()");
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
        assert_eq!(
            load(&[("KAFKA_AUTO_OFFSET_RESET", "Latest")]).unwrap().kafka.auto_offset_reset,
            OffsetReset::Latest
        );
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
        assert_eq!(s.kafka.props.get("session.timeout.ms").map(String::as_str), Some("6000"));
        let text = format!("{:?}", s.describe());
        assert!(text.contains("6000"));
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("postgres://app:***@db:5432/app"));
    }
}
