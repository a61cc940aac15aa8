"""Rollout speed: our CFG generation loop vs transformers' `generate(generation_mode="image")`.

Same model, prompts, batch and sampling settings, measured in the same run. Prints image tokens/s for
both and the ratio; on GPU also the share of the memory-bandwidth bound reached (each decode step must
read every language-model weight once).

    python benchmarks/bench_rollout.py                       # CPU, tiny Janus
    python benchmarks/bench_rollout.py --arch janus-pro-1b --dtype bfloat16 --device cuda --batch 1 4 16

Last line: `rollout ratio=<ours over transformers>` at the largest batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from rayunify.models.factory import JANUS_PRO_1B, TINY, build_janus
from rayunify.models.janus import JanusUnifiedModel
from rayunify.types import SamplingSettings

ARCHS = {
    "tiny": dataclasses.replace(TINY, image_size=48, patch_size=4, vq_channel_multiplier=(1, 1, 1)),  # 144 tokens
    "janus-pro-1b": JANUS_PRO_1B,
}
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}  # bytes/s, HBM3 / HBM3e


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (allocations, kernels)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bandwidth_fraction(um: JanusUnifiedModel, seconds: float) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BANDWIDTH.items() if k in name), None)
    if peak is None:
        return None
    lm_bytes = sum(p.numel() * p.element_size() for p in um.language_model.parameters())
    step_seconds = seconds / um.num_image_tokens
    return lm_bytes / step_seconds / peak


def run(arch_name: str, dtype: str, device: str, batches: list[int], n: int, repeats: int) -> list[dict]:
    model, processor = build_janus(ARCHS[arch_name], seed=0, dtype=getattr(torch, dtype), device=device)
    um = JanusUnifiedModel(model, processor)
    settings = SamplingSettings(guidance_scale=5.0)
    rows = []
    for batch in batches:
        prompts = [f"a photo of {i} red circles and a blue square" for i in range(batch)]
        enc = processor(
            text=[
                processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": p}]}], add_generation_prompt=True)
                for p in prompts
            ],
            generation_mode="image",
            padding=True,
            return_tensors="pt",
        ).to(device)

        def theirs(enc=enc):
            model.generate(**enc, generation_mode="image", do_sample=True, top_k=0, num_return_sequences=n, guidance_scale=5.0)

        def ours(prompts=prompts):
            um.generate(prompts, n=n, settings=settings, seed=0)

        t_theirs = timed(theirs, device, repeats)
        try:
            t_ours = timed(ours, device, repeats)
        except RuntimeError as err:  # report the eager path rather than nothing if graph capture fails
            print(f"graph decode failed ({err}); timing eager decode", flush=True)
            um.decode_mode = "eager"
            t_ours = timed(ours, device, repeats)
        tokens = batch * n * um.num_image_tokens
        row = {
            "arch": arch_name, "dtype": dtype, "device": device, "prompts": batch, "n": n,
            "transformers_tok_s": tokens / t_theirs, "ours_tok_s": tokens / t_ours, "ratio": t_theirs / t_ours,
            "ours_bandwidth_fraction": bandwidth_fraction(um, t_ours), "decode": um.decode_mode,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = run(args.arch, args.dtype, args.device, args.batch, args.n, args.repeats)
    print(f"rollout ratio={rows[-1]['ratio']:.2f}")


if __name__ == "__main__":
    main()
