//! Kafka client settings and start-up checks: one place builds every
//! librdkafka configuration (security, SASL, `KAFKA_PROP_*` pass-through),
//! waits for the broker with capped exponential backoff, and checks or creates
//! the topics the consumer registry needs; and the [`producer`] (`cronsumer
//! produce`, replays). The consumer's own client is the consumer's
//! (`consume::kafka_broker`). It may use `common`, `events` and `config`.

pub mod producer;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;

use crate::common::backoff::Backoff;
use crate::config::Settings;
use crate::events::{Event as _, Lifecycle};

/// How long one metadata request may take before it counts as a failed attempt.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Partitions of a topic this service creates itself.
pub const DEFAULT_PARTITIONS: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot reach Kafka at {servers} after {attempts} attempt(s): {last} (check KAFKA_BOOTSTRAP_SERVERS and that the broker is running)")]
    Unreachable { servers: String, attempts: u32, last: String },
    #[error("required Kafka topic(s) missing: {}; create them with `cronsumer topics --create` or set KAFKA_AUTO_CREATE_TOPICS=true", .0.join(", "))]
    MissingTopics(Vec<String>),
    #[error("cannot create topic {topic}: {reason}")]
    CreateFailed { topic: String, reason: String },
    #[error("Kafka client error: {0}")]
    Client(#[from] KafkaError),
    #[error("stopped while waiting for the broker")]
    Stopped,
}

/// Settings every client shares: servers, security, then the user's
/// `KAFKA_PROP_*` properties, which win over everything set here.
pub fn base_config(settings: &Settings) -> ClientConfig {
    let s = settings;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.kafka_bootstrap_servers);
    c.set("security.protocol", s.kafka_security_protocol.to_ascii_lowercase());
    if let Some(m) = &s.kafka_sasl_mechanism {
        c.set("sasl.mechanism", m);
    }
    if let Some(u) = &s.kafka_sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(p) = &s.kafka_sasl_password {
        c.set("sasl.password", p);
    }
    for (name, value) in &s.kafka_props {
        c.set(name, value);
    }
    c
}

/// `defaults`, then the shared settings and the user's `KAFKA_PROP_*`, then
/// `guarantees` again: they carry a delivery guarantee, and a pass-through
/// may not undo them (the settings refuse it; this is the backstop).
fn client_config(settings: &Settings, defaults: &[(&str, &str)], guarantees: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in guarantees.iter().chain(defaults) {
        c.set(*k, *v);
    }
    for (k, v) in base_config(settings).config_map() {
        c.set(k, v);
    }
    for (k, v) in guarantees {
        c.set(*k, *v);
    }
    c
}

/// The batch consumer's configuration: manual commits only.
pub fn consumer_config(settings: &Settings) -> ClientConfig {
    let defaults = [
        ("group.id", settings.kafka_group_id.as_str()),
        ("auto.offset.reset", settings.kafka_auto_offset_reset.as_str()),
        ("enable.partition.eof", "false"),
        // A broker that holds an empty fetch for the default 500 ms adds up to that
        // much latency on a quiet topic; 25 ms keeps produce-to-row within the batch
        // timeout + 50 ms. (KAFKA_PROP_FETCH_WAIT_MAX_MS overrides it.)
        ("fetch.wait.max.ms", "25"),
        // librdkafka prefetches up to 64 MB per partition by default; when the
        // database is slower than the broker that becomes resident memory. 4 MB
        // per partition keeps the fetch pipeline full at a fraction of the RSS.
        ("queued.max.messages.kbytes", "4096"),
    ];
    // At least once: offsets are stored and committed by the pipeline only.
    client_config(settings, &defaults, &[("enable.auto.commit", "false"), ("enable.auto.offset.store", "false")])
}

