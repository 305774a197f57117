"""Example model server for cronsumer's `predictions` module.

At start it trains a small scikit-learn classifier on synthetic candles (no weights
to download, so it works offline and in CI), predicting whether the next close is
above this candle's close, and serves it over two protocols:

* "json" (TensorFlow Serving / Vertex AI shape): POST /predict
  {"instances": [{candle}, ...]} -> {"predictions": [{"p_up", "direction"}, ...]}
* Open Inference Protocol v2 (KServe, Triton): GET /v2/health/ready,
  GET /v2/models/{name}, POST /v2/models/{name}[/versions/{v}]/infer taking an
  [n, 5] FP64 tensor with columns open, high, low, close, volume.

Environment: MODEL_HOST (127.0.0.1), MODEL_PORT (8500), MODEL_NAME (candles),
MODEL_VERSION (v1), MODEL_AUTH_TOKEN (if set, POSTs need "Authorization: Bearer <it>").
"""
import hmac
import logging
import math
import os
import time

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import candles

NAME = os.environ.get("MODEL_NAME", "candles")
VERSION = os.environ.get("MODEL_VERSION", "v1")
TOKEN = os.environ.get("MODEL_AUTH_TOKEN") or None
COLUMNS = ("open", "high", "low", "close", "volume")  # also the v2 tensor's column order
OUTPUTS = [{"name": "p_up", "datatype": "FP64", "shape": [-1]}, {"name": "up", "datatype": "BOOL", "shape": [-1]}]
log = logging.getLogger("model-server")


class BadInput(ValueError):
    """A request the client must fix: 422 on /predict, 400 on v2 (each protocol's habit)."""


def features(x):
    """Per-candle features that do not depend on the price level, so one model fits
    BTC at 30000 and a penny stock alike: body return, range, wicks, where the close
    sits in the range, and log volume."""
    o, h, l, c, v = x.T
    span = h - l
    where_closed = np.divide(c - l, span, out=np.full_like(c, 0.5), where=span > 0)
    return np.column_stack([np.log(c / o), span / o, (h - np.maximum(o, c)) / o,
                            (np.minimum(o, c) - l) / o, where_closed, np.log1p(v)])


def train(count=5000, seed=7):
    """Fit on the first 80% of a seeded series, score on the rest (held out)."""
    rows = np.array([[k[c] for c in COLUMNS] for k in candles.generate(count=count, seed=seed)])
    x, y = features(rows[:-1]), rows[1:, 3] > rows[:-1, 3]  # label: next close is higher
    cut = int(len(y) * 0.8)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x[:cut], y[:cut])
    return model, model.score(x[:cut], y[:cut]), model.score(x[cut:], y[cut:])


started = time.monotonic()
MODEL, TRAIN_ACCURACY, HELD_OUT_ACCURACY = train()
TRAIN_SECONDS = time.monotonic() - started


def p_up(rows):
    """Probability that the next close is higher, one per [o, h, l, c, v] row."""
    if not rows:
        return []
    return [round(float(p), 6) for p in MODEL.predict_proba(features(np.array(rows, dtype=float)))[:, 1]]


def number(x, what):
    # bool is an int in Python, but `true` is no price; huge ints overflow to inf.
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise BadInput(f"{what} is not a number")
    try:
        x = float(x)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):  # Python's json reads NaN and Infinity
        raise BadInput(f"{what} is not finite")
    return x


def check_candle(row, where):
    """Reject candles the features cannot handle (log and division by open)."""
    o, h, l, c, v = row
    if min(o, h, l, c) <= 0:
        raise BadInput(f"{where}: prices must be above 0")
    if v < 0:
        raise BadInput(f"{where}: volume is negative")
    if h < l:
        raise BadInput(f"{where}: high {h} is below low {l}")
    return row


async def read_json(request):
    try:
        return await request.json()
    except ValueError:  # bad JSON or bad UTF-8
        raise BadInput("body is not valid JSON") from None


def authorized(request):
    if TOKEN is None:
        return True
    given = request.headers.get("authorization", "").encode()
    return hmac.compare_digest(given, f"Bearer {TOKEN}".encode())  # constant time


UNAUTHORIZED = "missing or wrong bearer token"
app = FastAPI(title="cronsumer example model server")


# --- "json" protocol ---------------------------------------------------------------

def detail(status, message, **headers):
    return JSONResponse({"detail": message}, status, headers=headers or None)


@app.post("/predict")
async def predict(request: Request):
    if not authorized(request):
        return detail(401, UNAUTHORIZED, **{"WWW-Authenticate": "Bearer"})
    try:
        body = await read_json(request)
    except BadInput as e:
        return detail(400, str(e))
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        return detail(422, "body must be an object with an instances list")
    model, version = body.get("model"), body.get("version")
    if model is not None and model != NAME:
        return detail(404, f"model {model!r} not found; this server serves {NAME!r}")
    if version is not None and str(version) != VERSION:
        return detail(404, f"version {version!r} of {NAME!r} not found; this server serves {VERSION!r}")
    try:
        rows = [instance_row(inst, i) for i, inst in enumerate(body["instances"])]
    except BadInput as e:
        return detail(422, str(e))  # one bad instance fails the whole batch
    return {"predictions": [{"p_up": p, "direction": "up" if p > 0.5 else "down"} for p in p_up(rows)]}


