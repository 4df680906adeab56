#!/usr/bin/env bash
# Ensure a usable Docker daemon on this host (idempotent; run as root).
#  - installs Debian's docker.io if dockerd is missing
#  - registers a runc wrapper as default runtime (hack/runc-wrapper.sh): negative oom_score_adj
#    fails with EIO on these machines and the bounding set lacks CAP_SYS_RESOURCE (every kind
#    node is a privileged container); the wrapper rewrites the spec before exec'ing runc
#  - uses the cgroupfs cgroup driver
#  - starts dockerd in the background if it is not running and waits for it
# Prints nothing on stdout except the docker client path on the last line
# (`DOCKER=$(hack/docker.sh | tail -n1)`).
set -euo pipefail

LFT_STATE=${LFT_STATE:-/var/lib/lft}
LOG_DIR=$LFT_STATE/logs
WRAPPER=/usr/local/lib/lft/runc-oomfix
DAEMON_JSON=/etc/docker/daemon.json

log() { echo "[docker.sh] $*" >&2; }

apt_install() {
  local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)
  # A stale package index is the usual reason an install fails: update and retry once.
  DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >&2 ||
    { apt-get -o DPkg::Lock::Timeout=600 update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >&2; }
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v runc >/dev/null || missing+=(runc)
  command -v containerd >/dev/null || missing+=(containerd)
  command -v jq >/dev/null || missing+=(jq)  # the runc wrapper edits OCI specs with it
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

install_wrapper() {  # hack/runc-wrapper.sh, the same file the offline kind node image runs as its runc
  install -D -m 0755 "$(dirname "${BASH_SOURCE[0]}")/runc-wrapper.sh" "$WRAPPER"
}

# Returns 0 when daemon.json changed.
write_daemon_json() {
  local want
  want=$(cat <<JSON
{
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "runtimes": {"lft-runc": {"path": "$WRAPPER"}},
  "default-runtime": "lft-runc",
  "log-driver": "json-file",
  "log-opts": {"max-size": "50m", "max-file": "2"}
}
JSON
)
  if [[ -f $DAEMON_JSON ]] && [[ "$(cat "$DAEMON_JSON")" == "$want" ]]; then
    return 1
  fi
  mkdir -p "$(dirname "$DAEMON_JSON")"
  printf '%s\n' "$want" >"$DAEMON_JSON"
  return 0
}

dockerd_pid() {
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

stop_dockerd() {
  local pid=$1 i
  log "restarting dockerd (pid $pid) to apply $DAEMON_JSON"
  kill "$pid"
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "dockerd did not stop in 30s"
  return 1
}

start_dockerd() {
  mkdir -p "$LOG_DIR"
  log "starting dockerd (log: $LOG_DIR/dockerd.log)"
  # setsid + nohup: the daemon must outlive this script and its caller's session;
  # closing inherited fds keeps it from holding callers' locks and pipes.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid nohup /usr/sbin/dockerd >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null
  ) &
}

# The machine's /usr/local/bin/docker is a newer client; use it only if it talks
# to the installed daemon (API version negotiation), else Debian's client.
pick_client() {
  local c
  for c in "$(command -v docker || true)" /usr/bin/docker; do
    [[ -n $c && -x $c ]] || continue
    if "$c" info >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}

wait_docker() {
  local i
  for ((i = 0; i < 120; i++)); do
    if pick_client >/dev/null; then return 0; fi
    sleep 0.5
  done
  log "dockerd did not answer within 60s; tail of $LOG_DIR/dockerd.log:"
  tail -n 30 "$LOG_DIR/dockerd.log" >&2 || true
  return 1
}

main() {
  [[ $(id -u) -eq 0 ]] || { log "must run as root"; exit 1; }
  install_packages
  install_wrapper
  local changed=0 pid
  if write_daemon_json; then changed=1; fi
  pid=$(dockerd_pid)
  if [[ -n $pid && $changed -eq 1 ]]; then
    stop_dockerd "$pid"
    pid=
  fi
  [[ -n $pid ]] || start_dockerd
  wait_docker
  local client
  client=$(pick_client)
  "$client" info --format 'docker {{.ServerVersion}} default-runtime={{.DefaultRuntime}} cgroup={{.CgroupDriver}}' >&2
  echo "$client"
}

main "$@"
