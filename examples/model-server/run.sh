#!/usr/bin/env bash
# Starts the example model server (server.py) in its own venv, creating the venv
# and installing requirements.txt on first use. Works from any directory.
#   MODEL_VENV  venv path (default: .venv beside this script)
#   PYTHON      interpreter that creates the venv (default: python3)
#   MODEL_HOST, MODEL_PORT, MODEL_NAME, MODEL_VERSION, MODEL_AUTH_TOKEN: see server.py
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${MODEL_VENV:-$here/.venv}"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
  echo "model-server: creating venv $venv" >&2
  "${PYTHON:-python3}" -m venv "$venv"
fi

# Reinstall when requirements.txt changed since the last install (a stamp file
# holds its hash) or a package is gone; find_spec checks without importing, so
# an up-to-date venv adds no start-up time.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] ||
   ! "$py" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("fastapi", "uvicorn", "sklearn", "numpy")))'; then
  echo "model-server: installing requirements into $venv (first time takes a minute)" >&2
  "$py" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi

exec "$py" "$here/server.py" "$@"
