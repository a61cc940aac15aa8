# Two commands do all set-up: `make demo` and `make test`. Each bootstraps .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# On a machine without CUDA take the CPU build of torch (plain `pip install torch` pulls a multi-GB CUDA build).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-kernels test-vllm lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rayunify.train --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The tests whose figures come out of float kernels (marked `kernels`), again under a second kernel setting of
# this host: AVX2 where the host has AVX-512, else torch's plain build. An assertion that holds only on one
# CPU's kernels fails here before it fails on a user's machine.
test-kernels: $(STAMP)
	ATEN_CPU_CAPABILITY=$$($(BIN)/python -c "import torch; print('avx2' if torch.backends.cpu.get_cpu_capability() == 'AVX512' else 'default')") \
	MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest -q -m kernels tests

# The vLLM judge against a real vLLM server, from its own environment (built once by .ci/vllm_env.sh).
test-vllm: $(STAMP)
	RAYUNIFY_VLLM_PYTHON=$$(.ci/vllm_env.sh) $(BIN)/python -m pytest -q -m slow tests/test_judges_vlm.py -k vllm

lint: $(STAMP)
	$(BIN)/ruff check rayunify tests benchmarks
	$(BIN)/mypy

# Every CPU benchmark (about 6 minutes on an idle 2-core machine); writes docs/measured.md and README's Measured table.
bench: $(STAMP)
	$(BIN)/python benchmarks/write_measured.py

clean:
	rm -rf $(VENV) runs outputs
