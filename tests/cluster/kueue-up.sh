#!/usr/bin/env bash
# Install Kueue into the local cluster and start it as a host process (like the control plane).
#   tests/cluster/kueue-up.sh
# Idempotent: CRDs applied server-side, certificates and config kept, a running Kueue left running.
# Needs the cluster (up.sh) and $LFT_CACHE/kueue/<ver>/kueue + the module source under $LFT_CACHE/gomod
# (hack/build-from-modules.sh kueue builds both). No cluster DNS: Kueue's webhook server listens on
# 127.0.0.1 and the API server calls it by URL (hack/kueue_manifests.py rewrites the Service refs).
# Only namespaces labelled $KUEUE_NAMESPACE_LABEL=true go through Kueue's Job webhooks (the default
# LocalQueue and suspend-on-create): a Kueue that stops cannot block Jobs anywhere else.
# kueue-down.sh stops it and removes the webhook configurations.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"
# shellcheck source=tests/cluster/lib/kueue.sh
source "$here/lib/kueue.sh"

case ${1:-} in
  -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1" ;;
esac

PYTHON=${PYTHON:-$root/.venv/bin/python}
KUBECTL=$TOOLS_BIN_DIR/kubectl
kc() { "$KUBECTL" --kubeconfig "$KUEUE_KUBECONFIG" "$@"; }
manifests() { "$PYTHON" "$root/hack/kueue_manifests.py" "$@"; }

[[ -f $KUEUE_KUBECONFIG ]] || die "no cluster ($KUEUE_KUBECONFIG): run tests/cluster/up.sh first"
kc get --raw /readyz >/dev/null 2>&1 || die "the API server does not answer: run tests/cluster/up.sh first"
if [[ ! -x $KUEUE_BIN || ! -d $KUEUE_MODULE/config/components ]]; then
  log "building Kueue $KUEUE_VERSION from the Go module proxy (cached)"
  KUEUE_VERSION=v$KUEUE_VERSION bash "$root/hack/build-from-modules.sh" kueue
fi
[[ -x $KUEUE_BIN ]] || die "no $KUEUE_BIN after the build"
[[ -d $KUEUE_MODULE/config/components ]] || die "no Kueue module source at $KUEUE_MODULE"
config=$KUEUE_MODULE/config/components
mkdir -p "$KUEUE_DIR" "$KUEUE_CERT_DIR" "$RUN_DIR" "$LOG_DIR"

# 1. The serving certificate of the webhook server (and /convert), signed by a CA of its own.
# A serving certificate for loopback and KUEUE_WEBHOOK_HOST: made anew when it does not name that address.
if [[ ! -f $KUEUE_CERT_DIR/tls.crt || ! -f $KUEUE_CERT_DIR/tls.key || ! -f $KUEUE_CERT_DIR/ca.crt ]] ||
   ! openssl x509 -in "$KUEUE_CERT_DIR/tls.crt" -noout -checkip "$KUEUE_WEBHOOK_HOST" 2>/dev/null | grep -q 'does match'; then
  log "generating Kueue's webhook CA and serving certificate (127.0.0.1, $KUEUE_WEBHOOK_HOST)"
  openssl ecparam -name prime256v1 -genkey -noout -out "$KUEUE_CERT_DIR/ca.key" 2>/dev/null
  openssl req -x509 -new -sha256 -days 3650 -key "$KUEUE_CERT_DIR/ca.key" -subj "/CN=lft-kueue-webhook-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$KUEUE_CERT_DIR/ca.crt" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$KUEUE_CERT_DIR/tls.key" 2>/dev/null
  ext=$(mktemp)
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,IP:$KUEUE_WEBHOOK_HOST,DNS:localhost" >"$ext"
  openssl req -new -key "$KUEUE_CERT_DIR/tls.key" -subj "/CN=127.0.0.1" 2>/dev/null |
    openssl x509 -req -sha256 -days 3650 -CA "$KUEUE_CERT_DIR/ca.crt" -CAkey "$KUEUE_CERT_DIR/ca.key" \
      -set_serial "0x$(openssl rand -hex 12)" -extfile "$ext" -out "$KUEUE_CERT_DIR/tls.crt" 2>/dev/null
  rm -f "$ext"
fi
# Without internal cert management Kueue 0.17.0 reads its metrics server's certificate from a fixed path
# (cmd/kueue/main.go: /etc/kueue/metrics/certs) and exits when it is missing: the same serving certificate.
install -d -m 0755 "$KUEUE_METRICS_CERT_DIR"
install -m 0644 "$KUEUE_CERT_DIR/tls.crt" "$KUEUE_METRICS_CERT_DIR/tls.crt"
install -m 0600 "$KUEUE_CERT_DIR/tls.key" "$KUEUE_METRICS_CERT_DIR/tls.key"
ca_bundle=$(base64 -w0 <"$KUEUE_CERT_DIR/ca.crt")
url=https://$KUEUE_WEBHOOK_HOST:$KUEUE_WEBHOOK_PORT

