#!/usr/bin/env bash
# The GPU suite, one pass in at most 12 minutes on one H100 or H200. That machine has torch, transformers and
# peft but no Ray and no registry: DeepSpeed, pydantic and hjson travel as wheels in .whl/
# (`bash benchmarks/gpu_wheels.sh` here first, then carry .whl). Usage there: bash benchmarks/gpu_suite.sh [PART...]
# with PART among tests, online, rollout (default: all three). The parts' limits add up to 11.5 minutes, more
# than one 10-minute device command: run `tests online` and then `rollout` as two commands on the same machine.
#   1. the GPU tests (tests/test_gpu.py): graph decode vs transformers and vs eager, teacher-forced log-probs,
#      DeepSpeed ZeRO-2 on CUDA with the push checked byte for byte (tiny model)
#   2. online DPO steps on the Janus-Pro-1B architecture (random weights, bf16) without Ray: generate, judge,
#      pair, one-rank DeepSpeed ZeRO-2 (NCCL world of one), push to the rollout model and the live self-judge
#   3. rollout at 4, 16 and 64 prompts x 4 images against transformers' generate, with the bandwidth bound,
#      the bucketed graph decode (the default) against the same decoder reading the whole KV buffer, bytes
#      moved per step against the bound's,
#      and a profile of one uncaptured decode at 16 prompts (what bounds the step: $OUT/decode_profile.txt)
# Figures go to $OUT (./gpu_out without it); each part has its own time limit, so one that hangs costs only
# its share, and the rest still run.
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
started=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "
import importlib.metadata as m
print(' '.join(f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'peft', 'deepspeed', 'pydantic')))
" 2>&1 | tee -a "$OUT/gpu.txt"
part() {  # part NAME SECONDS COMMAND...: run with a limit, keep its log, say how it ended
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  grep -v -e Warning -e "Loading weights" "$OUT/$name.txt" | tail -12
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s (limit $limit s)" | tee -a "$OUT/summary.txt"
}
parts=" ${*:-tests online rollout} "
[[ $parts == *" tests "* ]] && part gpu_tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
[[ $parts == *" online "* ]] && part online_steps 210 python3 benchmarks/gpu_online_steps.py --arch janus-pro-1b \
  --steps 4 --warmup 1 --prompts 16 --n 4 --batch 4 --max-rows 64 --verify
[[ $parts == *" rollout "* ]] && part bench_rollout 330 python3 benchmarks/bench_rollout.py --arch janus-pro-1b \
  --dtype bfloat16 --device cuda --batch 4 16 64 --n 4 --repeats 1 --whole-buffer --profile-prompts 16 \
  --profile-out "$OUT/decode_profile.txt"
grep -h -e "ratio=" "$OUT"/online_steps.txt "$OUT"/bench_rollout.txt 2>/dev/null | tee -a "$OUT/summary.txt"
echo "gpu suite: $(( $(date +%s) - started )) s" | tee -a "$OUT/summary.txt"
