#!/usr/bin/env bash
# Create/refresh the project's virtualenv (.venv) with the pinned dependencies.
# Idempotent: reinstalls only when requirements files changed (hash stamp in the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp_of() { cat requirements.txt trainer_image/requirements.txt operator/requirements.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-16; }
want=$(stamp_of)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.lft-stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip 23 needs >14 min to resolve this set; pip 26 about 3 (local-cluster.md).
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r requirements.txt
"$VENV/bin/pip" install -q --no-deps -e .
echo "$want" > "$VENV/.lft-stamp"
echo "venv ready: $VENV"
