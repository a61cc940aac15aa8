# Two commands do all set-up: `make demo` and `make test`. Each bootstraps .venv on first use, installing the
# versions CI tested (requirements/constraints.txt; `make lock` refreshes it from the current .venv).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
# On a machine without CUDA take the CPU build of torch (plain `pip install torch` pulls a multi-GB CUDA build).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-kernels test-vllm lint docs docs-check lock bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

# Each `make demo` is a fresh demo: --overwrite replaces the previous demo's checkpoints (its final model and
# metrics move to runs/demo/superseded/).
demo: $(STAMP)
	$(BIN)/python -m rayunify.train --config configs/demo.yaml --overwrite

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
	$(BIN)/ruff check rayunify tests benchmarks examples docs
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml): regenerate the configuration and CLI references from the code,
# then build it into site/ with --strict (a broken link or a nav entry without its page fails).
# docs-check (for CI) rewrites nothing: it fails when a generated page is stale, then builds into a temp dir.
docs: $(STAMP)
	$(BIN)/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-check: $(STAMP)
	$(BIN)/python docs/gen_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$(mktemp -d)"

# Refresh the pinned versions after changing dependencies in pyproject.toml: upgrade .venv as you mean to
# (e.g. `.venv/bin/pip install -U "ray[default]"`), run `make test`, then `make lock` and commit the file.
# torch is pinned without its local build tag (+cpu, +cu128), so the CPU and the CUDA build both satisfy it.
lock: $(STAMP)
	{ echo "# Versions \`make\` installs (pip install -c): refresh with \`make lock\` (see Makefile)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^rayunify' | sed -E 's/^(torch==[^+]+)\+.*/\1/'; \
	} > $(CONSTRAINTS)

# Every CPU benchmark (about 6 minutes on an idle 2-core machine); writes docs/measured.md and the Measured table
# of docs/speed.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/write_measured.py

clean:
	rm -rf $(VENV) runs outputs site
