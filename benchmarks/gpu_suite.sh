#!/usr/bin/env bash
# One pass of every GPU measurement, for the lent device (no registry there: wheels travel in .whl/).
# Usage there: bash benchmarks/gpu_suite.sh   (writes figures under $OUT, or ./gpu_out without it)
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout 420 python3 benchmarks/bench_rollout.py --arch janus-pro-1b --dtype bfloat16 --device cuda \
  --batch 1 4 16 --n 4 --repeats 1 2>&1 | grep -v Warning | tee "$OUT/bench_rollout_gpu.txt"
