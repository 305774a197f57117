//! Commands that move records: `produce`, `tail`, and the topic check `topics`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde_json::json;

use super::output::{bytes, Output};
use super::UsageError;
use crate::config::Settings;
use crate::kafka;
use crate::registry::Registry;

pub fn produce(
    settings: &Settings,
    registry: &Registry,
    topic: &str,
    key: Option<&str>,
    payload: Option<String>,
    file: Option<PathBuf>,
    raw: bool,
) -> anyhow::Result<()> {
    check_topic(settings, registry, topic)?;
    let mut producer = crate::kafka::producer::RecordProducer::new(settings)?;
    let key = key.map(str::as_bytes);
    let valid = |payload: &str, what: &str| -> anyhow::Result<()> {
        if !raw {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(payload) {
                bail!(UsageError(format!("{what} is not JSON ({e}); send it as it is with --raw")));
            }
        }
        Ok(())
    };
    match (payload, file) {
        (Some(payload), None) => {
            valid(&payload, "the payload")?;
            producer.send(topic, key, payload.as_bytes())?
        }
        (None, Some(path)) => {
            let (reader, total): (Box<dyn BufRead>, u64) = if path.as_os_str() == "-" {
                (Box::new(BufReader::new(std::io::stdin())), 0)
            } else {
                let open = || std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()));
                let total = BufReader::new(open()?).lines().count() as u64;
                (Box::new(BufReader::new(open()?)), total)
            };
            // Drawn only on a terminal (stderr), and only for files worth waiting on.
            let bar = if total >= 1000 { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::hidden() };
            for (n, line) in reader.lines().enumerate() {
                let line = line.context("cannot read input")?;
                if line.trim().is_empty() {
                    continue;
                }
                valid(&line, &format!("line {}", n + 1))?;
                producer.send(topic, key, line.as_bytes())?;
                bar.inc(1);
            }
            bar.finish_and_clear();
        }
        _ => {
            bail!(UsageError(
                "give one payload as an argument, - or --file - for standard input, or --file FILE".into()
            ))
        }
    }
    let delivered = producer.finish(topic)?;
    println!("delivered {delivered} record(s) to {topic}");
    Ok(())
}

/// A topic that does not exist is an error; one that no consumer module
/// handles gets a warning (records there are not stored by this service).
fn check_topic(settings: &Settings, registry: &Registry, topic: &str) -> anyhow::Result<()> {
    let admin = kafka::admin_client(settings)?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .with_context(|| format!("cannot reach Kafka at {}", settings.kafka_bootstrap_servers))?;
    if !kafka::existing_topics(&metadata).iter().any(|(name, _)| name == topic) {
        bail!("topic {topic} does not exist; create it with `cronsumer topics --create` (a module's topic) or your broker's tools");
    }
    if !registry.topics(settings).iter().any(|t| t == topic) {
        eprintln!("warning: no consumer module handles topic {topic}; this service will not store its records");
    }
    Ok(())
}

pub fn tail(
    settings: &Settings,
    out: &Output,
    topic: &str,
    from_beginning: bool,
    max: Option<u64>,
) -> anyhow::Result<()> {
    let admin = kafka::admin_client(settings)?;
    let metadata = kafka::wait_for_broker(settings, &admin, &|| false)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else {
        bail!(UsageError(format!("topic {topic} does not exist (see `cronsumer topics`)")));
    };
    // No group: partitions are assigned directly, so the service's group is untouched.
    let mut config = kafka::base_config(settings);
    config.set("enable.auto.commit", "false").set("group.id", format!("cronsumer-tail-{}", std::process::id()));
    let consumer: BaseConsumer = kafka::create(settings, &config, rdkafka::consumer::DefaultConsumerContext)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let start = if from_beginning { rdkafka::Offset::Beginning } else { rdkafka::Offset::End };
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), start)?;
    }
    consumer.assign(&tpl)?;
    if !out.json {
        eprintln!("tailing {topic} ({} partitions); Ctrl-C to stop", t.partitions().len());
    }
    let mut seen = 0u64;
    while max.is_none_or(|m| seen < m) {
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = msg?;
        seen += 1;
        let fields = [
            ("partition", json!(m.partition())),
            ("offset", json!(m.offset())),
            ("key", bytes(m.key())),
            ("payload", bytes(m.payload())),
        ];
        if out.json {
            out.object(&fields);
        } else {
            println!(
                "{}/{}@{} key={} {}",
                topic,
                m.partition(),
                m.offset(),
                fields[2].1.as_str().unwrap_or("-"),
                fields[3].1.as_str().unwrap_or("-")
            );
        }
    }
    Ok(())
}

pub fn topics(
    settings: &Settings,
    registry: &Registry,
    out: &Output,
    create: bool,
    partitions: i32,
) -> anyhow::Result<ExitCode> {
    let admin = kafka::admin_client(settings)?;
    let metadata = kafka::wait_for_broker(settings, &admin, &|| false)?;
    let existing = kafka::existing_topics(&metadata);
    let required = registry.topics(settings);
    let missing: Vec<String> = required.iter().filter(|t| !existing.iter().any(|(n, _)| n == *t)).cloned().collect();
    if create && !missing.is_empty() {
        kafka::create_topics(&admin, &missing, partitions)?;
    }
    let mut rows: Vec<Vec<serde_json::Value>> = required
        .iter()
        .map(|t| match existing.iter().find(|(n, _)| n == t) {
            Some((_, p)) => vec![json!(t), json!(true), json!(p), json!("on")],
            None if create => vec![json!(t), json!(true), json!(partitions), json!("on")],
            None => vec![json!(t), json!(false), serde_json::Value::Null, json!("on")],
        })
        .collect();
    // A module that is off needs no topic: it is listed, saying why.
    for m in registry.modules(settings) {
        if let Some(why) = m.off {
            let p = existing.iter().find(|(n, _)| *n == m.topic).map(|(_, p)| *p);
            rows.push(vec![json!(m.topic), json!(p.is_some()), json!(p), json!(format!("off ({}): {why}", m.name))]);
        }
    }
    out.rows(&["TOPIC", "EXISTS", "PARTITIONS", "MODULE"], &rows);
    if create || missing.is_empty() {
        if create && !missing.is_empty() && !out.json {
            println!("created {}", missing.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("missing: {} (run `cronsumer topics --create`)", missing.join(", "));
    Ok(ExitCode::from(1))
}
