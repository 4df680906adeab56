#!/usr/bin/env bash
# End-to-end check of a running full cluster (tests/cluster/up.sh):
# a batch/v1 Job of a local image (imagePullPolicy: Never) must complete, and
# from inside its pod reach the API server at https://10.96.0.1:443 (TLS
# verified with the service-account CA + token) and a host server at the
# docker bridge gateway. `kubectl logs` must show its output, and deleting the
# Job must garbage-collect its pod. Image: $SMOKE_IMAGE (default lft/base:bookworm,
# else a busybox image this script imports).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"

KUBECTL=$TOOLS_BIN_DIR/kubectl
export KUBECONFIG=${KUBECONFIG:-$KUBECONFIG_PATH}
DOCKER=${DOCKER:-docker}
NS=${SMOKE_NAMESPACE:-default}
JOB=lft-smoke
NODE_IP=$(docker_bridge_ip)

pick_image() {
  if [[ -n ${SMOKE_IMAGE:-} ]]; then echo "$SMOKE_IMAGE"; return; fi
  if "$DOCKER" image inspect lft/base:bookworm >/dev/null 2>&1; then echo lft/base:bookworm; return; fi
  if ! "$DOCKER" image inspect lft/busybox:1 >/dev/null 2>&1; then
    ensure_debs busybox-static
    local d
    d=$(mktemp -d)
    mkdir -p "$d/bin"
    cp /bin/busybox "$d/bin/busybox"
    for a in sh cat nc wget echo; do ln -s busybox "$d/bin/$a"; done
    tar -C "$d" -cf - bin | "$DOCKER" import -c 'ENV PATH=/bin' - lft/busybox:1 >/dev/null
    rm -rf "$d"
  fi
  echo lft/busybox:1
}

# Runs inside the pod. python3 when the image has it (full TLS + token check),
# else busybox: TCP connect to the service IP only.
read -r -d '' POD_SCRIPT <<'SH' || true
set -e
if command -v python3 >/dev/null; then
python3 - <<'PY'
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
req = urllib.request.Request("https://10.96.0.1:443/version",
    headers={"Authorization": "Bearer " + open(f"{sa}/token").read().strip()})
v = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
print("apiserver via service IP: gitVersion", v["gitVersion"])
body = urllib.request.urlopen(os.environ["HOST_URL"], timeout=10).read().decode().strip()
print("host server says:", body)
PY
else
  nc 10.96.0.1 443 </dev/null && echo "apiserver via service IP: tcp ok"
  echo "host server says: $(wget -qO- "$HOST_URL")"
fi
SH

main() {
  local image port t0=$SECONDS token
  # srv_dir, srv_pid: global, the EXIT trap runs after main returns
  image=$(pick_image)
  DOCKER=$DOCKER "$here/load-images.sh" "$image"
  token="smoke-$RANDOM$RANDOM"
  srv_dir=$(mktemp -d)
  echo "$token" >"$srv_dir/hello.txt"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("'"$NODE_IP"'", 0)); print(s.getsockname()[1])')
  python3 -m http.server "$port" --bind "$NODE_IP" --directory "$srv_dir" >/dev/null 2>&1 &
  srv_pid=$!
  trap 'kill "$srv_pid" 2>/dev/null || true; rm -rf "$srv_dir"' EXIT

  "$KUBECTL" -n "$NS" delete job "$JOB" --ignore-not-found --wait >/dev/null
  log "running Job $JOB with image $image"
  "$KUBECTL" -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: $JOB}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: smoke
        image: $image
        imagePullPolicy: Never
        env: [{name: HOST_URL, value: "http://$NODE_IP:$port/hello.txt"}]
        command: ["sh", "-c", $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$POD_SCRIPT")]
YAML
  if ! "$KUBECTL" -n "$NS" wait --for=condition=complete "job/$JOB" --timeout=180s >/dev/null; then
    "$KUBECTL" -n "$NS" describe job "$JOB" >&2 || true
    "$KUBECTL" -n "$NS" describe pods -l "job-name=$JOB" >&2 || true
    "$KUBECTL" -n "$NS" logs "job/$JOB" >&2 || true
    die "Job $JOB did not complete"
  fi
  local out
  out=$("$KUBECTL" -n "$NS" logs "job/$JOB")
  echo "$out" >&2
  grep -q "^apiserver via service IP: " <<<"$out" || die "pod did not reach the API server"
  grep -q "^host server says: $token$" <<<"$out" || die "pod did not reach the host server"
  log "Job completed in $((SECONDS - t0))s; checking garbage collection"
  "$KUBECTL" -n "$NS" delete job "$JOB" --cascade=foreground --wait >/dev/null
  local i
  for ((i = 0; i < 60; i++)); do
    [[ -z "$("$KUBECTL" -n "$NS" get pods -l "job-name=$JOB" -o name)" ]] && break
    sleep 1
  done
  [[ -z "$("$KUBECTL" -n "$NS" get pods -l "job-name=$JOB" -o name)" ]] || die "Job pods not garbage-collected"
  log "SMOKE OK ($((SECONDS - t0))s)"
}

main