/// The producer's configuration (`cronsumer produce`, dead-letter replay).
pub fn producer_config(settings: &Settings) -> ClientConfig {
    let defaults = [
        ("compression.type", settings.kafka_producer_compression.as_str()),
        ("linger.ms", "5"),
        ("message.timeout.ms", "30000"),
    ];
    // Every record acknowledged by all replicas, none written twice by a retry.
    client_config(settings, &defaults, &[("acks", "all"), ("enable.idempotence", "true")])
}

/// Creates a client from `config`, every client this service makes: its
/// creation error has the secret settings' values scrubbed (librdkafka's
/// "Invalid value" errors quote the rejected value).
pub fn create<C, T>(settings: &Settings, config: &ClientConfig, context: C) -> Result<T, KafkaError>
where
    C: rdkafka::ClientContext,
    T: rdkafka::config::FromClientConfigAndContext<C>,
{
    config.create_with_context(context).map_err(|e| scrubbed(settings, e))
}

fn scrubbed(settings: &Settings, e: KafkaError) -> KafkaError {
    let secrets = settings.secret_values();
    let scrub = |m: &str| crate::config::redact::scrub(m, &secrets);
    match e {
        KafkaError::ClientCreation(m) => KafkaError::ClientCreation(scrub(&m)),
        KafkaError::ClientConfig(code, desc, key, value) => {
            KafkaError::ClientConfig(code, scrub(&desc), key, scrub(&value))
        }
        other => other,
    }
}

pub fn admin_client(settings: &Settings) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    create(settings, &base_config(settings), DefaultClientContext)
}

/// Fetches cluster metadata, retrying with backoff (1 s doubling, capped at
/// 30 s) up to `KAFKA_CONNECT_MAX_RETRIES` times.
pub fn wait_for_broker(
    settings: &Settings,
    admin: &AdminClient<DefaultClientContext>,
    shutdown: &dyn Fn() -> bool,
) -> Result<Metadata, SetupError> {
    let retries = settings.kafka_connect_max_retries;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match admin.inner().fetch_metadata(None, METADATA_TIMEOUT) {
            Ok(m) if !m.brokers().is_empty() => return Ok(m),
            Ok(_) => Lifecycle::BrokerNamedNone { attempt }.emit(),
            Err(_) if shutdown() => return Err(SetupError::Stopped),
            Err(e) if attempt > retries => {
                return Err(SetupError::Unreachable {
                    servers: settings.kafka_bootstrap_servers.clone(),
                    attempts: attempt,
                    last: e.to_string(),
                })
            }
            Err(e) => {
                let delay = backoff.next_delay();
                let (servers, retry_in_ms, error) =
                    (&settings.kafka_bootstrap_servers, delay.as_millis(), &e.to_string());
                Lifecycle::BrokerUnreachable { servers, attempt, retry_in_ms, error }.emit();
                // In slices: a stop asked for meanwhile ends the wait at once.
                let until = std::time::Instant::now() + delay;
                while !shutdown() && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(50).min(until - std::time::Instant::now()));
                }
                if shutdown() {
                    return Err(SetupError::Stopped);
                }
            }
        }
    }
}

/// Topic name → partition count, for the topics that exist.
pub fn existing_topics(metadata: &Metadata) -> Vec<(String, usize)> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect()
}

/// Checks that every required topic exists; creates the missing ones when
/// `create` is set, else names them in the error.
pub fn ensure_topics(
    admin: &AdminClient<DefaultClientContext>,
    metadata: &Metadata,
    required: &[String],
    create: bool,
) -> Result<Vec<String>, SetupError> {
    let existing = existing_topics(metadata);
    let missing: Vec<String> =
        required.iter().filter(|r| !existing.iter().any(|(name, _)| name == *r)).cloned().collect();
    if missing.is_empty() {
        return Ok(vec![]);
    }
    if !create {
        return Err(SetupError::MissingTopics(missing));
    }
    create_topics(admin, &missing, DEFAULT_PARTITIONS)?;
    Ok(missing)
}

