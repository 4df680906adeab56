# shellcheck shell=bash
# Shared paths and helpers for tests/cluster/*.sh (sourced, not executed).

# The supported Kubernetes minors: the newest runs the full cluster (e2e), the oldest the API-level
# integration suite. Every binary is built from the Go module proxy (hack/build-from-modules.sh).
K8S_NEWEST_VERSION=1.37.2
K8S_OLDEST_VERSION=1.34.4
K8S_VERSION=${K8S_VERSION:-$K8S_NEWEST_VERSION}
ETCD_VERSION=${ETCD_VERSION:-3.7.4}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-2.4.2}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-1.10.0}
CRICTL_VERSION=${CRICTL_VERSION:-1.37.0}
LFT_CACHE=${LFT_CACHE:-/var/cache/lft}
LFT_STATE=${LFT_STATE:-/var/lib/lft}
TOOLS_BIN_DIR=${TOOLS_BIN_DIR:-$LFT_CACHE/bin}
CLUSTER_DIR=$LFT_STATE/cluster
CONTAINERD_BIN_DIR=$LFT_CACHE/containerd/$CONTAINERD_VERSION
CNI_BIN_DIR=$LFT_CACHE/cni/$CNI_PLUGINS_VERSION
CRICTL=$LFT_CACHE/crictl/$CRICTL_VERSION/crictl
# Images survive down.sh --purge (re-importing the 6 GB trainer image costs minutes).
CONTAINERD_ROOT=$LFT_STATE/containerd
CONTAINERD_STATE=/run/lft/containerd
CONTAINERD_SOCK=$CONTAINERD_STATE/containerd.sock
CNI_CONF_DIR=$CLUSTER_DIR/cni
CNI_BRIDGE=lft0
# hack/docker.sh installs it: rewrites a negative process.oomScoreAdj to 0, then execs runc.
RUNC_WRAPPER=/usr/local/lib/lft/runc-oomfix
POD_CIDR=10.244.0.0/24
PKI_DIR=$CLUSTER_DIR/pki
RUN_DIR=$CLUSTER_DIR/run
LOG_DIR=$CLUSTER_DIR/logs
KUBECONFIG_PATH=$CLUSTER_DIR/kubeconfig
PAUSE_IMAGE=${PAUSE_IMAGE:-lft/pause:1}
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
# The oldest minor only runs the API-level suite: no node binaries are built for it.
K8S_API_BINS=(kube-apiserver kube-controller-manager kubectl)

log() { echo "[$(date +%H:%M:%S) ${0##*/}] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Close every fd above 2 in the current (sub)shell: daemons started from here
# must not keep callers' locks or pipes open.
close_inherited_fds() {
  local fd n
  for fd in /proc/self/fd/*; do
    n=${fd##*/}
    if ((n > 2)); then eval "exec $n>&-" 2>/dev/null || true; fi
  done
}

apt_install() {
  local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)
  # A stale package index is the usual reason an install fails: update and retry once.
  DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >&2 ||
    { apt-get -o DPkg::Lock::Timeout=600 update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >&2; }
}

# Install the named Debian packages unless all of them are already installed.
ensure_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

NODE_NAME=${LFT_NODE_NAME:-lft-node}
APISERVER_PORT=${LFT_APISERVER_PORT:-6443}
ETCD_CLIENT_PORT=${LFT_ETCD_PORT:-2379}
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))
SERVICE_CIDR=10.96.0.0/12
SERVICE_IP=10.96.0.1
# Components in start order; down.sh stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

k8s_bin_dir() { echo "$LFT_CACHE/k8s/$K8S_VERSION"; }

component_bin() {
  case $1 in
    etcd) echo "$LFT_CACHE/etcd/$ETCD_VERSION/etcd" ;;
    containerd) echo "$CONTAINERD_BIN_DIR/containerd" ;;
    *) echo "$(k8s_bin_dir)/$1" ;;
  esac
}

# The Kubernetes version the running control plane was started with (empty: none recorded).
running_k8s_version() { cat "$RUN_DIR/k8s-version" 2>/dev/null || true; }

crictl() { "$CRICTL" --runtime-endpoint "unix://$CONTAINERD_SOCK" --image-endpoint "unix://$CONTAINERD_SOCK" "$@"; }
# ctr warns about cgroup v1 on every call: keep the rest of its stderr.
ctr() { "$CONTAINERD_BIN_DIR/ctr" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@" 2> >(grep -v DEPRECATION >&2); }

pid_file() { echo "$RUN_DIR/$1.pid"; }

# Prints the pid of a component we started, if it is still that program.
component_pid() {
  local pid exe
  pid=$(cat "$(pid_file "$1")" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  # Guards against pid reuse; " (deleted)" appears if the binary was replaced.
  [[ ${exe% (deleted)} == "$(component_bin "$1")" ]] || return 1
  echo "$pid"
}

is_running() { component_pid "$1" >/dev/null; }

# The docker bridge address: the node IP, reachable from pods and the host.
docker_bridge_ip() {
  ip -4 -o addr show dev docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1
}

# Our processes: pid file first, else any process running that component's
# binary with our state dir on its command line (pid file lost).
pids_of() {
  local name=$1 bin pid
  bin=$(component_bin "$name")
  {
    component_pid "$name" || true
    find /proc/[0-9]*/exe -maxdepth 0 \( -lname "$bin" -o -lname "$bin (deleted)" \) 2>/dev/null |
      cut -d/ -f3 | while read -r pid; do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CLUSTER_DIR/"; then echo "$pid"; fi
      done
  } | sort -u
}

# stop_components NAME...: SIGTERM all of them at once, wait up to 20s, then SIGKILL.
stop_components() {
  local name pids=() pid i alive
  for name in "$@"; do
    for pid in $(pids_of "$name"); do pids+=("$pid"); log "stopping $name (pid $pid)"; done
    rm -f "$(pid_file "$name")"
  done
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    alive=()
    for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi; done
    ((${#alive[@]})) || return 0
    sleep 0.5
  done
  log "pids ${alive[*]} did not stop in 20s: killing"
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

# Kill what containerd leaves running (shims and their containers: pods outlive containerd by design).
# down.sh after the CRI removed the pods; restart.sh to make a runtime stop a node crash.
kill_shims() {
  local pid
  for pid in $(pgrep -f "^$CONTAINERD_BIN_DIR/containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
    log "killing shim $pid and its containers"
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
}
