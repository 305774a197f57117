#!/usr/bin/env bash
# Runs every test against real services: installs the tools the tests use
# (faketime, chromium, promtool) and starts the broker and PostgreSQL
# (installing what is missing), then the unit and integration tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/services.sh tools
eval "$(scripts/services.sh up)"
cargo test --locked --features fault-injection "$@"
