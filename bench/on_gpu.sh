#!/usr/bin/env bash
# The policy bench on a lent GPU machine (its python3 holds a CUDA torch; diffusers travels as wheels in .whl/,
# fetched beside the repo with `pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl
# diffusers==<pyproject's pin> importlib_metadata`). Writes bench/results/policies.json (and $OUT's copy).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
python3 -m bench.run policies --device cuda "$@"
if [ -n "${OUT:-}" ]; then cp bench/results/policies.json "$OUT/policies_cuda.json"; fi
