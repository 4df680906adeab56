# shellcheck shell=bash
# Kueue as a host process of the local cluster (sourced by kueue-up.sh and kueue-down.sh, after common.sh).
KUEUE_VERSION=${KUEUE_VERSION:-0.17.0}
KUEUE_VERSION=${KUEUE_VERSION#v}
KUEUE_BIN=$LFT_CACHE/kueue/$KUEUE_VERSION/kueue
# The module source the binary was built from: its kustomize config (CRDs, webhooks, manager config).
KUEUE_MODULE=$LFT_CACHE/gomod/sigs.k8s.io/kueue@v$KUEUE_VERSION
KUEUE_DIR=$CLUSTER_DIR/kueue
KUEUE_CERT_DIR=$KUEUE_DIR/certs
KUEUE_METRICS_CERT_DIR=/etc/kueue/metrics/certs  # fixed in Kueue 0.17.0 (cmd/kueue/main.go)
KUEUE_CONFIG=$KUEUE_DIR/config.yaml
KUEUE_KUBECONFIG=${KUEUE_KUBECONFIG:-$KUBECONFIG_PATH}  # cluster-admin
KUEUE_PID_FILE=$RUN_DIR/kueue.pid
KUEUE_LOG=$LOG_DIR/kueue.log
KUEUE_WEBHOOK_PORT=${KUEUE_WEBHOOK_PORT:-9443}
# Where the API server calls the webhooks: loopback for the host-process control plane; the Docker bridge's
# address for kind's (its API server runs in a node container, which reaches the host there).
KUEUE_WEBHOOK_HOST=${KUEUE_WEBHOOK_HOST:-127.0.0.1}
KUEUE_HEALTH_PORT=${KUEUE_HEALTH_PORT:-18081}
KUEUE_METRICS_PORT=${KUEUE_METRICS_PORT:-18443}
KUEUE_VISIBILITY_PORT=${KUEUE_VISIBILITY_PORT:-18082}
KUEUE_WAIT_SECONDS=${KUEUE_WAIT_SECONDS:-90}
# Namespaces with this label set to "true" go through Kueue's Job webhooks (hack/kueue_manifests.py).
KUEUE_NAMESPACE_LABEL=${KUEUE_NAMESPACE_LABEL:-kueue.lft.dev/enabled}
KUEUE_WEBHOOK_CONFIGS=(mutatingwebhookconfiguration/lft-kueue-mutating validatingwebhookconfiguration/lft-kueue-validating)

# The pid of the Kueue we started, if it is still that program (guards against pid reuse).
kueue_pid() {
  local pid exe
  pid=$(cat "$KUEUE_PID_FILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$KUEUE_BIN" ]] || return 1
  echo "$pid"
}

# Stop our Kueue: SIGTERM, up to 20 s, then SIGKILL. Only the pid we recorded.
stop_kueue() {
  local pid i
  pid=$(kueue_pid) || { rm -f "$KUEUE_PID_FILE"; return 0; }
  log "stopping Kueue (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$KUEUE_PID_FILE"; return 0; }
    sleep 0.5
  done
  log "Kueue (pid $pid) did not stop in 20s: killing"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$KUEUE_PID_FILE"
}
