"""GPU checks (run on a lent GPU; skipped on CPU): our CUDA-graph decode against transformers on CUDA."""

from __future__ import annotations

import pytest
import torch

from rayunify.models.janus.decoding import KV_BUCKET
from rayunify.models.janus.factory import TINY, build_janus
from rayunify.models.janus.model import JanusUnifiedModel
from rayunify.types import SamplingSettings

pytestmark = pytest.mark.gpu
PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def cuda_tiny():
    model, processor = build_janus(TINY, seed=0, device="cuda")
    return JanusUnifiedModel(model, processor)


def test_graph_decode_greedy_equals_transformers_on_cuda(cuda_tiny):
    um = cuda_tiny
    chats = [
        um.processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": p}]}], add_generation_prompt=True)
        for p in PROMPTS
    ]
    enc = um.processor(text=chats, generation_mode="image", padding=True, return_tensors="pt").to("cuda")
    theirs = um.model.generate(**enc, generation_mode="image", do_sample=False, guidance_scale=5.0)
    ours = um.generate(PROMPTS, settings=SamplingSettings(guidance_scale=5.0), greedy=True)
    assert torch.equal(theirs, ours.image_tokens)


@pytest.mark.parametrize("bucket", [KV_BUCKET, 4, 0])  # one graph per 4 KV slots (several graphs), whole buffer
def test_graph_decode_equals_eager_decode_on_cuda(cuda_tiny, bucket):
    settings = SamplingSettings(guidance_scale=3.0)
    cuda_tiny.decode_bucket = bucket
    try:
        graphed = cuda_tiny.generate(PROMPTS, n=3, settings=settings, seed=11)
        cuda_tiny.decode_mode = "eager"
        eager = cuda_tiny.generate(PROMPTS, n=3, settings=settings, seed=11)
    finally:
        cuda_tiny.decode_mode, cuda_tiny.decode_bucket = "auto", KV_BUCKET
    assert torch.equal(graphed.image_tokens, eager.image_tokens)


def test_teacher_forced_logprobs_match_graph_generation(cuda_tiny):
    out = cuda_tiny.generate(PROMPTS, n=2, settings=SamplingSettings(guidance_scale=4.0), seed=2)
    forced = cuda_tiny.image_logprobs([p for p in PROMPTS for _ in range(2)], out.image_tokens, geometry="cfg", guidance_scale=4.0)
    torch.testing.assert_close(forced.detach(), out.logprobs, atol=1e-3, rtol=1e-3)


def test_online_steps_on_cuda_push_what_deepspeed_trained(tmp_path):
    """The GPU suite's loop on the tiny model: DeepSpeed ZeRO-2 on CUDA (an NCCL world of one, bf16), then the
    push lands in the rollout model and the live self-judge byte for byte."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks/gpu_online_steps.py"), "--arch", "tiny", "--device", "cuda",
         "--steps", "2", "--prompts", "4", "--n", "2", "--batch", "2", "--max-rows", "8", "--verify"],
        cwd=root, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert rows[0]["device"].startswith("cuda")
    assert any("version" in r for r in rows[1:-1]), "no step formed a DPO pair"
    assert rows[-1]["pushed_weights_match"] is True and rows[-1]["peak_gpu_gib"] > 0
