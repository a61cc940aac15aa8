#!/usr/bin/env bash
# One lent-GPU session: the GPU tests, a sweep of ShapesWorld base recipes (all variants at once on one
# GPU, the default base's own VQ tokenizer from .gpu/base), then the rollout benchmark alone on the GPU
# with whatever time is left. Carry .whl (transformers, pydantic) and .gpu (a copy of the cached base).
# Usage there: bash examples/gpu_base_sweep.sh TOTAL_SECONDS   (figures under $OUT)
# Measured on one H100 (2026-11-27, PARALLEL=12): the 12 variants at once ran at about 0.33 s a step each
# (small kernels from 12 processes take turns on the GPU), no faster per variant than 2 CPU cores, so in a
# 560-second call only the 960-step variant finished. The tests (14 s) and the rollout benchmark's first two
# batches did. Hence PARALLEL 4 by default: run fewer variants per call.
set -uo pipefail
TOTAL=${1:-560}; START=$SECONDS
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

VARIANTS=(
  --variant 'default={}'
  --variant 'hard_weights={"category_weights": [0.04, 0.08, 0.04, 0.08, 0.38, 0.38]}'
  --variant 'gen32_und24={"gen_batch": 32, "und_batch": 24}'
  --variant 'lr1e-3={"lr": 0.001}'
  --variant 'h96_1950={"arch.hidden_size": 96, "steps": 1950}'
  --variant 'l6_1150={"arch.num_layers": 6, "steps": 1150}'
  --variant 'h192_960={"arch.hidden_size": 192, "steps": 960}'
  --variant 'steps2500={"steps": 2500}'
  --variant 'und2={"und_weight": 2.0}'
  --variant 'vision3={"arch.vision_layers": 3}'
  --variant 'own_rate={"mix.own_balanced": false}'
  --variant 'hard_gen32={"category_weights": [0.04, 0.08, 0.04, 0.08, 0.38, 0.38], "gen_batch": 32, "und_batch": 24}'
)
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1 &
timeout $((TOTAL - 150)) python3 examples/sweep_base.py --out "$OUT/sweep" --device cuda --parallel "${PARALLEL:-4}" --threads 1 \
  --vq-from .gpu/base --n-prompts 96 --n-per-prompt 8 "${VARIANTS[@]}" 2>&1 | grep -v -i "warn\|Loading weights\|Writing model" | tee "$OUT/sweep.txt"
wait
# A cut-off sweep leaves its worker processes (spawned: their command line is multiprocessing's, not the
# script's) running on the GPU, where they would share it with the benchmark.
pkill -f multiprocessing.spawn; sleep 2
tail -5 "$OUT/gpu_tests.txt"
rm -rf "$OUT"/sweep/*/ "$OUT/sweep/vq.pt"  # the models stay there: results.json holds their scores
LEFT=$((TOTAL - (SECONDS - START)))
echo "rollout benchmark with ${LEFT}s left"
if [ "$LEFT" -gt 40 ]; then
  timeout "$LEFT" python3 benchmarks/bench_rollout.py --arch janus-pro-1b --dtype bfloat16 --device cuda \
    --batch 1 4 16 --n 4 --repeats 1 2>&1 | grep -v Warning | tee "$OUT/bench_rollout_gpu.txt"
fi