# 2. CRDs (server-side: the Workload CRD is too large for kubectl's last-applied annotation).
log "applying Kueue's CRDs from $config/crd/bases"
manifests crds "$config/crd/bases" --url "$url" --ca-bundle "$ca_bundle" |
  kc apply --server-side --force-conflicts --field-manager=lft-kueue-up -f - >/dev/null
kc create namespace kueue-system --dry-run=client -o yaml | kc apply -f - >/dev/null
# Served before Kueue starts: on a fresh cluster it exits at once otherwise ("no matches for kind Workload",
# its indexes are set up from discovery).
# Not `kubectl wait --for=condition=Established`: on a CRD created a moment ago, before the API server has written
# any condition, kubectl 1.37 fails at once (".status.conditions accessor error: <nil>", seen on a fresh cluster).
established='{.status.conditions[?(@.type=="Established")].status}'
for crd in workloads localqueues clusterqueues resourceflavors workloadpriorityclasses cohorts; do
  for _ in $(seq 1 120); do
    [[ $(kc get "crd/$crd.kueue.x-k8s.io" -o jsonpath="$established" 2>/dev/null) == True ]] && continue 2
    sleep 0.5
  done
  log "CRD $crd.kueue.x-k8s.io not Established after 60 s"; exit 1
done

# 3. Kueue's Configuration.
manifests config --webhook-port "$KUEUE_WEBHOOK_PORT" --webhook-host "$KUEUE_WEBHOOK_HOST" --cert-dir "$KUEUE_CERT_DIR" \
  --health-port "$KUEUE_HEALTH_PORT" --metrics-port "$KUEUE_METRICS_PORT" >"$KUEUE_CONFIG.tmp"
mv "$KUEUE_CONFIG.tmp" "$KUEUE_CONFIG"

# 4. The process (the webhook configurations come after it answers: none may point at a dead server).
if pid=$(kueue_pid); then
  log "Kueue already running (pid $pid)"
else
  log "starting Kueue $KUEUE_VERSION (log: $KUEUE_LOG)"
  (
    close_inherited_fds
    # No job control: the background job is no process-group leader, setsid does not fork, $! is Kueue.
    exec setsid nohup "$KUEUE_BIN" --config="$KUEUE_CONFIG" --kubeconfig="$KUEUE_KUBECONFIG" \
      --visibility-server-port="$KUEUE_VISIBILITY_PORT" --feature-gates=VisibilityOnDemand=false \
      --zap-log-level=2 </dev/null >>"$KUEUE_LOG" 2>&1
  ) &
  echo $! >"$KUEUE_PID_FILE"
  sleep 0.5  # until setsid and nohup have exec'd Kueue (kueue_pid checks the binary)
fi

log "waiting for Kueue's webhook server and readiness (up to ${KUEUE_WAIT_SECONDS}s)"
ready=0
for ((i = 0; i < KUEUE_WAIT_SECONDS * 2; i++)); do
  kueue_pid >/dev/null || { tail -n 40 "$KUEUE_LOG" >&2; die "Kueue exited (log: $KUEUE_LOG)"; }
  if curl -sf -o /dev/null "http://127.0.0.1:$KUEUE_HEALTH_PORT/readyz" 2>/dev/null &&
     curl -s --cacert "$KUEUE_CERT_DIR/ca.crt" -o /dev/null "$url/healthz" 2>/dev/null; then
    ready=1; break
  fi
  sleep 0.5
done
((ready)) || { tail -n 40 "$KUEUE_LOG" >&2; die "Kueue not ready in ${KUEUE_WAIT_SECONDS}s (log: $KUEUE_LOG)"; }

# 5. The webhook configurations (Jobs in opted-in namespaces, Kueue's own objects).
log "applying Kueue's webhook configurations ($url; Job webhooks for namespaces labelled $KUEUE_NAMESPACE_LABEL=true)"
manifests webhooks "$config/webhook/manifests.yaml" --url "$url" --ca-bundle "$ca_bundle" \
  --namespace-label "$KUEUE_NAMESPACE_LABEL" | kc apply --server-side --force-conflicts --field-manager=lft-kueue-up -f - >/dev/null

# The webhook answers through the API server: a dry-run ResourceFlavor goes through mutate and validate.
for ((i = 0; i < 30; i++)); do
  if printf '%s\n' "apiVersion: kueue.x-k8s.io/v1beta2" "kind: ResourceFlavor" "metadata: {name: lft-kueue-probe}" |
       kc create --dry-run=server -f - >/dev/null 2>&1; then
    log "Kueue $KUEUE_VERSION is up (pid $(kueue_pid))"
    exit 0
  fi
  sleep 1
done
die "the API server cannot call Kueue's webhooks at $url (log: $KUEUE_LOG)"
