#!/usr/bin/env bash
# Build the project's images: lft/trainer:cpu (trainer_image/Dockerfile) and lft/operator:dev
# (Dockerfile).
#
#   hack/build-images.sh [--offline|--online] [--variant cpu|gpu] [--no-cache] [trainer] [operator]
#
# --offline (default): no container registry and no network inside the build, as on this
#   machine: base image lft/base:bookworm from debootstrap (hack/base-image.sh), wheels
#   downloaded on the host (hack/wheelhouse.sh), `docker build --network none`.
# --online: the ordinary way elsewhere: FROM python:3.11-slim, pip from the index.
# --variant gpu: the trainer with CUDA torch + nvidia-* wheels, triton, bitsandbytes and
#   liger-kernel (trainer_image/requirements-gpu.txt), tagged lft/trainer:gpu (`make images-gpu`).
#   Offline, its wheelhouse (~2.8 GB, cached in /var/cache/lft/wheelhouse-gpu) reaches only
#   this build: it gets a context streamed as a tar (.dockerignore keeps it from the others).
#
# Idempotent and quick the second time: the base image and wheels are cached outside the
# clone (/var/cache/lft), and docker's layer cache keeps torch unless requirements change.
# Prints each image's size and build time. Full build logs: $LFT_STATE/logs/build-*.log.
#   env: LFT_TRAINER_IMAGE, LFT_OPERATOR_IMAGE (tags), DOCKER (client), LFT_STATE (/var/lib/lft),
#        LFT_LOAD_IMAGES (1: load them onto the workers of the kind cluster $LFT_KIND_CLUSTER [lft] if it
#        exists; 0: not)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=offline
VARIANT=cpu
NO_CACHE=()
TARGETS=()
while (($#)); do
  case "$1" in
    --offline) MODE=offline ;;
    --online) MODE=online ;;
    --variant) VARIANT=${2:?--variant cpu|gpu}; shift ;;
    --variant=*) VARIANT=${1#--variant=} ;;
    --no-cache) NO_CACHE=(--no-cache) ;;
    trainer | operator) TARGETS+=("$1") ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
((${#TARGETS[@]})) || TARGETS=(trainer operator)
[[ $VARIANT == cpu || $VARIANT == gpu ]] || { echo "--variant must be cpu or gpu" >&2; exit 2; }
# The trainer's wheelhouse: .wheelhouse/trainer or .wheelhouse/trainer-gpu.
TRAINER_WHEELS=trainer
[[ $VARIANT == gpu ]] && TRAINER_WHEELS=trainer-gpu

TRAINER_IMAGE=${LFT_TRAINER_IMAGE:-lft/trainer:$VARIANT}
OPERATOR_IMAGE=${LFT_OPERATOR_IMAGE:-lft/operator:dev}
LOG_DIR=${LFT_STATE:-/var/lib/lft}/logs
mkdir -p "$LOG_DIR"

log() { echo "[build-images] $*" >&2; }

# A daemon that answers is used as is; otherwise hack/docker.sh installs/starts one
# (its last stdout line is the client that talks to it).
if [[ -z "${DOCKER:-}" ]]; then
  if docker info >/dev/null 2>&1; then
    DOCKER=docker
  elif [[ -f "$ROOT/hack/docker.sh" ]]; then
    DOCKER=$(bash "$ROOT/hack/docker.sh" | tail -n1)
  else
    echo "no docker daemon" >&2; exit 1
  fi
fi
export DOCKER

total_start=$SECONDS
BUILD_ARGS=()
NETWORK=()
TRAINER_ARGS=()
if [[ $MODE == offline ]]; then
  step=$SECONDS
  bash "$ROOT/hack/base-image.sh"
  log "base image ready ($((SECONDS - step)) s)"
  step=$SECONDS
  bash "$ROOT/hack/wheelhouse.sh" "${TARGETS[@]/#trainer/$TRAINER_WHEELS}"
  log "wheelhouse ready ($((SECONDS - step)) s)"
  BUILD_ARGS=(--build-arg BASE_IMAGE=lft/base:bookworm)
  NETWORK=(--network none)
  [[ $VARIANT == gpu ]] && TRAINER_ARGS=(--build-arg "WHEELHOUSE=.wheelhouse/$TRAINER_WHEELS")
else
  # The ordinary way must not pick up a wheelhouse left in the clone by an offline build.
  BUILD_ARGS=(--build-arg WHEELHOUSE=.no-wheelhouse)
fi

# The gpu trainer's context, streamed as a tar: what its Dockerfile copies, the GPU wheels
# among it (the .dockerignore whitelist, which keeps them from every other build, less
# __pycache__ and the like). Owner 0:0 as the docker client sends, so the layer cache holds.
gpu_context() {
  tar -C "$ROOT" -c --owner=0 --group=0 --numeric-owner \
    --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    trainer_image api examples/data ".wheelhouse/$TRAINER_WHEELS"
}

declare -A TIMES=()
build() { # name dockerfile tag [extra args...]
  local name=$1 dockerfile=$2 tag=$3; shift 3
  local logf="$LOG_DIR/build-$name.log" start=$SECONDS gpu=0
  local args=("${NETWORK[@]}" "${NO_CACHE[@]}" "${BUILD_ARGS[@]}" "$@" -t "$tag")
  [[ $name == trainer && $VARIANT == gpu ]] && gpu=1 logf="$LOG_DIR/build-trainer-gpu.log"
  log "building $tag ($MODE) from $dockerfile; log: $logf"
  if ((gpu)) && [[ $MODE == offline ]]; then
    gpu_context | "$DOCKER" build "${args[@]}" -f "$dockerfile" - >"$logf" 2>&1
  else
    "$DOCKER" build "${args[@]}" -f "$ROOT/$dockerfile" "$ROOT" >"$logf" 2>&1
  fi || {
    tail -n 40 "$logf" >&2
    log "FAILED: $tag (full log: $logf)"
    exit 1
  }
  TIMES[$name]=$((SECONDS - start))
  local cached steps
  steps=$(grep -c '^Step ' "$logf" || true)
  cached=$(grep -c 'Using cache' "$logf" || true)
  log "built $tag in ${TIMES[$name]} s ($cached of $steps steps from cache)"
}

for t in "${TARGETS[@]}"; do
  case $t in
    trainer) build trainer trainer_image/Dockerfile "$TRAINER_IMAGE" --build-arg "VARIANT=$VARIANT" \
      "${TRAINER_ARGS[@]}" ;;
    operator) build operator Dockerfile "$OPERATOR_IMAGE" ;;
  esac
done

# Each rebuild leaves the previous image untagged (with its own venv layer when deps
# changed); drop those of ours that no container uses, so the disk does not fill up.
for title in lft-trainer lft-operator; do
  "$DOCKER" image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null 2>&1 || true
done

echo "image                          size      build time"
for t in "${TARGETS[@]}"; do
  case $t in trainer) tag=$TRAINER_IMAGE ;; operator) tag=$OPERATOR_IMAGE ;; esac
  size=$("$DOCKER" image inspect -f '{{.Size}}' "$tag")
  printf '%-30s %-9s %s s\n' "$tag" "$((size / 1000000)) MB" "${TIMES[$t]}"
