#!/usr/bin/env bash
# Runs the benchmarks: starts the broker and PostgreSQL (scripts/services.sh),
# builds in release mode, and prints the figures. Knobs: BENCH_RUNS (3),
# BENCH_RECORDS (200000), BENCH_LATENCY_SECS (60), BENCH_ONLY (noop,db,delivery,latency),
# BENCH_REF_PROPS (librdkafka properties for the reference consumer, k=v,k=v).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/services.sh up)"
cargo bench --locked --bench pipeline "$@"
