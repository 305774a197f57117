#!/usr/bin/env bash
# Runs the benchmarks: starts the broker and PostgreSQL (scripts/services.sh),
# creates a venv with the Python peer's client (target/bench-venv), builds in
# release mode, and prints the figures. Knobs: BENCH_RUNS (3), BENCH_RECORDS
# (200000), BENCH_LATENCY_SECS (60), BENCH_ONLY (noop,waits,db,peer,job,delivery,predict,latency), BENCH_WAITS_RECORDS (4000), BENCH_PREDICT_RECORDS (40000), BENCH_BACKENDS (sqlite,postgres),
# BENCH_REF_PROPS (librdkafka properties for the reference consumer, k=v,k=v),
# BENCH_BASELINE_BIN (another build of `cronsumer`, e.g. of an earlier commit:
# case (3) runs it too, alternating with this build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/services.sh up)"
venv=target/bench-venv
if ! "$venv/bin/python" -c "import confluent_kafka" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "confluent-kafka==2.16.1"
fi
export BENCH_PYTHON="$venv/bin/python"
cargo bench --locked --bench pipeline "$@"
