#!/usr/bin/env bash
# The main job: apply the tiny example and follow it with kubectl until it Succeeds, then show
# where the adapter is, and with `kubectl lft`: the eval loss before/after, one held-out sample
# (base model vs tuned) and loss.png. Expects `make cluster-up images s3-up deploy` (make demo does them): the kind
# cluster, the images loaded onto its workers, the S3 server, the operator.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LFT_BIN:-/var/cache/lft/bin}
K="$BIN/kubectl"
export KUBECONFIG=${KUBECONFIG:-/var/lib/lft/kind/kubeconfig}  # the kind cluster (hack/kind/up.sh)
NS=${LFT_DEMO_NAMESPACE:-default}
eval "$(bash hack/s3.sh env)"

# A fresh run each time: the previous demo's resource and output are replaced.
"$K" delete lft tiny-phi3 -n "$NS" --ignore-not-found --wait=true >/dev/null
AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret .venv/bin/python - "$LFT_S3_ENDPOINT" <<'PY'
import sys, boto3
s3 = boto3.resource("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
s3.Bucket("lft").objects.filter(Prefix="runs/tiny-phi3/").delete()
PY
"$K" apply -n "$NS" -f examples/tiny-finetune.yaml
echo "--- kubectl get lft -w (until Succeeded or Failed)"
"$K" get lft tiny-phi3 -n "$NS" -w &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT
rc=0
for _ in $(seq 1 600); do
  phase=$("$K" get lft tiny-phi3 -n "$NS" -o jsonpath='{.status.phase}')
  [ "$phase" = Succeeded ] && break
  [ "$phase" = Failed ] && { rc=1; break; }
  sleep 1
done
kill $watcher 2>/dev/null || true
echo "--- kubectl get lft -o wide"
"$K" get lft tiny-phi3 -n "$NS" -o wide
if [ $rc -ne 0 ] || [ "$phase" != Succeeded ]; then
  "$K" describe lft tiny-phi3 -n "$NS"
  echo "demo run did not succeed (phase: ${phase:-none})" >&2
  exit 1
fi
echo "--- events"
"$K" describe lft tiny-phi3 -n "$NS" | sed -n '/^Events:/,$p'
uri=$("$K" get lft tiny-phi3 -n "$NS" -o jsonpath='{.status.adapter.uri}')
echo "--- adapter: $uri (S3 endpoint $LFT_S3_ENDPOINT)"
AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret .venv/bin/python - "$LFT_S3_ENDPOINT" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
for o in s3.list_objects_v2(Bucket="lft", Prefix="runs/tiny-phi3/").get("Contents", []):
    print(f"  s3://lft/{o['Key']}  {o['Size']} bytes")
PY

# kubectl lft: the plugin once this package is installed (`pip install .` puts kubectl-lft next to python),
# else the same program from this checkout. Storage: the run's endpoint and Secret, read by the CLI.
export PATH="$PWD/.venv/bin:$PATH"
if command -v kubectl-lft >/dev/null 2>&1; then
  lft() { "$K" lft "$@"; }
else
  lft() { PYTHONPATH=api:operator:trainer_image:cli .venv/bin/python -m lft_cli "$@"; }
fi
echo "--- kubectl lft status tiny-phi3"
lft status tiny-phi3 -n "$NS"
echo "--- kubectl lft samples tiny-phi3 (a held-out prompt: the base model's completion, then the tuned one's)"
lft samples tiny-phi3 -n "$NS"
echo "--- kubectl lft plot tiny-phi3 (the loss curve)"
mkdir -p _out/demo
lft plot tiny-phi3 _out/demo/tiny-phi3-loss.png -n "$NS"
