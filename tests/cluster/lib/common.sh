# shellcheck shell=bash
# Shared paths and helpers for tests/cluster/*.sh (sourced, not executed).

# The supported Kubernetes minors: the API-level integration suite runs on a host-process control plane
# (etcd + kube-apiserver + kube-controller-manager, up.sh) of each, the oldest first. Every binary is built
# from the Go module proxy (hack/build-from-modules.sh). The end-to-end cluster is kind (docs/kind.md).
K8S_NEWEST_VERSION=1.37.2
K8S_OLDEST_VERSION=1.34.4
K8S_VERSION=${K8S_VERSION:-$K8S_NEWEST_VERSION}
ETCD_VERSION=${ETCD_VERSION:-3.7.4}
LFT_CACHE=${LFT_CACHE:-/var/cache/lft}
LFT_STATE=${LFT_STATE:-/var/lib/lft}
TOOLS_BIN_DIR=${TOOLS_BIN_DIR:-$LFT_CACHE/bin}
CLUSTER_DIR=$LFT_STATE/cluster
PKI_DIR=$CLUSTER_DIR/pki
RUN_DIR=$CLUSTER_DIR/run
LOG_DIR=$CLUSTER_DIR/logs
KUBECONFIG_PATH=$CLUSTER_DIR/kubeconfig
# The pod sandbox image of the kind node image (pause-image.sh; hack/kind/node-image.sh).
PAUSE_IMAGE=${PAUSE_IMAGE:-lft/pause:1}
# What build-k8s.sh builds for each minor.
K8S_BINS=(kube-apiserver kube-controller-manager kubectl)

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

APISERVER_PORT=${LFT_APISERVER_PORT:-6443}
ETCD_CLIENT_PORT=${LFT_ETCD_PORT:-2379}
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))
SERVICE_CIDR=10.96.0.0/12
SERVICE_IP=10.96.0.1
# Components in start order; down.sh stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager)

k8s_bin_dir() { echo "$LFT_CACHE/k8s/$K8S_VERSION"; }

component_bin() {
  case $1 in
    etcd) echo "$LFT_CACHE/etcd/$ETCD_VERSION/etcd" ;;
    *) echo "$(k8s_bin_dir)/$1" ;;
  esac
}

# The Kubernetes version the running control plane was started with (empty: none recorded).
running_k8s_version() { cat "$RUN_DIR/k8s-version" 2>/dev/null || true; }

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

# The docker bridge address: the API server's bind and advertise address (up.sh).
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
