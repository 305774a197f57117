//! Topic `candles` (module `predictions`, off until `PREDICT_URL` is set):
//! each batch of records goes to a model server in one call, and each
//! record's prediction is stored in `predictions`, in the batch's
//! transaction with its offsets: once per record, however often the model
//! is called for it (a retried batch calls it again).
//!
//! Records are JSON objects of any shape (for `PREDICT_PROTOCOL=v2`, with a
//! number in each of `PREDICT_INPUT_FIELDS`); any other is dead-lettered
//! before a call. Every answer has a rule (see [`crate::predict::Answer`]):
//! predictions are stored; a refusal (400, 422), a batch too large (413) or
//! predictions that do not match the instances split the batch in halves
//! until the records at fault are found, and each is dead-lettered with the
//! model's words; anything else (the server away, or set up wrong) fails the
//! batch transiently: it waits with backoff (honouring `Retry-After`), its
//! partitions paused, nothing dead-lettered, however long it lasts.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::consume::{payload, Handler, HandlerContext, HandlerError, Record};
use crate::db::predictions::{insert_all, NewPrediction};
use crate::events::{Event as _, PredictionsMade};
use crate::predict::{Answer, ModelClient};

/// The module's name (`KAFKA_TOPIC_PREDICTIONS`, `CONSUMER_BATCH_SIZE_PREDICTIONS`).
pub const NAME: &str = "predictions";
/// Its topic, unless `KAFKA_TOPIC_PREDICTIONS` names another.
pub const TOPIC: &str = "candles";

#[derive(Default)]
pub struct Predictions {
    /// Made at the first batch, from the settings (one per lane).
    client: OnceLock<Option<ModelClient>>,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// The model's answer for it, and how long that call took.
    Predicted(Value, Duration),
    /// Why it is dead-lettered.
    Refused(String),
}

/// How a batch went: each record's verdict (by index) and the calls it took.
struct Outcome {
    verdicts: Vec<Option<Verdict>>,
    calls: usize,
}

/// Predicts `items` (indices into `instances`) with one call; when the model
/// refuses the batch, halves it until the records at fault are alone.
/// `Err`: the model server is away or set up wrong (the batch waits).
fn predict(
    call: &mut impl FnMut(&[&Value]) -> (Answer, Duration),
    instances: &[&Value],
    items: &[usize],
    out: &mut Outcome,
) -> Result<(), HandlerError> {
    if items.is_empty() {
        return Ok(());
    }
    let batch: Vec<&Value> = items.iter().map(|&i| instances[i]).collect();
    out.calls += 1;
    let (answer, latency) = call(&batch);
    let refusal = match answer {
        Answer::Predicted(predictions) => {
            for (&i, p) in items.iter().zip(predictions) {
                out.verdicts[i] = Some(match p {
                    Value::Null => Verdict::Refused("the model gave no prediction for this record (null)".into()),
                    p => Verdict::Predicted(p, latency),
                });
            }
            return Ok(());
        }
        Answer::Refused(why) | Answer::TooLarge(why) | Answer::Mismatch(why) => why,
        Answer::Unavailable { reason, retry_after: Some(after), .. } => {
            return Err(HandlerError::Later { message: reason, after })
        }
        Answer::Unavailable { reason, .. } => return Err(HandlerError::Transient(reason)),
    };
    if let [i] = items {
        out.verdicts[*i] = Some(Verdict::Refused(format!("the model refused this record: {refusal}")));
        return Ok(());
    }
    let (left, right) = items.split_at(items.len() / 2);
    predict(call, instances, left, out)?;
    predict(call, instances, right, out)
}

