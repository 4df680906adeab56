#!/usr/bin/env bash
# Run on the lent GPU machine (no registry there): install the carried wheels (.whl/, see docs/performance.md's GPU
# section) next to the machine's own CUDA torch, then run bench/gpu_phi3.py with the given cases.
#   bash hack/gpu-bench-device.sh CASES BUDGET_SECONDS
set -euo pipefail
cases=${1:-recipe,auto,auto-e16,oom-backoff}
budget=${2:-330}
out=${OUT:-/tmp/lft-gpu-out}
python3 -m pip install -q --no-deps --target /tmp/lft-whl .whl/*.whl 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHONPATH=/tmp/lft-whl python3 bench/gpu_phi3.py --out "$out" --cases "$cases" --budget-seconds "$budget"
