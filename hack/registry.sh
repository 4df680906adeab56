#!/usr/bin/env bash
# A local OCI registry (github.com/distribution/distribution v3, built from the Go module proxy and cached) on
# loopback, for `make release` and the end-to-end install from a registry. Docker and Helm push to it on
# loopback (Docker treats 127.0.0.0/8 as an insecure registry by default; helm push --plain-http). The kind
# nodes pull from a second, read-only instance over the same storage on the Docker bridge's address (the host as
# the nodes reach it): their containerd's hosts.toml maps 127.0.0.1:<port> there (hack/kind/up.sh), so the
# image references stay the ones the release pushed.
#   hack/registry.sh start   build if needed, start (idempotent), wait until it answers
#   hack/registry.sh stop
#   hack/registry.sh env     print LFT_REGISTRY=127.0.0.1:<port> and LFT_REGISTRY_MIRROR=<bridge ip>:<port>
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
bridge_ip() { bash hack/bridge-ip.sh; }

# instance NAME: its address, pid file, log and config (registry: read-write on loopback; mirror: read-only on
# the bridge).
instance() {
  NAME=$1
  if [[ $NAME == registry ]]; then IADDR=$ADDR; else IADDR=$(bridge_ip):$PORT; fi
  PIDFILE=$DIR/$NAME.pid LOG=$DIR/$NAME.log CONFIG=$DIR/$NAME.yml
}
running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answers() { curl -fsS -o /dev/null --max-time 5 "http://$IADDR/v2/" 2>/dev/null; }

start_instance() {  # start_instance NAME READONLY(true|false)
  instance "$1"
  if running && ! answers; then
    echo "$NAME (pid $(cat "$PIDFILE")) does not answer; restarting it" >&2
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    sleep 1
    rm -f "$PIDFILE"
  fi
  if ! running; then
    cat >"$CONFIG" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
  maintenance:
    readonly:
      enabled: $2
    uploadpurging:
      enabled: false
http:
  addr: $IADDR
YAML
    # OTEL_TRACES_EXPORTER=none: v3 exports traces by default (to a collector that is not there).
    OTEL_TRACES_EXPORTER=none nohup "$BIN" serve "$CONFIG" >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
  fi
  for _ in $(seq 1 60); do answers && break; sleep 0.5; done
  answers || { echo "$NAME did not start; log:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
}

case ${1:-start} in
  start)
    [[ -x $BIN ]] || REGISTRY_VERSION=$VERSION bash hack/build-from-modules.sh registry
    mkdir -p "$DIR/data"
    [[ -n $(bridge_ip) ]] || { echo "no Docker bridge (docker0): start Docker first (hack/docker.sh)" >&2; exit 1; }
    start_instance registry false
    start_instance mirror true
    echo "registry: http://$ADDR, read-only on http://$IADDR ($("$BIN" --version | awk '{print $NF}'), data in $DIR/data)"
    ;;
  stop)
    for name in registry mirror; do
      instance "$name"
      if running; then kill "$(cat "$PIDFILE")"; fi
      rm -f "$PIDFILE"
    done
    ;;
  env) echo "LFT_REGISTRY=$ADDR"; echo "LFT_REGISTRY_MIRROR=$(bridge_ip):$PORT" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