pub fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
    partitions: i32,
) -> Result<(), SetupError> {
    let topics: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_executor::block_on(admin.create_topics(topics.iter(), &opts))?;
    for r in results {
        match r {
            Ok(name) => Lifecycle::TopicsCreated { names: &[name], partitions }.emit(),
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => Lifecycle::TopicExists(&name).emit(),
            Err((name, code)) => return Err(SetupError::CreateFailed { topic: name, reason: code.to_string() }),
        }
    }
    Ok(())
}

/// Consumer lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset; `None` before its first commit.
    pub committed: Option<i64>,
    pub low: i64,
    pub high: i64,
    pub lag: i64,
}

/// Committed offset, watermarks and lag of `KAFKA_GROUP_ID` on every
/// partition of `topics` (without joining the group).
pub fn lag(settings: &Settings, topics: &[String]) -> Result<Vec<PartitionLag>, KafkaError> {
    LagReader::new(settings)?.read(topics)
}

/// A client kept for reading the group's lag again and again (the web
/// console and the lag gauge), so that each reading is a few requests, not
/// a new connection.
pub struct LagReader {
    consumer: rdkafka::consumer::BaseConsumer,
}

impl LagReader {
    pub fn new(settings: &Settings) -> Result<LagReader, KafkaError> {
        let consumer = create(settings, &consumer_config(settings), rdkafka::consumer::DefaultConsumerContext)?;
        Ok(LagReader { consumer })
    }

    pub fn read(&self, topics: &[String]) -> Result<Vec<PartitionLag>, KafkaError> {
        use rdkafka::consumer::Consumer;
        let c = &self.consumer;
        let metadata = c.fetch_metadata(None, METADATA_TIMEOUT)?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| topics.iter().any(|n| n == t.name())) {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut out = Vec::new();
        for e in committed.elements() {
            let (low, high) = c.fetch_watermarks(e.topic(), e.partition(), METADATA_TIMEOUT)?;
            let committed = match e.offset() {
                rdkafka::Offset::Offset(o) => Some(o),
                _ => None,
            };
            out.push(PartitionLag {
                topic: e.topic().to_string(),
                partition: e.partition(),
                committed,
                low,
                high,
                lag: (high - committed.unwrap_or(low)).max(0),
            });
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_errors_lose_the_secret_values_they_quote() {
        let vars = [
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_PASSWORD", "hunter2-sasl"),
            ("KAFKA_PROP_SSL_KEY_PASSWORD", "hunter3-key"),
        ];
        let settings = Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap();
        let quoted = KafkaError::ClientCreation(
            r#"Invalid value "hunter3-key" for configuration property "ssl.key.password"; hunter2-sasl"#.into(),
        );
        let shown = scrubbed(&settings, quoted).to_string();
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        assert!(shown.contains(r#"Invalid value "***" for configuration property "ssl.key.password""#), "{shown}");
        // librdkafka itself rejects a bad value of a secret property.
        let mut config = base_config(&settings);
        config.set("ssl.key.password", "hunter3-key").set("socket.timeout.ms", "hunter3-key");
        let created: Result<AdminClient<DefaultClientContext>, _> = config.create();
        let Err(refused) = created else { panic!("an invalid value is refused") };
        let shown = scrubbed(&settings, refused).to_string();
        assert!(!shown.contains("hunter3"), "{shown}");
    }

    #[test]
    fn clients_keep_their_guarantees_whatever_passes_through() {
        let mut settings = Settings::from_vars(Default::default()).unwrap();
        for (name, value) in [("acks", "1"), ("enable.idempotence", "false"), ("enable.auto.commit", "true")] {
            settings.kafka_props.insert(name.into(), value.into());
        }
        let producer = producer_config(&settings);
        assert_eq!((producer.get("acks"), producer.get("enable.idempotence")), (Some("all"), Some("true")));
        assert_eq!(consumer_config(&settings).get("enable.auto.commit"), Some("false"));
    }
}