/// The record field `field` as a prediction's key: text as it is, a number
/// or a boolean as written.
fn key_of(instance: &Value, field: &str) -> Option<String> {
    match instance.get(field)? {
        Value::String(s) => Some(s.clone()),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

impl Handler for Predictions {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn off(&self, settings: &crate::config::Settings) -> Option<String> {
        settings.predict_url.is_none().then(|| "PREDICT_URL is not set".to_string())
    }

    fn handle(&self, records: &[Record], ctx: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        let Some(client) = self.client.get_or_init(|| ModelClient::new(ctx.settings())) else {
            return Err(HandlerError::Transient("the predictions module is off: PREDICT_URL is not set".into()));
        };
        let mut fit: Vec<(&Record, Value)> = Vec::with_capacity(records.len());
        for r in records {
            let instance = payload::json_object(r, ctx.max_record_bytes()).map(Value::Object);
            match instance.and_then(|v| client.unfit(&v).map_or(Ok(v), Err)) {
                Ok(v) => fit.push((r, v)),
                Err(reason) => ctx.reject(r, reason),
            }
        }
        let instances: Vec<&Value> = fit.iter().map(|(_, v)| v).collect();
        let mut out = Outcome { verdicts: vec![None; fit.len()], calls: 0 };
        let all: Vec<usize> = (0..fit.len()).collect();
        let mut call = |batch: &[&Value]| {
            let c = client.call(batch);
            (c.answer, c.latency)
        };
        predict(&mut call, &instances, &all, &mut out)?;
        let s = ctx.settings();
        let (model, version) = (s.predict_model.clone(), s.predict_model_version.clone());
        let now = crate::db::now();
        let mut rows = Vec::with_capacity(fit.len());
        let mut sources = Vec::with_capacity(fit.len());
        let mut refused = Vec::new();
        for ((r, instance), verdict) in fit.iter().zip(out.verdicts) {
            match verdict {
                Some(Verdict::Predicted(prediction, latency)) => {
                    sources.push(*r);
                    rows.push(NewPrediction {
                        source_topic: r.topic.clone(),
                        source_partition: r.partition,
                        source_offset: r.offset,
                        source_fingerprint: Some(r.fingerprint()),
                        key: key_of(instance, &s.predict_key_field),
                        model: model.clone(),
                        model_version: version.clone(),
                        input: instance.to_string(),
                        prediction: prediction.to_string(),
                        latency_ms: latency.as_millis() as i64,
                        created_at: now,
                    });
                }
                Some(Verdict::Refused(reason)) => refused.push((*r, reason)),
                // Every record of a call that succeeded has a verdict.
                None => return Err(HandlerError::Other("a record got no verdict from the model call".into())),
            }
        }
        let stored = insert_all(ctx.db(), &rows)?;
        for &i in &stored.reused {
            ctx.reject_reused(sources[i]);
        }
        for (r, reason) in &refused {
            ctx.reject(r, reason.as_str());
        }
        let topic = records.first().map_or("", |r| r.topic.as_str());
        PredictionsMade { topic, stored: stored.inserted.len(), refused: refused.len(), calls: out.calls }.emit();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A model that refuses the instances whose `bad` is true, answering
    /// the rest with their `x` doubled.
    fn refusing(batch: &[&Value]) -> (Answer, Duration) {
        if batch.iter().any(|v| v["bad"] == json!(true)) {
            return (Answer::Refused("bad instance".into()), Duration::ZERO);
        }
        let p = batch.iter().map(|v| json!(v["x"].as_i64().unwrap() * 2)).collect();
        (Answer::Predicted(p), Duration::from_millis(5))
    }

    fn run(instances: &[Value], model: impl FnMut(&[&Value]) -> (Answer, Duration)) -> Result<Outcome, HandlerError> {
        let mut model = model;
        let refs: Vec<&Value> = instances.iter().collect();
        let mut out = Outcome { verdicts: vec![None; refs.len()], calls: 0 };
        predict(&mut model, &refs, &(0..refs.len()).collect::<Vec<_>>(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn refused_records_are_found_by_halving_and_the_rest_predicted() {
        let instances: Vec<Value> = (0..16).map(|x| json!({"x": x, "bad": x == 5 || x == 6})).collect();
        let out = run(&instances, refusing).unwrap();
        for (x, v) in out.verdicts.iter().enumerate() {
            match v {
                Some(Verdict::Refused(why)) => {
                    assert!(x == 5 || x == 6, "{x} refused");
                    assert_eq!(why, "the model refused this record: bad instance");
                }
                Some(Verdict::Predicted(p, _)) => assert_eq!(*p, json!(x * 2), "{x}"),
                None => panic!("{x} has no verdict"),
            }
        }
        assert!(out.calls <= 1 + 2 * 2 * 4, "{} calls for 2 refused of 16", out.calls);
        assert_eq!(run(&instances[..4], refusing).unwrap().calls, 1, "a clean batch is one call");
    }

    #[test]
    fn a_null_prediction_is_refused_and_an_unavailable_server_fails_the_batch() {
        let instances = vec![json!({"x": 1}), json!({"x": 2})];
        let out = run(&instances, |_| (Answer::Predicted(vec![json!(1), Value::Null]), Duration::ZERO)).unwrap();
        assert!(matches!(&out.verdicts[1], Some(Verdict::Refused(w)) if w.contains("no prediction")));
        let away = |_: &[&Value]| {
            let a = Answer::Unavailable {
                reason: "503".into(),
                retry_after: Some(Duration::from_secs(3)),
                misconfigured: false,
            };
            (a, Duration::ZERO)
        };
        let err = run(&instances, away).err().expect("the batch fails");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(err.kind(), crate::consume::sink::FailureKind::Transient, "nothing is dead-lettered");
        let mismatch_once = |batch: &[&Value]| match batch.len() {
            2 => (Answer::Mismatch("1 prediction for 2".into()), Duration::ZERO),
            _ => (Answer::Predicted(vec![json!(0)]), Duration::ZERO),
        };
        let out = run(&instances, mismatch_once).unwrap();
        assert!(out.verdicts.iter().all(|v| matches!(v, Some(Verdict::Predicted(..)))), "split, then each predicted");
        assert_eq!(out.calls, 3);
    }

    #[test]
    fn the_key_is_the_fields_text() {
        assert_eq!(key_of(&json!({"symbol": "BTCUSDT"}), "symbol"), Some("BTCUSDT".into()));
        assert_eq!(key_of(&json!({"id": 42}), "id"), Some("42".into()));
        assert_eq!(key_of(&json!({"id": [1]}), "id"), None);
        assert_eq!(key_of(&json!({}), "symbol"), None);
    }
}
