#!/usr/bin/env bash
# Install ideal-nerf (editable) into the current Python, torch first.
# Usage: scripts/setup.sh [EXTRAS]     EXTRAS defaults to "cpu" (onnxruntime); use "gpu" or "gpu,trt" on NVIDIA.
# "triton" adds the Triton client and PyTriton's local server (`--render-url`, `ideal triton`); "test" includes it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-cpu}

# torch must come first: torch==2.13.0 is a local CPU build on these machines, and any looser requirement
# resolved before it pulls the newest CUDA build (gigabytes). A torch that is already there is kept.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install -q --disable-pip-version-check -e ".[${EXTRAS}]"
