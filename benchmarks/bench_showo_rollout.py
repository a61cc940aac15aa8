"""Show-o rollout speed: our mask-predict sampler against a straightforward loop, on the same model.

Both run the same sampler (same seeds, schedule, guidance); only the per-step forward differs:
- reference, as the public code does: every step runs the whole sequence (text prefix + image block, conditional
  and unconditional rows) through the backbone and the full-vocabulary head, then keeps the image-code logits;
- ours: the text prefix's keys and values are computed once (text rows never see the image; the CFG twins share
  the one empty prompt), each step runs only the image block over them, and the head computes only the codes.
Prints images/s for both, whether the tokens agree, and the ratio.

    python benchmarks/bench_showo_rollout.py                     # CPU, a small Show-o with Show-o's 129-token prefix
    python benchmarks/bench_showo_rollout.py --arch showo-512 --dtype bfloat16 --device cuda --batch 1 4 16

Last line: `showo rollout ratio=<ours over reference>` at the largest batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from rayunify.models.showo.factory import SHOWO_256, SHOWO_512, TINY_SHOWO, build_showo_model
from rayunify.models.showo.sampling import sample
from rayunify.types import SamplingSettings

SMALL = dataclasses.replace(
    TINY_SHOWO, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=8, max_positions=1024,
    max_text_len=128, default_steps=16,
    magvit=dataclasses.replace(TINY_SHOWO.magvit, resolution=64, encoder_ch_mult=(1, 1, 1, 2), encoder_res_blocks=(1,) * 4,
                               decoder_ch_mult=(1, 1, 1, 2), decoder_res_blocks=(1,) * 4, bits=13),
)  # fmt: skip  (64 image tokens of 8,192 codes behind Show-o's 129-token prompt)
ARCHS = {"small": SMALL, "showo-256": SHOWO_256, "showo-512": SHOWO_512}
PROMPT = "a photo of a red circle to the left of a blue square"


def reference_logits(um):
    """Full sequence, full-vocabulary head, every step."""

    def logits(prefixes: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        from rayunify.models.showo.masks import additive, t2i_attention
        from rayunify.models.showo.sequences import image_block

        ids = torch.cat([prefixes, image_block(um.vocab, um.vocab.image_ids(state))], dim=1)
        mask = additive(t2i_attention(ids, um.vocab.pad, um.vocab.soi, um.vocab.eoi), um._dtype)
        full = um.phi(input_ids=ids, attention_mask=mask).logits  # positions 0..L-1 by default, as Show-o
        start, lo = prefixes.shape[1] + 1, um.vocab.code_offset
        return full[:, start : start + um.num_image_tokens, lo : lo + um.vocab.codebook_size].float()

    return logits


@torch.no_grad()
def rollout(um, logits_fn, batch: int, settings: SamplingSettings, seed: int):
    prefixes = um._prefixes([PROMPT] * batch)
    uncond = um._prefixes([""]).expand_as(prefixes)
    guided = um._guided(logits_fn, prefixes, uncond, settings.guidance_scale)
    generators = [torch.Generator(device=um.device).manual_seed(seed + i) for i in range(batch)]
    return sample(guided, batch, um.num_image_tokens, um.steps, generators, settings.temperature)


def timed(fn, device: str, repeats: int):
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(arch: str, dtype: str, device: str, batches: list[int], repeats: int) -> list[dict]:
    um = build_showo_model(ARCHS[arch], dtype=getattr(torch, dtype), device=device)
    settings = SamplingSettings(guidance_scale=6.0)
    rows = []
    for batch in batches:
        ours_s, ours = timed(lambda b=batch: rollout(um, um.cached_code_logits_fn(), b, settings, 0), device, repeats)
        ref_s, ref = timed(lambda b=batch: rollout(um, reference_logits(um), b, settings, 0), device, repeats)
        same = float((ours.codes == ref.codes).float().mean())
        rows.append({
            "arch": arch, "device": device, "dtype": dtype, "batch": batch, "steps": um.steps,
            "image_tokens": um.num_image_tokens, "ours_images_per_s": batch / ours_s,
            "reference_images_per_s": batch / ref_s, "same_tokens": same, "ratio": ref_s / ours_s,
        })  # fmt: skip
        print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="small")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = run(args.arch, args.dtype, args.device, args.batch, args.repeats)
    cells = ", ".join(
        f"{r['ratio']:.2f}x at batch {r['batch']} ({r['ours_images_per_s']:.2f} vs {r['reference_images_per_s']:.2f} images/s,"
        f" tokens equal {r['same_tokens']:.0%})"
        for r in rows
    )
    print(f"summary: cached text prefix vs a full forward per step ({args.arch}, {args.dtype}, {args.device}): {cells}")
    print(f"showo rollout ratio={rows[-1]['ratio']:.2f}")


if __name__ == "__main__":
    main()
