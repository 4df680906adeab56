#!/usr/bin/env bash
# Bring up (or complete) the local single-node Kubernetes cluster (default: the newest supported, 1.37).
#   [K8S_VERSION=1.34.4] tests/cluster/up.sh [--api-only]
# --api-only: etcd + kube-apiserver + kube-controller-manager (no pods run); the only mode of the
# oldest supported minor ($K8S_OLDEST_VERSION). Without it also kube-scheduler, containerd (CRI, with
# the CNI bridge plugin), kubelet and kube-proxy.
# Idempotent: builds what is missing (Go module proxy, cached), leaves running components alone; a
# control plane of another Kubernetes version is stopped and its etcd data wiped first.
# Logs go to stderr; the last stdout line is `export KUBECONFIG=...`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"
# shellcheck source=tests/cluster/lib/pki.sh
source "$here/lib/pki.sh"

API_ONLY=0
for arg in "$@"; do
  case $arg in
    --api-only) API_ONLY=1 ;;
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
    # containerd finds its shim (containerd-shim-runc-v2) on PATH.
    PATH=$CONTAINERD_BIN_DIR:$PATH exec setsid nohup "$bin" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null
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

# 127.0.0.1:6443 -> NODE_IP:6443. The API server has one bind address; it must
# be the bridge IP so pods reach it (service 10.96.0.1 -> NODE_IP:6443), and
# this keeps the host-side address stable without binding 0.0.0.0.
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

start_scheduler() {
  local kcfg=$CLUSTER_DIR/kube-scheduler.kubeconfig
  start kube-scheduler --kubeconfig "$kcfg" \
    --authentication-kubeconfig "$kcfg" --authorization-kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --leader-elect=false --v 1
}

# containerd as the CRI runtime: its own root and socket (Docker's containerd is left alone), runc through
# the oom_score_adj wrapper of hack/docker.sh (negative values give EIO here), the CNI bridge plugin.
start_containerd() {
  mkdir -p "$CONTAINERD_ROOT" "$CONTAINERD_STATE" "$CNI_CONF_DIR"
  cat >"$CNI_CONF_DIR/10-lft.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "lft", "plugins": [
  {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$CLUSTER_DIR/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  cat >"$CLUSTER_DIR/containerd.toml" <<TOML
version = 3
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "$RUNC_WRAPPER"
  SystemdCgroup = false
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["$CNI_BIN_DIR"]
  conf_dir = "$CNI_CONF_DIR"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "docker.io/$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "$CLUSTER_DIR/certs.d"
TOML
  # The local OCI registry of `make release` (hack/registry.sh, loopback, plain HTTP): the kubelet pulls the
  # released images from it as from any registry. No other registry is configured (none is reachable here).
  local reg=127.0.0.1:${LFT_REGISTRY_PORT:-5000}
  mkdir -p "$CLUSTER_DIR/certs.d/$reg"
  printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$reg" "$reg" \
    >"$CLUSTER_DIR/certs.d/$reg/hosts.toml"
  # Docker sets the FORWARD policy to DROP, and with bridge-nf-call-iptables pod-to-pod traffic on our
  # bridge passes FORWARD: without this, only connections through a Service (marked by kube-proxy) pass,
  # and a multi-node run's ranks hang at their first direct (gloo/NCCL) connection.
  iptables -w -C FORWARD -i "$CNI_BRIDGE" -o "$CNI_BRIDGE" -j ACCEPT 2>/dev/null ||
    iptables -w -I FORWARD 1 -i "$CNI_BRIDGE" -o "$CNI_BRIDGE" -j ACCEPT
  start containerd --config "$CLUSTER_DIR/containerd.toml"
  wait_for containerd 60 crictl info
}

start_kubelet() {
  mkdir -p "$CLUSTER_DIR/kubelet"
  cat >"$CLUSTER_DIR/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
# These machines have cgroup v1 only; the kubelet refuses it by default since 1.35 (still supported, deprecated).
failCgroupV1: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# Ready ~3s after the runtime is up instead of at the next 10s tick; full
# status is still only posted on change or every minute.
nodeStatusUpdateFrequency: 3s
nodeStatusReportFrequency: 1m
tlsCertFile: $PKI_DIR/kubelet.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# Images are imported, never pulled: image GC must never delete them, and a
# fullish test disk must not evict pods.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
YAML
  is_running kubelet || KUBELET_STARTED=$(date -u +%FT%TZ)
  start kubelet --config "$CLUSTER_DIR/kubelet-config.yaml" \
    --kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" \
    --root-dir "$CLUSTER_DIR/kubelet" \
    --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v 1
  wait_for "kubelet healthz" 60 curl -fsS http://127.0.0.1:10248/healthz
}

start_kube_proxy() {
  cat >"$CLUSTER_DIR/kube-proxy-config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["127.0.0.0/8", "$NODE_IP/32"]
clientConnection:
  kubeconfig: $CLUSTER_DIR/kube-proxy.kubeconfig
# 0 = leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
YAML
  start kube-proxy --config "$CLUSTER_DIR/kube-proxy-config.yaml" --v 1
}

# Ready, and (when we just started the kubelet) reported by this kubelet, not
# left over in etcd from an earlier run. RFC 3339 UTC times compare as strings.
node_ready() {
  local cond
  cond=$(kc get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  [[ ${cond%% *} == True && ! ${cond#* } < ${KUBELET_STARTED:-} ]]
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
  [[ $K8S_VERSION == "$K8S_OLDEST_VERSION" && $API_ONLY == 0 ]] &&
    die "Kubernetes $K8S_OLDEST_VERSION (the oldest supported minor) runs --api-only here; the full cluster is $K8S_NEWEST_VERSION"
  # Docker builds the images; its bridge gives the node its address.
  DOCKER=$("$repo/hack/docker.sh" | tail -n1)
  export DOCKER
  ensure_debs openssl curl iproute2 iptables
  ((API_ONLY)) || ensure_debs conntrack
  "$here/install-tools.sh"
  "$here/build-k8s.sh" $( ((API_ONLY)) && echo --api-only)
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
  if ((!API_ONLY)); then
    DOCKER=$DOCKER "$here/pause-image.sh"
    start_containerd
    "$here/load-images.sh" "$PAUSE_IMAGE"
    # Service traffic between pods on the same bridge must traverse iptables.
    modprobe br_netfilter 2>/dev/null || true
    [[ ! -w /proc/sys/net/bridge/bridge-nf-call-iptables ]] ||
      echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
    echo 1 >/proc/sys/net/ipv4/ip_forward
    start_scheduler
    start_kubelet
    start_kube_proxy
    wait_for "node $NODE_NAME Ready" 120 node_ready
  fi
  wait_for "default ServiceAccount" 120 default_sa_ready
  log "cluster up in $((SECONDS - t0))s ($( ((API_ONLY)) && echo api-only || echo full))"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

main
