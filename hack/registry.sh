#!/usr/bin/env bash
# A local OCI registry (github.com/distribution/distribution v3, built from the Go module proxy and cached) on
# loopback, for `make release` and the end-to-end install from a registry. The cluster's containerd (a host
# process, tests/cluster/up.sh) pulls from it over plain HTTP (its hosts.toml names it); Docker and Helm push
# to it (Docker treats 127.0.0.0/8 as an insecure registry by default; helm push --plain-http).
#   hack/registry.sh start   build if needed, start (idempotent), wait until it answers
#   hack/registry.sh stop
#   hack/registry.sh env     print LFT_REGISTRY=127.0.0.1:<port>
# Storage: $LFT_STATE/registry/data (kept between runs: a second push of unchanged layers sends nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${LFT_STATE:-/var/lib/lft}
LFT_CACHE=${LFT_CACHE:-/var/cache/lft}
VERSION=${REGISTRY_VERSION:-v3.1.2}
PORT=${LFT_REGISTRY_PORT:-5000}
ADDR=127.0.0.1:$PORT
BIN=$LFT_CACHE/registry/${VERSION#v}/registry
DIR=$STATE/registry
PIDFILE=$DIR/registry.pid
LOG=$DIR/registry.log

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answers() { curl -fsS -o /dev/null --max-time 5 "http://$ADDR/v2/" 2>/dev/null; }

case ${1:-start} in
  start)
    [[ -x $BIN ]] || REGISTRY_VERSION=$VERSION bash hack/build-from-modules.sh registry
    mkdir -p "$DIR/data"
    if running && ! answers; then
      echo "registry (pid $(cat "$PIDFILE")) does not answer; restarting it" >&2
      kill "$(cat "$PIDFILE")" 2>/dev/null || true
      sleep 1
      rm -f "$PIDFILE"
    fi
    if ! running; then
      cat >"$DIR/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: $ADDR
YAML
      # OTEL_TRACES_EXPORTER=none: v3 exports traces by default (to a collector that is not there).
      OTEL_TRACES_EXPORTER=none nohup "$BIN" serve "$DIR/config.yml" >"$LOG" 2>&1 &
      echo $! >"$PIDFILE"
    fi
    for _ in $(seq 1 60); do answers && break; sleep 0.5; done
    answers || { echo "registry did not start; log:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
    echo "registry: http://$ADDR ($("$BIN" --version | awk '{print $NF}'), data in $DIR/data)"
    ;;
  stop)
    if running; then kill "$(cat "$PIDFILE")"; fi
    rm -f "$PIDFILE"
    ;;
  env) echo "LFT_REGISTRY=$ADDR" ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
