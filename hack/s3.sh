#!/usr/bin/env bash
# The S3-compatible server for the local cluster's end-to-end runs: moto's standalone server on
# the Docker bridge's gateway address, which both this host and the pods reach (local-cluster.md).
#   hack/s3.sh start   start it (idempotent) and create the bucket
#   hack/s3.sh stop
#   hack/s3.sh env     print the endpoint variables (host side and pod side are the same URL here)
# Credentials: moto accepts any; the e2e uses fixed test values, stored in a Secret per namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${LFT_STATE:-/var/lib/lft}
PIDFILE=$STATE/s3/moto.pid
LOG=$STATE/s3/moto.log
PORT=${LFT_S3_PORT:-9000}
BUCKET=${LFT_S3_BUCKET:-lft}
PY=${PYTHON:-.venv/bin/python}

bridge_ip() {
  bash "$(dirname "${BASH_SOURCE[0]}")/bridge-ip.sh"
}

endpoint() {
  local ip
  ip=$(bridge_ip)
  [ -n "$ip" ] || { echo "docker0 has no IPv4 address: start Docker first (hack/docker.sh)" >&2; exit 1; }
  echo "http://$ip:$PORT"
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-start}" in
  start)
    mkdir -p "$STATE/s3"
    url=$(endpoint)
    if running && ! curl -fsS -o /dev/null --max-time 5 "$url/" 2>/dev/null; then
      # Alive but broken (e.g. its virtualenv was deleted under it): replace it.
      echo "S3 server (pid $(cat "$PIDFILE")) does not answer; restarting it" >&2
      kill "$(cat "$PIDFILE")" 2>/dev/null || true
      sleep 1
      kill -9 "$(cat "$PIDFILE")" 2>/dev/null || true
      rm -f "$PIDFILE"
    fi
    if ! running; then
      host=${url#http://}; host=${host%:*}
      nohup "$PY" -m moto.server -H "$host" -p "$PORT" >"$LOG" 2>&1 &
      echo $! >"$PIDFILE"
    fi
    for _ in $(seq 1 60); do
      curl -fsS -o /dev/null "$url/" 2>/dev/null && break
      sleep 0.5
    done
    curl -fsS -o /dev/null "$url/" || { echo "S3 server did not start; log:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$PY" - "$url" "$BUCKET" <<'PYEOF'
import sys, boto3
url, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=bucket)
PYEOF
    echo "S3 server: $url (bucket $BUCKET)"
    ;;
  stop)
    if running; then kill "$(cat "$PIDFILE")"; fi
    rm -f "$PIDFILE"
    ;;
  env)
    echo "LFT_S3_ENDPOINT=$(endpoint)"
    echo "LFT_S3_BUCKET=$BUCKET"
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
