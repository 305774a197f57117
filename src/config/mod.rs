//! Settings: read once at start from the environment and `.env` (the
//! environment wins), validated in one pass so that every problem is reported
//! at once, each naming its variable, the bad value and what is allowed.
//!
//! Each setting is declared once, below: its variable, default, kind (how it
//! parses, shows and redacts) and one line of help. That declaration makes
//! the `Settings` field, the parsing, `cronsumer config`, and the settings
//! table of the README and `.env.example` (tests compare both).
//!
//! Inside: the declarations and their checks (here), how each kind of value
//! parses and shows (`value`), the docs they make (`docs`), the `.env` file
//! ([`env_file`]), cron schedules ([`cron`]) and secrets kept out of what is
//! printed ([`redact`]). It may use `common` only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::cron::Schedule;
use crate::config::redact::{is_secret_name, REDACTED};

pub mod cron;
mod docs;
pub mod env_file;
mod per_module;
pub mod redact;
mod value;

pub use docs::{env_example, settings_table, Declared};
use per_module::{kafka_props, kafka_topics, module_batches};
pub use per_module::{module_key, ModuleBatch, MAX_BATCH_SIZE};
use value::*;
pub use value::{symbol, Backend, NotifierKind, OffsetReset, PredictProtocol};

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

/// Declares the settings: each line makes a `Settings` field (documented by
/// its help), reads and checks its variable, and describes it.
macro_rules! settings {
    ($( [$section:literal] $( #[doc = $help:literal] $field:ident : $ty:ty = $decl:expr, $kind:expr; )* )*) => {
        /// The validated settings.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Settings {
            $( $( #[doc = $help] pub $field: $ty, )* )*
            /// `KAFKA_PROP_<NAME>` pass-through properties, already turned
            /// into librdkafka names (`session.timeout.ms`).
            pub kafka_props: BTreeMap<String, String>,
            /// `KAFKA_TOPIC_<MODULE>` topic names by module key (`PRICE_EVENTS`).
            pub kafka_topics: BTreeMap<String, String>,
            /// `CONSUMER_BATCH_SIZE_<MODULE>` and `CONSUMER_BATCH_TIMEOUT_MS_<MODULE>` by module key.
            pub module_batches: BTreeMap<String, ModuleBatch>,
        }

        /// Every declared setting, in the order `cronsumer config` prints them.
        pub const DECLARED: &[Declared] = &[$( $( Declared { section: $section, help: $help, ..$decl }, )* )*];

        impl Settings {
            /// Reads every declared setting; `None` if any was refused (`r` has why).
            fn read(r: &mut Reader<'_>, vars: &HashMap<String, String>) -> Option<Settings> {
                let (kafka_props, kafka_topics) = (kafka_props(vars), kafka_topics(r, vars));
                let module_batches = module_batches(r, vars);
                $( $( let $field = r.read(&$decl, &$kind); )* )*
                Some(Settings { $( $( $field: $field?, )* )* kafka_props, kafka_topics, module_batches })
            }

            /// The declared settings' effective values, secrets redacted.
            fn declared_values(&self) -> Vec<(String, String)> {
                vec![$( $( ($decl.var.to_string(), Kind::show(&$kind, &self.$field)), )* )*]
            }

            /// The values of the settings declared secret, to scrub from messages.
            pub fn declared_secrets(&self) -> Vec<String> {
                let mut out = Vec::new();
                $( $( out.extend(Kind::secrets(&$kind, &self.$field)); )* )*
                out
            }
        }
    };
}

const fn var(name: &'static str) -> Declared {
    Declared { var: name, default: None, example: None, host_specific: false, section: "", help: "" }
}

const COMPRESSIONS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
const SECURITY_PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
const OFFSET_RESETS: Choice<OffsetReset> =
    Choice(&[("earliest", OffsetReset::Earliest), ("latest", OffsetReset::Latest)]);
const PROTOCOLS: Choice<PredictProtocol> = Choice(&[("json", PredictProtocol::Json), ("v2", PredictProtocol::V2)]);
const NOTIFIERS: Choice<NotifierKind> = Choice(&[("log", NotifierKind::Log), ("webhook", NotifierKind::Webhook)]);
/// A shorter admin token is too easy to guess.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

settings! {
    ["Kafka"]
    /// brokers, `host:port,...`
    kafka_bootstrap_servers: String = var("KAFKA_BOOTSTRAP_SERVERS").default("localhost:9092").host_specific(), NonEmpty;
    /// consumer group; copies sharing it split the partitions
    kafka_group_id: String = var("KAFKA_GROUP_ID").default("cronsumer"), NonEmpty;
    /// `false` runs the scheduler and HTTP endpoint only, without the consumer thread
    kafka_enabled: bool = var("KAFKA_ENABLED").default("true"), Flag;
    /// where a group without commits starts: `earliest`, `latest`
    kafka_auto_offset_reset: OffsetReset = var("KAFKA_AUTO_OFFSET_RESET").default("earliest"), OFFSET_RESETS;
    /// create missing topics at start (4 partitions) instead of exiting 2
    kafka_auto_create_topics: bool = var("KAFKA_AUTO_CREATE_TOPICS").default("false"), Flag;
    /// prepended to every module's topic, e.g. `staging.`
    kafka_topic_prefix: String = var("KAFKA_TOPIC_PREFIX").default(""), Text;
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`
    kafka_security_protocol: String = var("KAFKA_SECURITY_PROTOCOL").default("PLAINTEXT"), OneOf(SECURITY_PROTOCOLS);
    /// required for `SASL_*`: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER`
    kafka_sasl_mechanism: Option<String> = var("KAFKA_SASL_MECHANISM").example("SCRAM-SHA-512"), Optional(OneOf(SASL_MECHANISMS));
    /// SASL user name
    kafka_sasl_username: Option<String> = var("KAFKA_SASL_USERNAME").example("cronsumer"), Optional(Text);
    /// SASL password (never printed)
    kafka_sasl_password: Option<String> = var("KAFKA_SASL_PASSWORD"), Optional(Secret(1));
    /// broker connection retries at start, after the first attempt (backoff 1 s doubling, capped at 30 s)
    kafka_connect_max_retries: u32 = var("KAFKA_CONNECT_MAX_RETRIES").default("5"), int(0, 1000);
    /// compression of produced records (`cronsumer produce`, replays): `none`, `gzip`, `snappy`, `lz4`, `zstd`
    kafka_producer_compression: String = var("KAFKA_PRODUCER_COMPRESSION").default("lz4"), OneOf(COMPRESSIONS);

    ["Consumer"]
    /// records per batch
    consumer_batch_size: usize = var("CONSUMER_BATCH_SIZE").default("25"), int(1, 100_000);
    /// a batch closes this long after its first record arrived
    consumer_batch_timeout: Duration = var("CONSUMER_BATCH_TIMEOUT_MS").default("5000"), Millis(1, 3_600_000);
    /// a consumer thread that made no poll for this long is stopped and restarted (the process exits if it will not stop)
    consumer_stall_timeout: Duration = var("CONSUMER_STALL_TIMEOUT_MS").default("60000"), Millis(1_000, 86_400_000);
    /// larger payloads are dead-lettered
    consumer_max_record_bytes: usize = var("CONSUMER_MAX_RECORD_BYTES").default("1048576"), int(1, 1 << 30);
    /// lanes that handle partitions side by side (each partition in one, in order); below `DATABASE_POOL_SIZE`; `auto`: 4 on PostgreSQL (at most half the pool), 1 on SQLite
    consumer_concurrency: Option<usize> = var("CONSUMER_CONCURRENCY").default("auto"), Auto(int(1, 64));

    ["Database"]
    /// a path or `sqlite://PATH` (SQLite) or `postgres://USER:PASS@HOST:PORT/DB`
    database_url: String = var("DATABASE_URL").default("./data/cronsumer.db"), DatabaseUrl;
    /// database connections
    database_pool_size: u32 = var("DATABASE_POOL_SIZE").default("8"), int(1, 256);
    /// PostgreSQL: whether a batch's transaction waits for its WAL flush; off loses nothing, as a batch's offsets commit with its rows
    database_consumer_sync_commit: bool = var("DATABASE_CONSUMER_SYNC_COMMIT").default("false"), Flag;

    ["Notifications"]
    /// when `send_notifications` runs (6 fields, seconds first, UTC)
    notifications_cron: Schedule = var("NOTIFICATIONS_CRON").default("*/30 * * * * *"), Cron;
    /// delivery attempts before a notification is `failed`
    notifications_max_attempts: u32 = var("NOTIFICATIONS_MAX_ATTEMPTS").default("5"), int(1, 1000);
    /// first retry delay after a failed delivery; doubles per attempt, capped at 1 h
    notifications_retry_base: Duration = var("NOTIFICATIONS_RETRY_BASE_MS").default("5000"), Millis(10, 3_600_000);
    /// `log` (one log line per notification) or `webhook`
    notifier: NotifierKind = var("NOTIFIER").default("log"), NOTIFIERS;
    /// where `webhook` POSTs each notification as JSON (required when `NOTIFIER=webhook`)
    notify_webhook_url: Option<String> = var("NOTIFY_WEBHOOK_URL").example("https://example.com/hooks/notify"), Optional(HttpUrl { secret: true });
    /// webhook deliveries in flight at once (per copy)
    notify_concurrency: usize = var("NOTIFY_CONCURRENCY").default("32"), int(1, 256);
    /// after 5 failed webhook calls in a row, no call for this long (rows wait, attempts unspent)
    notify_breaker_cool_off: Duration = var("NOTIFY_BREAKER_COOL_OFF_MS").default("30000"), Millis(100, 3_600_000);
    /// sent notifications, replayed dead letters, job runs, published outbox rows and provider answers older than this many days are purged
    retention_days: u32 = var("RETENTION_DAYS").default("7"), int(1, 36_500);

    ["Market data"]
    /// symbols `fetch_prices` fetches, comma-separated (e.g. `AAPL,MSFT`); empty: the job is off
    price_symbols: Vec<String> = var("PRICE_SYMBOLS").default(""), Symbols;
    /// when `fetch_prices` runs (6 fields, seconds first, UTC)
    price_fetch_cron: Schedule = var("PRICE_FETCH_CRON").default("0 * * * * *"), Cron;
    /// the provider's base URL (Alpha Vantage's `GLOBAL_QUOTE` answers at `/query`)
    price_provider_url: String = var("PRICE_PROVIDER_URL").default("https://www.alphavantage.co"), HttpUrl { secret: false };
    /// the provider's API key (never printed)
    price_provider_api_key: Option<String> = var("PRICE_PROVIDER_API_KEY"), Optional(Secret(1));
    /// how long one provider call may take before it counts as a timeout
    price_provider_timeout: Duration = var("PRICE_PROVIDER_TIMEOUT_MS").default("10000"), Millis(100, 120_000);
    /// the `source` of the price events this service publishes
    price_source: String = var("PRICE_SOURCE").default("alpha_vantage"), NonEmpty;
    /// `GET /v1/prices/latest` answers from a fetch of the symbol younger than this many seconds instead of fetching
    price_cache: Duration = var("PRICE_CACHE_SECONDS").default("10"), Seconds(0, 86_400);
    /// prices in each symbol's simple moving average (the price-events module)
    price_sma_window: u32 = var("PRICE_SMA_WINDOW").default("20"), int(1, 10_000);

    ["Predictions"]
    /// the model server: for `json` the URL to POST (e.g. `http://127.0.0.1:8500/predict`), for `v2` its base URL; unset: the predictions module is off
    predict_url: Option<String> = var("PREDICT_URL").example("http://127.0.0.1:8500/predict"), Optional(HttpUrl { secret: false });
    /// `json` (`{"instances": [...]}` answered by `{"predictions": [...]}`) or `v2` (the Open Inference Protocol of KServe, Triton, MLServer)
    predict_protocol: PredictProtocol = var("PREDICT_PROTOCOL").default("json"), PROTOCOLS;
    /// the model's name (in the body for `json`, in the path for `v2`)
    predict_model: String = var("PREDICT_MODEL").default("candles"), NonEmpty;
    /// the model's version (optional)
    predict_model_version: Option<String> = var("PREDICT_MODEL_VERSION").example("v1"), Optional(NonEmpty);
    /// sent as `Authorization: Bearer` (never printed)
    predict_auth_token: Option<String> = var("PREDICT_AUTH_TOKEN"), Optional(Secret(1));
    /// how long one model call may take before it counts as a timeout (the batch is retried)
    predict_timeout: Duration = var("PREDICT_TIMEOUT_MS").default("10000"), Millis(100, 600_000);
    /// the record field stored as the prediction's key (e.g. the symbol)
    predict_key_field: String = var("PREDICT_KEY_FIELD").default("symbol"), NonEmpty;
    /// for `v2`: the numeric record fields that make each row of the input tensor, in order, comma-separated
    predict_input_fields: Vec<String> = var("PREDICT_INPUT_FIELDS").default("").example("open,high,low,close,volume"), Fields;
    /// after 5 failed model calls in a row, no call for this long (batches wait, nothing is dead-lettered)
    predict_breaker_cool_off: Duration = var("PREDICT_BREAKER_COOL_OFF_MS").default("10000"), Millis(100, 3_600_000);

    ["HTTP, shutdown, logging"]
    /// the web console at `/`, `/healthz`, `/readyz`, `/metrics`
    http_addr: SocketAddr = var("HTTP_ADDR").default("127.0.0.1:8080").host_specific(), Addr;
    /// enables the console's actions (replay, purge, retry, run a job, pause a partition); at least 16 characters; never printed; unset: read-only
    http_admin_token: Option<String> = var("HTTP_ADMIN_TOKEN"), Optional(Secret(MIN_ADMIN_TOKEN_CHARS));
    /// how long a SIGTERM may take in all: the batch in hand, leaving the group, running jobs
    shutdown_timeout: Duration = var("SHUTDOWN_TIMEOUT_MS").default("10000"), Millis(0, 3_600_000);
    /// log filter (`env_logger` syntax), e.g. `info,cronsumer=debug`
    rust_log: String = var("RUST_LOG").default("info"), Text;
}

impl Settings {
    /// Loads `.env` (when present) under the process environment, then validates.
    pub fn load() -> Result<Settings, ConfigError> {
        crate::config::env_file::load(std::path::Path::new(".env")).map_err(|e| ConfigError {
            problems: vec![Problem { var: ".env".into(), value: format!("line {}", e.line), expected: e.reason }],
        })?;
        Settings::from_vars(std::env::vars().collect())
    }

    /// Validates a complete variable map (the environment, or a test's map).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Settings, ConfigError> {
        let mut r = Reader { vars: &vars, problems: Vec::new() };
        let settings = Settings::read(&mut r, &vars);
        if let Some(s) = &settings {
            s.check(&mut r);
        }
        match settings {
            Some(s) if r.problems.is_empty() => Ok(s),
            _ => Err(ConfigError { problems: r.problems }),
        }
    }

    /// Rules between settings.
    fn check(&self, r: &mut Reader<'_>) {
        if self.notifier == NotifierKind::Webhook && self.notify_webhook_url.is_none() {
            r.problem("NOTIFY_WEBHOOK_URL", "", "an http:// or https:// URL (required when NOTIFIER=webhook)");
        }
        for (name, allowed) in GUARANTEES {
            let Some(value) = self.kafka_props.get(*name) else { continue };
            if !allowed.contains(&value.trim().to_ascii_lowercase().as_str()) {
                let var = format!("KAFKA_PROP_{}", name.replace('.', "_").to_uppercase());
                let expected = format!("{} (it carries a delivery guarantee), or leave it unset", allowed.join(" or "));
                r.problem(&var, value, &expected);
            }
        }
        if let Some(lanes) = self.consumer_concurrency.filter(|&n| n as u32 >= self.database_pool_size) {
            // Each lane holds a connection while it works; the scheduler and the offsets need one more.
            let expected =
                format!("below DATABASE_POOL_SIZE ({}): each lane holds a connection", self.database_pool_size);
            r.problem("CONSUMER_CONCURRENCY", &lanes.to_string(), &expected);
        }
        if self.predict_protocol == PredictProtocol::V2 && self.predict_input_fields.is_empty() {
            let expected = "the record fields of the input tensor, comma-separated (required when PREDICT_PROTOCOL=v2)";
            r.problem("PREDICT_INPUT_FIELDS", "", expected);
        }
        if self.kafka_security_protocol.starts_with("SASL") && self.kafka_sasl_mechanism.is_none() {
            let expected = format!("one of {} when KAFKA_SECURITY_PROTOCOL is SASL_*", SASL_MECHANISMS.join(", "));
            r.problem("KAFKA_SASL_MECHANISM", "", &expected);
        }
    }

    /// The secret values among the settings, to scrub from messages
    /// ([`redact::scrub`]).
    pub fn secret_values(&self) -> Vec<String> {
        let mut secrets = self.declared_secrets();
        secrets.extend(self.kafka_props.iter().filter(|(name, _)| is_secret_name(name)).map(|(_, v)| v.clone()));
        // Too short a value would blank ordinary words; such a secret is no secret.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }

    /// The effective settings as `NAME=value` lines, secrets redacted.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut out = self.declared_values();
        for (module, name) in &self.kafka_topics {
            out.push((format!("KAFKA_TOPIC_{module}"), name.clone()));
        }
        for (module, batch) in &self.module_batches {
            out.extend(batch.size.map(|n| (format!("CONSUMER_BATCH_SIZE_{module}"), n.to_string())));
            out.extend(
                batch.timeout.map(|t| (format!("CONSUMER_BATCH_TIMEOUT_MS_{module}"), t.as_millis().to_string())),
            );
        }
        for (name, value) in &self.kafka_props {
            let env = format!("KAFKA_PROP_{}", name.replace('.', "_").to_uppercase());
            let shown = if is_secret_name(name) { REDACTED.to_string() } else { value.clone() };
            out.push((format!("{env} ({name})"), shown));
        }
        out
    }

    /// How many lanes the consumer runs: `CONSUMER_CONCURRENCY`, or for
    /// `auto` the backend's (PostgreSQL serves lanes side by side; SQLite has
    /// one writer at a time, so more lanes would only wait on each other),
    /// leaving half the pool to the rest of the service.
    pub fn consumer_lanes(&self) -> usize {
        self.consumer_concurrency.unwrap_or(match Backend::of_url(&self.database_url) {
            Ok(Backend::Postgres) => (self.database_pool_size as usize / 2).clamp(1, 4),
            _ => 1,
        })
    }

    /// Full topic name of a module's topic: `KAFKA_TOPIC_PREFIX` + its
    /// `KAFKA_TOPIC_<MODULE>` name, or + the module's own name.
    pub fn topic(&self, base: &str) -> String {
        self.module_topic(base, base)
    }

    /// [`Self::topic`] of the module `module` whose topic is `base` unless
    /// `KAFKA_TOPIC_<MODULE>` names another.
    pub fn module_topic(&self, module: &str, base: &str) -> String {
        let name = self.kafka_topics.get(&module_key(module)).map_or(base, String::as_str);
        format!("{}{name}", self.kafka_topic_prefix)
    }

    /// The batches of the module `module`: its own size and timeout, or the consumer's.
    pub fn module_batch(&self, module: &str) -> (usize, Duration) {
        let own = self.module_batches.get(&module_key(module)).copied().unwrap_or_default();
        (own.size.unwrap_or(self.consumer_batch_size), own.timeout.unwrap_or(self.consumer_batch_timeout))
    }
}

/// librdkafka properties that carry a guarantee, with the values that keep
/// it: a pass-through may restate them, never weaken them. (The clients set
/// them again after the pass-through too.)
pub const GUARANTEES: &[(&str, &[&str])] = &[
    ("acks", &["all", "-1"]),
    ("enable.idempotence", &["true"]),
    ("enable.auto.commit", &["false"]),
    ("enable.auto.offset.store", &["false"]),
];

/// Reads one variable at a time, collecting problems instead of stopping.
struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn problem(&mut self, var: &str, value: &str, expected: &str) {
        self.problems.push(Problem { var: var.into(), value: value.into(), expected: expected.into() });
    }

    /// The variable's trimmed text, else its default, else empty, parsed as `kind`.
    fn read<K: Kind>(&mut self, decl: &Declared, kind: &K) -> Option<K::Value> {
        let text = self.vars.get(decl.var).map(String::as_str).or(decl.default).unwrap_or_default().trim();
        match kind.parse(text) {
            Ok(v) => Some(v),
            Err(expected) => {
                self.problem(decl.var, &kind.shown(text), &expected);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