done
echo "total: $((SECONDS - total_start)) s ($MODE)"

# The end-to-end cluster is kind's (hack/kind/up.sh): load the images onto its workers (the 5.8 GB trainer image
# costs about 8 GB of disk per node, so not onto the control plane), unless that cluster does not exist.
# LFT_LOAD_IMAGES=0: not loaded (hack/kind-e2e.sh and hack/test-all.sh set it: they get the images onto the
# nodes themselves).
[[ ${LFT_LOAD_IMAGES:-1} == 0 ]] && { log "images not loaded into the kind cluster (LFT_LOAD_IMAGES=0)"; exit 0; }
loaded=()
for t in "${TARGETS[@]}"; do
  case $t in trainer) loaded+=("$TRAINER_IMAGE") ;; operator) loaded+=("$OPERATOR_IMAGE") ;; esac
done
cluster=${LFT_KIND_CLUSTER:-lft}
kind=$(command -v kind || echo /var/cache/lft/kind/0.33.0/kind)
clusters=$("$kind" get clusters 2>/dev/null || true)
if ! grep -qx -- "$cluster" <<<"$clusters"; then
  log "no kind cluster $cluster: images not loaded (hack/kind/up.sh starts it)"
  exit 0
fi
step=$SECONDS
# An image a worker already holds under another name with the same ID (pulled from the local registry by
# `make test`) gets the local name too, so that kind load skips it: loading the trainer image costs about
# 200 s and 13 GB of disk per worker (docs/kind.md).
for node in "$cluster-worker" "$cluster-worker2"; do
  for ref in "${loaded[@]}"; do
    id=$("$DOCKER" image inspect -f '{{.Id}}' "$ref")
    have=$("$DOCKER" exec "$node" crictl inspecti -o json "$id" 2>/dev/null |
      python3 -c 'import json, sys; print((json.load(sys.stdin)["status"].get("repoTags") or [""])[0])' 2>/dev/null) || continue
    want=$ref; [[ ${ref%%/*} == *[.:]* ]] || want=docker.io/$ref
    if [[ -n $have && $have != "$want" ]]; then
      "$DOCKER" exec "$node" ctr -n k8s.io images tag --force "$have" "$want" >/dev/null 2>&1
      log "$node already has $ref (as $have): tagged, not loaded again"
    fi
  done
done
# One image per call: kind saves every image it is given into one tar (5.8 GB for the trainer), even one that
# every node already has.
for ref in "${loaded[@]}"; do
  "$kind" load docker-image "$ref" --name "$cluster" --nodes "$cluster-worker,$cluster-worker2"
done
log "images on the workers of kind cluster $cluster ($((SECONDS - step)) s)"
