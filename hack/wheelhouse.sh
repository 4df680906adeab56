#!/usr/bin/env bash
# Download on the host every wheel the images need, so `docker build` runs without network
# (HTTPS to PyPI fails inside containers here: the host's trust store is not there).
#
# Wheels are cached outside the clone in $LFT_CACHE_DIR/wheelhouse (one flat folder, reused
# by every clone and run); each image gets its exact set hard-linked into the build context:
#   .wheelhouse/trainer/      trainer_image/requirements.txt (CPU torch from /opt/wheels)
#   .wheelhouse/operator/     operator/requirements.txt
#   .wheelhouse/trainer-gpu/  trainer_image/requirements-gpu.txt: the CUDA build of the same torch
#                             release + nvidia-* wheels, triton, bitsandbytes, liger-kernel (~2.8 GB,
#                             cached apart in $LFT_CACHE_DIR/wheelhouse-gpu; only on request)
# plus a requirements.lock (name==version of every wheel), which the Dockerfiles use as
# constraints. Shared packages get the dev venv's versions (what the tests ran against).
#
# A warm run resolves against the cache alone (--no-index) and touches no network.
# Only wheels are accepted (--only-binary): an sdist would need a compiler inside the build.
#
# Usage: hack/wheelhouse.sh [trainer|operator|trainer-gpu ...]   (default: trainer operator)
#   env: PIP (default /work/main/.venv/bin/pip, else .venv/bin/pip), LFT_CACHE_DIR (/var/cache/lft),
#        LFT_WHEELHOUSE_VENV_PINS=0: do not prefer the dev venv's versions
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${LFT_CACHE_DIR:-/var/cache/lft}/wheelhouse"
# The GPU image's own wheels (GBs) live apart, so they can be dropped alone; it also finds
# the shared ones in $CACHE.
GPU_CACHE="${LFT_CACHE_DIR:-/var/cache/lft}/wheelhouse-gpu"
OUT="$ROOT/.wheelhouse"
if [[ -z "${PIP:-}" ]]; then
  for p in /work/main/.venv/bin/pip "$ROOT/.venv/bin/pip"; do [[ -x $p ]] && PIP=$p && break; done
fi
: "${PIP:?no pip found: set PIP=/path/to/pip (pip >= 23)}"
# The CPU build of torch lies on this machine's disk; the index only has multi-GB CUDA builds.
TORCH_CPU_WHEEL="${TORCH_CPU_WHEEL:-$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | sort -V | tail -n1 || true)}"

log() { echo "[wheelhouse] $*" >&2; }

