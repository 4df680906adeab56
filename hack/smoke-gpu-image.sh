#!/usr/bin/env bash
# Smoke test of the GPU trainer image on a machine without a GPU (`make images-gpu` runs it
# after the build): in a container without network, as the image's user (uid 1000), import
# the whole stack and print its versions. torch must be the CUDA build (torch.version.cuda
# set; no GPU is needed to read it), and the trainer's CLI must start.
#
# Usage: hack/smoke-gpu-image.sh [IMAGE]   (default: $LFT_TRAINER_GPU_IMAGE or lft/trainer:gpu)
#   env: DOCKER (client, default docker)
set -euo pipefail

IMAGE=${1:-${LFT_TRAINER_GPU_IMAGE:-lft/trainer:gpu}}
DOCKER=${DOCKER:-docker}

log() { echo "[smoke-gpu-image] $*" >&2; }

start=$SECONDS
"$DOCKER" run -i --rm --network none --entrypoint python "$IMAGE" - <<'PY'
import importlib.metadata as md
import os

import torch

assert os.getuid() == 1000, f"runs as uid {os.getuid()}, not 1000"
assert torch.version.cuda is not None, f"torch {torch.__version__} is not a CUDA build"
print(f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
      f"(GPU here: {torch.cuda.is_available()})")

import accelerate, bitsandbytes, datasets, peft, transformers, triton, trl
import liger_kernel.transformers
from liger_kernel.transformers import AutoLigerKernelForCausalLM
import lft_trainer.run.train

for dist in ("transformers", "peft", "trl", "datasets", "accelerate", "triton", "bitsandbytes", "liger-kernel"):
    print(f"{dist} {md.version(dist)}")
PY
"$DOCKER" run --rm --network none "$IMAGE" --help >/dev/null
log "ok: $IMAGE imports the stack and python -m lft_trainer --help runs ($((SECONDS - start)) s)"
