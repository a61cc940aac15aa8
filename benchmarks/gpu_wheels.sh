#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what the GPU machine lacks for benchmarks/gpu_suite.sh: it has torch,
# transformers, peft, numpy, pyyaml, msgpack, ninja, psutil, py-cpuinfo, nvidia-ml-py and tqdm, but not
# DeepSpeed, pydantic or hjson, and it reaches no registry. Run here (a registry is reachable), then carry .whl.
# Its Python is 3.12 on x86-64; the versions are this project's venv's, so both sides run the same code.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
platform=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d .whl \
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
  "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)" \
  "hjson==$(version hjson)" "typing-extensions==$(version typing-extensions)"
# DeepSpeed publishes a source archive only: build its pure-Python wheel (no ops compiled ahead).
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "deepspeed==$(version deepspeed)"
ls -l .whl
du -sh .whl