def instance_row(inst, i):
    where = f"instance {i}"
    if not isinstance(inst, dict):
        raise BadInput(f"{where}: not an object")
    for name in COLUMNS:
        if name not in inst:
            raise BadInput(f"{where}: field {name} is missing")
    # Extra fields (symbol, open_time, ...) are fine and ignored.
    return check_candle([number(inst[name], f"{where}: field {name}") for name in COLUMNS], where)


# --- Open Inference Protocol v2 ----------------------------------------------------

def error(status, message, **headers):
    return JSONResponse({"error": message}, status, headers=headers or None)


def not_found(name, version):
    if name != NAME:
        return error(404, f"model {name!r} not found; this server serves {NAME!r}")
    if version is not None and version != VERSION:
        return error(404, f"version {version!r} of {NAME!r} not found; this server serves {VERSION!r}")
    return None


@app.get("/v2")
async def server_metadata():
    return {"name": "cronsumer-example-model-server", "version": "1", "extensions": []}


@app.get("/v2/health/live")
async def live():
    return {"live": True}


@app.get("/v2/health/ready")
async def ready():
    return {"ready": True}  # the model is trained before the port opens


@app.get("/v2/models/{name}/ready")
@app.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(name: str, version: str | None = None):
    return not_found(name, version) or {"name": NAME, "ready": True}


@app.get("/v2/models/{name}")
@app.get("/v2/models/{name}/versions/{version}")
async def model_metadata(name: str, version: str | None = None):
    return not_found(name, version) or {
        "name": NAME, "versions": [VERSION], "platform": "scikit-learn",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 5]}], "outputs": OUTPUTS,
        "parameters": {"columns": list(COLUMNS), "train_accuracy": round(TRAIN_ACCURACY, 4),
                       "held_out_accuracy": round(HELD_OUT_ACCURACY, 4)}}


@app.post("/v2/models/{name}/infer")
@app.post("/v2/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, version: str | None = None):
    if not authorized(request):
        return error(401, UNAUTHORIZED, **{"WWW-Authenticate": "Bearer"})
    missing = not_found(name, version)
    if missing:
        return missing
    try:
        body = await read_json(request)
        rows, wanted = tensor_rows(body), requested_outputs(body)
    except BadInput as e:
        return error(400, str(e))
    probs = p_up(rows)
    data = {"p_up": probs, "up": [p > 0.5 for p in probs]}
    response = {"model_name": NAME, "model_version": VERSION,
                "outputs": [dict(o, shape=[len(rows)], data=data[o["name"]]) for o in OUTPUTS if o["name"] in wanted]}
    if "id" in body:
        response["id"] = body["id"]  # the protocol echoes the request id
    return response


def flatten(x):
    return [z for y in x for z in flatten(y)] if isinstance(x, list) else [x]


def tensor_rows(body):
    """The one input tensor as [o, h, l, c, v] rows; data may be flat (row-major) or nested."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise BadInput("body must be an object whose inputs list holds exactly one tensor")
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict):
        raise BadInput("inputs[0] is not an object")
    if tensor.get("datatype") not in ("FP64", "FP32"):
        raise BadInput(f"datatype must be FP64 (or FP32), got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and shape[1] == 5
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise BadInput(f"shape must be [n, 5] (open, high, low, close, volume), got {shape!r}")
    if not isinstance(tensor.get("data"), list):
        raise BadInput("data must be a list")
    flat = flatten(tensor["data"])
    if len(flat) != shape[0] * 5:
        raise BadInput(f"shape {shape} needs {shape[0] * 5} values, data has {len(flat)}")
    values = [number(v, f"row {k // 5}: field {COLUMNS[k % 5]}") for k, v in enumerate(flat)]
    return [check_candle(values[i:i + 5], f"row {i // 5}") for i in range(0, len(values), 5)]


def requested_outputs(body):
    """Names of the outputs to return: all, unless the request lists some."""
    names = [o["name"] for o in OUTPUTS]
    asked = body.get("outputs")
    if asked is None:
        return names
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise BadInput("outputs must be a list of objects")
    for o in asked:
        if o.get("name") not in names:
            raise BadInput(f"unknown output {o.get('name')!r}; outputs are {names}")
    return [o["name"] for o in asked]


if __name__ == "__main__":
    host, port = os.environ.get("MODEL_HOST", "127.0.0.1"), int(os.environ.get("MODEL_PORT", "8500"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    log.info("model %s %s ready: trained in %.2f s, training accuracy %.3f (held out %.3f); serving http://%s:%d",
             NAME, VERSION, TRAIN_SECONDS, TRAIN_ACCURACY, HELD_OUT_ACCURACY, host, port)
    uvicorn.run(app, host=host, port=port)
