#!/usr/bin/env bash
# Bring up (or complete) the local API-level control plane for the integration suite: etcd, kube-apiserver and
# kube-controller-manager as host processes (no scheduler, no nodes: no pod runs). Default Kubernetes: the
# newest supported, 1.37; K8S_VERSION=1.34.4 the oldest.
#   [K8S_VERSION=1.34.4] tests/cluster/up.sh [--api-only]
# --api-only is accepted for compatibility and changes nothing (the only mode; the end-to-end cluster is kind:
# docs/kind.md). Idempotent: builds what is missing (Go module proxy, cached), leaves running components
# alone; a control plane of another Kubernetes version is stopped and its etcd data wiped first.
# Logs go to stderr; the last stdout line is `export KUBECONFIG=...`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"
# shellcheck source=tests/cluster/lib/pki.sh
source "$here/lib/pki.sh"

for arg in "$@"; do
  case $arg in
    --api-only) ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done
[[ $(id -u) -eq 0 ]] || die "must run as root"

KUBECTL=$TOOLS_BIN_DIR/kubectl
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# start NAME ARGS...: run a component detached, pid in RUN_DIR, log in LOG_DIR.
start() {
  local name=$1 bin pid
  shift
  if is_running "$name"; then
    log "$name already running (pid $(component_pid "$name"))"
    return 0
  fi
  bin=$(component_bin "$name")
  echo "==== $(date -u +%FT%TZ) starting $name" >>"$LOG_DIR/$name.log"
  # Without job control a background job is no process-group leader, so setsid
  # does not fork and $! is the component's own pid.
  (
    close_inherited_fds # or the component would hold our lock (fd 8) forever
    exec setsid nohup "$bin" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null
  ) &
  pid=$!
  echo "$pid" >"$(pid_file "$name")"
  sleep 0.5
  if ! is_running "$name"; then
    tail -n 30 "$LOG_DIR/$name.log" >&2
    die "$name exited right after start (log: $LOG_DIR/$name.log)"
  fi
  log "started $name (pid $pid)"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
  local what=$1 timeout=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - t0 > timeout)); then
      die "timed out after ${timeout}s waiting for $what (logs: $LOG_DIR)"
    fi
    sleep 0.5
  done
  log "$what ready after $((SECONDS - t0))s"
}

# 127.0.0.1:6443 -> NODE_IP:6443. The API server binds and advertises one address, the docker bridge's (not
# loopback: the advertise address becomes the endpoint of the `kubernetes` Service, and Endpoints refuse
# loopback addresses). The kubeconfig the tests use names https://127.0.0.1:6443: this keeps that address
# stable without binding 0.0.0.0.
ensure_loopback_dnat() {
  local chain=LFT-APISERVER
  iptables -w -t nat -N "$chain" 2>/dev/null || true
  iptables -w -t nat -F "$chain"
  iptables -w -t nat -A "$chain" -d 127.0.0.1/32 -p tcp --dport "$APISERVER_PORT" \
    -j DNAT --to-destination "$NODE_IP:$APISERVER_PORT"
  iptables -w -t nat -C OUTPUT -d 127.0.0.1/32 -p tcp --dport "$APISERVER_PORT" -j "$chain" 2>/dev/null ||
    iptables -w -t nat -I OUTPUT -d 127.0.0.1/32 -p tcp --dport "$APISERVER_PORT" -j "$chain"
}

# port_free NAME PORT: fail early and clearly if someone else listens there
# (e.g. a distro etcd service started by apt on a machine with systemd).
port_free() {
  is_running "$1" && return 0
  if ss -Hltn "sport = :$2" | grep -q .; then
    die "port $2 for $1 is taken by another process: $(ss -Hltnp "sport = :$2" | head -n1)"
  fi
}

start_etcd() {
  port_free etcd "$ETCD_CLIENT_PORT"
  start etcd --name lft --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "lft=http://127.0.0.1:$ETCD_PEER_PORT" \
    --logger zap --log-outputs stderr
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

start_apiserver() {
  port_free kube-apiserver "$APISERVER_PORT"
  start kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" \
    --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI_DIR/kube-apiserver.crt" --tls-private-key-file "$PKI_DIR/kube-apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --kubelet-client-certificate "$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI_DIR/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$PKI_DIR/sa.pub" \
    --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --event-ttl 1h --v 1
  wait_for kube-apiserver 120 curl -fsS --cacert "$PKI_DIR/ca.crt" \
    --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz"
}

start_controller_manager() {
  local kcfg=$CLUSTER_DIR/kube-controller-manager.kubeconfig
  start kube-controller-manager \
    --kubeconfig "$kcfg" --authentication-kubeconfig "$kcfg" --authorization-kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --controllers '*' --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI_DIR/sa.key" --root-ca-file "$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file "$PKI_DIR/ca.crt" --cluster-signing-key-file "$PKI_DIR/ca.key" \
    --allocate-node-cidrs=false --v 1
}

# Pods are refused until the default ServiceAccount exists (tokens are requested per pod since 1.24).
default_sa_ready() {
  kc -n default get serviceaccount default -o name
}

# A control plane of another Kubernetes version (the oldest minor's API-level suite ran before, or an
# upgrade): stop it and start afresh, since etcd data written by a newer API server is not for an older one.
switch_version() {
  local running
  running=$(running_k8s_version)
  if [[ -z $running && -d $CLUSTER_DIR/etcd ]] && ! is_running etcd; then
    # Left by a cluster that did not record its version (Kubernetes 1.20 with etcd 3.4, before 2026-12).
    log "etcd data of an unrecorded Kubernetes version: wiping it"
    flock -u 8
    "$here/down.sh" --purge
    flock -w 1200 8 || die "another up.sh/down.sh holds $CLUSTER_DIR/.lock"
    return 0
  fi
  [[ -n $running && $running != "$K8S_VERSION" ]] || return 0
  log "the cluster runs Kubernetes $running, $K8S_VERSION wanted: stopping it and wiping its etcd data"
  flock -u 8
  K8S_VERSION=$running "$here/down.sh" --purge
  flock -w 1200 8 || die "another up.sh/down.sh holds $CLUSTER_DIR/.lock"
}

main() {
  local t0=$SECONDS
  mkdir -p "$CLUSTER_DIR"
  # Concurrent up.sh/down.sh calls (parallel test sessions) take turns.
  exec 8>"$CLUSTER_DIR/.lock"
  flock -w 1200 8 || die "another up.sh/down.sh holds $CLUSTER_DIR/.lock"
  # Docker's bridge gives the API server its address.
  "$repo/hack/docker.sh" >/dev/null
  ensure_debs openssl curl iproute2 iptables
  "$here/install-tools.sh"
  "$here/build-k8s.sh"
  switch_version

  NODE_IP=$(docker_bridge_ip)
  [[ -n $NODE_IP ]] || die "docker0 has no IPv4 address"
  mkdir -p "$CLUSTER_DIR" "$RUN_DIR" "$LOG_DIR"
  # A new CA invalidates service-account tokens stored in etcd: start afresh.
  if [[ ! -f $PKI_DIR/ca.crt && -d $CLUSTER_DIR/etcd ]] && ! is_running etcd; then
    log "no CA but old etcd data: wiping it"
    rm -rf "$CLUSTER_DIR/etcd"
  fi
  ensure_pki
  ensure_loopback_dnat

  start_etcd
  start_apiserver
  echo "$K8S_VERSION" >"$RUN_DIR/k8s-version"
  start_controller_manager
  wait_for "default ServiceAccount" 120 default_sa_ready
  log "control plane up in $((SECONDS - t0))s (Kubernetes $K8S_VERSION)"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

main
