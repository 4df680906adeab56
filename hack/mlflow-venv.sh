#!/usr/bin/env bash
# The MLflow tracking server's virtualenv for the tests (tests/support/tracking.py, hack/mlflow.sh):
# $LFT_MLFLOW_VENV (default /var/cache/lft/mlflow-venv, shared by every clone like the wheel cache), with
# tests/requirements-mlflow-server.txt. Idempotent: reinstalls only when that file changed (hash stamp).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LFT_MLFLOW_VENV:-/var/cache/lft/mlflow-venv}
REQ=tests/requirements-mlflow-server.txt
want=$(sha256sum "$REQ" | cut -c1-16)
if [ -x "$VENV/bin/mlflow" ] && [ "$(cat "$VENV/.lft-stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r "$REQ"
echo "$want" > "$VENV/.lft-stamp"
echo "mlflow server venv ready: $VENV ($("$VENV/bin/mlflow" --version))"