declare -A REQS=(
  [trainer]="$ROOT/trainer_image/requirements.txt"
  [operator]="$ROOT/operator/requirements.txt"
  [trainer-gpu]="$ROOT/trainer_image/requirements-gpu.txt"
)
IMAGES=("$@")
((${#IMAGES[@]})) || IMAGES=(trainer operator)

mkdir -p "$CACHE" "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Constraints: pin torch to the CPU build (so nothing ever pulls a CUDA torch and the
# nvidia-* wheels); the GPU image gets the same release without the +cpu label.
CONSTRAINTS="$WORK/constraints.txt"
GPU_CONSTRAINTS="$WORK/constraints-gpu.txt"
: > "$CONSTRAINTS"
: > "$GPU_CONSTRAINTS"
if [[ -z "$TORCH_CPU_WHEEL" ]]; then
  # Machines of the polyglot kind have no CPU wheel on disk, and PyPI serves only the CUDA build
  # (torch + its nvidia-*/cuda-* wheels, ~3 GB). It runs on the CPU as well; the image is bigger.
  log "no CPU torch wheel in /opt/wheels: the CPU image takes PyPI's torch (CUDA build, runs on the CPU)"
fi
if [[ -n "$TORCH_CPU_WHEEL" ]]; then
  ln -f "$TORCH_CPU_WHEEL" "$CACHE/" 2>/dev/null || cp -n "$TORCH_CPU_WHEEL" "$CACHE/"
  torch_ver=$(basename "$TORCH_CPU_WHEEL" | cut -d- -f2)
  echo "torch==$torch_ver" >> "$CONSTRAINTS"
  printf 'torch==%s\ntorch!=%s\n' "${torch_ver%%+*}" "$torch_ver" >> "$GPU_CONSTRAINTS"
fi

# Where the images share packages with the dev venv, take the venv's exact versions (what
# the tests ran against) instead of whatever resolves today. If they conflict with the
# requirements (venv not yet reinstalled after a pin change), resolve without them.
VENV_PINS="$WORK/venv-pins.txt"
: > "$VENV_PINS"
if [[ "${LFT_WHEELHOUSE_VENV_PINS:-1}" == 1 ]]; then
  "$PIP" freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' |
    grep -viE '^(torch|pip|setuptools|wheel)==' > "$VENV_PINS" || true
fi

# Per image (set in the loop): $cache (where its downloads go), $links (--find-links for
# every cache it may use), $constraints (the torch build it gets).
# Resolve $1 (a requirements file) against the caches alone; write pip's JSON report to $2;
# $3: extra constraints file.
resolve_offline() {
  "$PIP" install --quiet --dry-run --ignore-installed --no-index "${links[@]}" \
    --only-binary=:all: -c "$constraints" -c "$3" -r "$1" --report "$2" 2>"$WORK/resolve.err"
}
# Download what $1 needs (with extra constraints $2) into the image's cache.
download() {
  "$PIP" download --quiet --only-binary=:all: "${links[@]}" -c "$constraints" -c "$2" \
    -r "$1" -d "$cache" 2>&1 | grep -v "is ignored: it is neither a file" >&2
}
# Resolve with the venv's pins, downloading if the cache lacks something; $3 = pins file.
resolve() {
  resolve_offline "$1" "$2" "$3" && return 0
  log "$image: cache incomplete, downloading into $cache"
  download "$1" "$3" || true
  resolve_offline "$1" "$2" "$3"
}

for image in "${IMAGES[@]}"; do
  req=${REQS[$image]:?unknown image $image (trainer|operator|trainer-gpu)}
  cache=$CACHE constraints=$CONSTRAINTS links=(--find-links "$CACHE")
  if [[ $image == trainer-gpu ]]; then
    cache=$GPU_CACHE constraints=$GPU_CONSTRAINTS links=(--find-links "$GPU_CACHE" "${links[@]}")
    mkdir -p "$GPU_CACHE"
  fi
  report="$WORK/$image.json"
  start=$SECONDS
  dest="$OUT/$image"
  # Unchanged inputs and an intact wheel set: nothing to resolve. The stamp lies outside
  # $dest: the build copies $dest, and its layer cache must depend on the wheels alone.
  stampf="$OUT/$image.stamp"
  stamp=$(cat "$req" "$constraints" "$VENV_PINS" | sha256sum | cut -c1-16)
  if [[ -f "$stampf" && "$(head -n1 "$stampf")" == "$stamp" ]] &&
     tail -n +2 "$stampf" | (cd "$dest" 2>/dev/null && xargs -r ls >/dev/null 2>&1); then
    log "$image: up to date ($(($(wc -l < "$stampf") - 1)) wheels in $dest)"
    continue
  fi
  if ! resolve "$req" "$report" "$VENV_PINS"; then
    log "$image: the dev venv's versions do not fit $req; resolving without them"
    : > "$WORK/none.txt"
    resolve "$req" "$report" "$WORK/none.txt" || { cat "$WORK/resolve.err" >&2; exit 1; }
  fi

  # The report names each chosen wheel by its file:// URL in the cache.
  mapfile -t files < <(python3 - "$report" <<'PY'
import json, sys, urllib.parse
for item in json.load(open(sys.argv[1]))["install"]:
    print(urllib.parse.unquote(urllib.parse.urlparse(item["download_info"]["url"]).path))
PY
)
  if [[ $image == trainer && -n "$TORCH_CPU_WHEEL" ]] && ! printf '%s\n' "${files[@]}" | grep -q '/torch-[^/]*+cpu-'; then
    log "trainer: torch is not the CPU build; refusing (would be GBs of CUDA)"; exit 1
  fi
  if [[ $image == trainer-gpu ]]; then
    if printf '%s\n' "${files[@]}" | grep -q '/torch-[^/]*+cpu-' ||
       ! printf '%s\n' "${files[@]}" | grep -q '/nvidia_'; then
      log "trainer-gpu: torch is not the CUDA build (no nvidia-* wheels); refusing"; exit 1
    fi
  elif [[ $image != trainer || -n "$TORCH_CPU_WHEEL" ]] && printf '%s\n' "${files[@]}" | grep -q '/nvidia_'; then
    log "$image: CUDA (nvidia-*) wheels in the set; refusing"; exit 1
  fi

  mkdir -p "$dest"
  # Drop wheels no longer wanted, so the build context holds exactly this set.
  declare -A want=()
  for f in "${files[@]}"; do want[$(basename "$f")]=1; done
  for f in "$dest"/*.whl; do
    [[ -e $f && -z ${want[$(basename "$f")]:-} ]] && rm -f "$f"
  done
  for f in "${files[@]}"; do
    # Hard links cost no space; fall back to a copy across file systems.
    [[ "$f" -ef "$dest/$(basename "$f")" ]] || ln -f "$f" "$dest/" 2>/dev/null || cp -f "$f" "$dest/"
  done
  unset want
  python3 - "$report" > "$dest/requirements.lock" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
for item in sorted(items, key=lambda i: i["metadata"]["name"].lower()):
    print(f'{item["metadata"]["name"]}=={item["metadata"]["version"]}')
PY
  rm -f "$dest/.stamp"  # (older layout)
  { echo "$stamp"; for f in "${files[@]}"; do basename "$f"; done; } > "$stampf"
  log "$image: ${#files[@]} wheels, $(du -shL "$dest" | cut -f1) in $dest ($((SECONDS - start)) s)"
done
