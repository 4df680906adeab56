#!/usr/bin/env bash
# Publish a release to an OCI registry: the operator image, the trainer images, and the Helm chart as an OCI
# artifact whose defaults name those images, so that a user installs with one command:
#   helm install lora-finetune-operator oci://REGISTRY/charts/lora-finetune-operator --version VERSION
#
#   make release REGISTRY=ghcr.io/acme VERSION=0.2.0 [RELEASE_IMAGES="operator trainer-cpu trainer-gpu"]
#
# The images are the ones `make images` (and `make images-gpu`) built; each is pushed as
#   REGISTRY/lft-operator:VERSION, REGISTRY/lft-trainer:VERSION-cpu, REGISTRY/lft-trainer:VERSION-gpu
# and the chart's defaults pin them by digest (tag@sha256:...): what was tested is what runs. Default images:
# operator and trainer-cpu (the GPU trainer needs `make images-gpu` first, ~10 GB).
# Registries on loopback (127.0.0.1, localhost) are spoken to over plain HTTP, as hack/registry.sh serves one.
# Log in first for others (docker login / helm registry login). Prints the install command and the digests.
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${REGISTRY:?REGISTRY (e.g. ghcr.io/acme, or 127.0.0.1:5000 from hack/registry.sh)}
VERSION=${VERSION:?VERSION (SemVer, e.g. 0.2.0)}
IMAGES=${RELEASE_IMAGES:-operator trainer-cpu}
BIN=${LFT_BIN:-/var/cache/lft/bin}
HELM=${HELM:-$BIN/helm}
DOCKER=${DOCKER:-docker}
CHART=charts/lora-finetune-operator
OUT=${RELEASE_OUT:-_out/release}

log() { echo "[release] $*" >&2; }
die() { log "$*"; exit 1; }
# Helm requires SemVer 2 chart versions; image tags allow [A-Za-z0-9_.-] (no "+").
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "VERSION $VERSION is not SemVer (MAJOR.MINOR.PATCH[-PRE])"
[[ $REGISTRY =~ ^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?$ ]] || die "REGISTRY $REGISTRY is not host[:port][/path]"
plain=()
[[ $REGISTRY == 127.0.0.1:* || $REGISTRY == localhost:* ]] && plain=(--plain-http)

declare -A SOURCE=([operator]=lft/operator:dev [trainer-cpu]=lft/trainer:cpu [trainer-gpu]=lft/trainer:gpu)
declare -A TARGET=([operator]=$REGISTRY/lft-operator:$VERSION [trainer-cpu]=$REGISTRY/lft-trainer:$VERSION-cpu
                   [trainer-gpu]=$REGISTRY/lft-trainer:$VERSION-gpu)
declare -A PINNED=()
for image in $IMAGES; do
  [[ -n ${SOURCE[$image]:-} ]] || die "unknown image $image (operator, trainer-cpu, trainer-gpu)"
  "$DOCKER" image inspect "${SOURCE[$image]}" >/dev/null 2>&1 ||
    die "no ${SOURCE[$image]} in Docker: build it first (make images / make images-gpu)"
  t0=$SECONDS
  "$DOCKER" tag "${SOURCE[$image]}" "${TARGET[$image]}"
  "$DOCKER" push -q "${TARGET[$image]}" >/dev/null
  # The digest the registry holds for the tag: the chart pins it.
  digest=$("$DOCKER" image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "${TARGET[$image]}" |
    grep -F "${TARGET[$image]%:*}@" | head -n1 | cut -d@ -f2)
  [[ $digest == sha256:* ]] || die "no digest for ${TARGET[$image]} after the push"
  PINNED[$image]=${TARGET[$image]}@$digest
  log "pushed ${TARGET[$image]} ($digest) in $((SECONDS - t0)) s"
done

# The chart: this checkout's, with the version and the pushed images as its defaults.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$CHART" "$work/"
chart=$work/$(basename "$CHART")
python3 - "$chart" "$VERSION" "${PINNED[operator]:-}" "${PINNED[trainer-cpu]:-}" <<'PYEOF'
import re, sys
from pathlib import Path
chart, version, operator, trainer = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

def sub(path: Path, pattern: str, replacement: str) -> None:
    text, n = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.M)
    if n != 1:  # values.yaml changed shape: fail rather than publish a chart that names the wrong images
        sys.exit(f"release: no match for {pattern!r} in {path}")
    path.write_text(text)

sub(chart / "Chart.yaml", r"^version: .*$", f"version: {version}")
sub(chart / "Chart.yaml", r"^appVersion: .*$", f'appVersion: "{version}"')
values = chart / "values.yaml"
if operator:
    repository, _, ref = operator.partition(":")  # REGISTRY/lft-operator, VERSION@sha256:...
    sub(values, r"^(image:\n(?:  #.*\n)*  repository: ).*$", rf"\g<1>{repository}")
    sub(values, r"^(  # `dev`: .*\n  tag: ).*$", rf'\g<1>"{ref}"')
if trainer:
    sub(values, r"^(  # The CPU tiny-model trainer .*\n  image: ).*$", rf"\g<1>{trainer}")
PYEOF
mkdir -p "$OUT"
"$HELM" lint "$chart" >/dev/null
"$HELM" package "$chart" -d "$OUT" >/dev/null
archive=$OUT/$(basename "$CHART")-$VERSION.tgz
pushed=$("$HELM" push "$archive" "oci://$REGISTRY/charts" "${plain[@]}" 2>&1) || die "helm push failed: $pushed"
chart_digest=$(grep -o 'sha256:[0-9a-f]*' <<<"$pushed" | head -n1)
log "pushed chart oci://$REGISTRY/charts/$(basename "$CHART"):$VERSION ($chart_digest)"

{
  echo "release $VERSION"
  for image in $IMAGES; do echo "  ${PINNED[$image]}"; done
  echo "  oci://$REGISTRY/charts/$(basename "$CHART"):$VERSION@$chart_digest"
  echo "install:"
  echo "  helm install lora-finetune-operator oci://$REGISTRY/charts/$(basename "$CHART") --version $VERSION" \
    "${plain[*]:+${plain[*]} }-n lft-system --create-namespace"
} | tee "$OUT/release-$VERSION.txt"
