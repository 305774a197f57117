//! The two wire formats of a model call, as pure functions: the request for
//! a batch of instances, and the predictions read from a 2xx answer.
//!
//! - `json` (TensorFlow Serving's and Vertex AI's shape, and what a FastAPI
//!   `/predict` usually takes): `{"model", "version", "instances": [...]}`,
//!   answered by `{"predictions": [...]}`, one per instance, in order.
//! - `v2`, the Open Inference Protocol (KServe, Triton, Seldon MLServer):
//!   `POST {base}/v2/models/{model}[/versions/{v}]/infer` with one FP64 input
//!   tensor of shape `[n, k]` (the instances' `PREDICT_INPUT_FIELDS`);
//!   row `i` of each output tensor becomes part of prediction `i`, as
//!   `{output_name: value, or the row's values}`.

use serde_json::{json, Map, Value};

/// The name of the one input tensor of a `v2` call.
pub const V2_INPUT: &str = "input-0";

/// The body of a `json` call.
pub fn json_request(model: &str, version: Option<&str>, instances: &[&Value]) -> Value {
    let mut body = json!({ "model": model, "instances": instances });
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    body
}

/// Where a `v2` call goes: the model's (or its version's) `infer` endpoint.
pub fn v2_url(base: &str, model: &str, version: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    match version {
        Some(v) => format!("{base}/v2/models/{model}/versions/{v}/infer"),
        None => format!("{base}/v2/models/{model}/infer"),
    }
}

/// An instance's row of the `v2` input tensor: its `fields`, each a finite
/// number, in order; or why it has none (the record is dead-lettered).
pub fn v2_row(instance: &Value, fields: &[String]) -> Result<Vec<f64>, String> {
    fields
        .iter()
        .map(|f| match instance.get(f) {
            None | Some(Value::Null) => Err(format!("field `{f}` is missing (PREDICT_INPUT_FIELDS)")),
            Some(v) => {
                v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| format!("field `{f}` is not a finite number"))
            }
        })
        .collect()
}

/// The body of a `v2` call: one FP64 tensor of the rows, row-major.
pub fn v2_request(rows: &[Vec<f64>]) -> Value {
    let k = rows.first().map_or(0, Vec::len);
    let data: Vec<f64> = rows.iter().flatten().copied().collect();
    json!({ "inputs": [{ "name": V2_INPUT, "shape": [rows.len(), k], "datatype": "FP64", "data": data }] })
}

/// The predictions of a `json` answer, one per instance, or why they do not match.
pub fn json_predictions(answer: &Value, n: usize) -> Result<Vec<Value>, String> {
    let Some(predictions) = answer.get("predictions").and_then(Value::as_array) else {
        return Err("the answer has no `predictions` array".into());
    };
    if predictions.len() != n {
        return Err(format!("the answer has {} predictions for {n} instances", predictions.len()));
    }
    Ok(predictions.clone())
}

/// The predictions of a `v2` answer: row `i` of each output tensor, by the
/// output's name; or why the outputs do not match the `n` instances.
pub fn v2_predictions(answer: &Value, n: usize) -> Result<Vec<Value>, String> {
    let Some(outputs) = answer.get("outputs").and_then(Value::as_array).filter(|o| !o.is_empty()) else {
        return Err("the answer has no `outputs`".into());
    };
    let mut predictions = vec![Map::new(); n];
    for (o, output) in outputs.iter().enumerate() {
        let name = output.get("name").and_then(Value::as_str).map_or_else(|| format!("output-{o}"), str::to_string);
        let shape: Vec<u64> = match output.get("shape").and_then(Value::as_array) {
            Some(s) => {
                s.iter().map(Value::as_u64).collect::<Option<_>>().ok_or(format!("output `{name}`: bad shape"))?
            }
            None => return Err(format!("output `{name}` has no shape")),
        };
        if shape.first().copied() != Some(n as u64) {
            return Err(format!("output `{name}` has shape {shape:?} for {n} instances"));
        }
        let per_row: u64 = shape[1..].iter().product();
        let data = flatten(output.get("data").ok_or(format!("output `{name}` has no data"))?);
        if data.len() as u64 != n as u64 * per_row {
            return Err(format!("output `{name}` has {} values for shape {shape:?}", data.len()));
        }
        for (i, prediction) in predictions.iter_mut().enumerate() {
            let row = &data[i * per_row as usize..(i + 1) * per_row as usize];
            let value = if shape.len() == 1 { row[0].clone() } else { Value::Array(row.to_vec()) };
            prediction.insert(name.clone(), value);
        }
    }
    Ok(predictions.into_iter().map(Value::Object).collect())
}

/// Tensor data, flat (a server may nest it by row, as Triton accepts).
fn flatten(data: &Value) -> Vec<Value> {
    match data {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_calls_carry_the_model_and_its_instances_in_order() {
        let (a, b) = (json!({"symbol": "BTC", "close": 1.5}), json!({"symbol": "ETH"}));
        let body = json_request("m", Some("v1"), &[&a, &b]);
        assert_eq!(body, json!({"model": "m", "version": "v1", "instances": [a, b]}));
        assert_eq!(json_request("m", None, &[]), json!({"model": "m", "instances": []}));
        let answer = json!({"predictions": [{"p": 0.1}, 3]});
        assert_eq!(json_predictions(&answer, 2), Ok(vec![json!({"p": 0.1}), json!(3)]));
        assert_eq!(json_predictions(&answer, 3), Err("the answer has 2 predictions for 3 instances".into()));
        assert!(json_predictions(&json!({"outputs": []}), 0).is_err());
    }

    #[test]
    fn v2_calls_send_one_fp64_tensor_of_the_input_fields() {
        let fields = ["open".to_string(), "close".to_string()];
        assert_eq!(v2_row(&json!({"open": 1, "close": 2.5, "x": "y"}), &fields), Ok(vec![1.0, 2.5]));
        assert_eq!(v2_row(&json!({"open": 1}), &fields), Err("field `close` is missing (PREDICT_INPUT_FIELDS)".into()));
        assert_eq!(
            v2_row(&json!({"open": "1", "close": 2}), &fields),
            Err("field `open` is not a finite number".into())
        );
        let body = v2_request(&[vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(
            body,
            json!({"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}]})
        );
        assert_eq!(v2_url("http://h:1/", "m", None), "http://h:1/v2/models/m/infer");
        assert_eq!(v2_url("http://h:1", "m", Some("3")), "http://h:1/v2/models/m/versions/3/infer");
    }

    #[test]
    fn v2_outputs_become_one_prediction_per_row() {
        let answer = json!({"outputs": [
            {"name": "p_up", "shape": [2], "datatype": "FP64", "data": [0.25, 0.75]},
            {"name": "probs", "shape": [2, 2], "datatype": "FP64", "data": [[0.75, 0.25], [0.25, 0.75]]},
        ]});
        let got = v2_predictions(&answer, 2).unwrap();
        assert_eq!(got[0], json!({"p_up": 0.25, "probs": [0.75, 0.25]}));
        assert_eq!(got[1], json!({"p_up": 0.75, "probs": [0.25, 0.75]}));
        let short = json!({"outputs": [{"name": "p", "shape": [2], "data": [0.5]}]});
        assert_eq!(v2_predictions(&short, 2), Err("output `p` has 1 values for shape [2]".into()));
        let other_n = json!({"outputs": [{"name": "p", "shape": [3], "data": [1, 2, 3]}]});
        assert_eq!(v2_predictions(&other_n, 2), Err("output `p` has shape [3] for 2 instances".into()));
        assert!(v2_predictions(&json!({"outputs": []}), 1).is_err());
    }
}
