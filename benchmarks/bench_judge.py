"""Judging speed: our judge vs the straightforward transformers route, same model, images and prompts.

Ours: one greedy decode with a KV cache, reading the soft score P("1") from the logits at the digit
position of that same decode (a teacher-forced pass only for rows whose answer strays from the format).
Baseline: transformers' `generate()` for the verdict plus a separate teacher-forced forward for the soft
score — what a judge built from the public API does. Prints judgements/s for both and the ratio.

    python benchmarks/bench_judge.py [--model DIR|builtin:shapes-base] [--batch 16 64]

Last line: `judge ratio=<ours over baseline>` at the largest batch.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from rayunify.config import JanusModelConfig
from rayunify.judges import question
from rayunify.models import build_model


def baseline_judge(um, images, prompts):
    """Verdict from transformers' generate(); soft score from one more teacher-forced forward."""
    enc = um.judge_inputs(images, prompts)
    out = um.model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=um.pad_id)
    answers = um.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    forced = um._teacher_forced_digit_logits(enc)
    return [(question.parse_verdict(a), question.soft_score(*d)) for a, d in zip(answers, forced, strict=True)]


def timed(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    um = build_model(JanusModelConfig(path=args.model), device="cpu")
    rng = np.random.default_rng(0)
    ratio = float("nan")
    for batch in args.batch:
        size = um.processor.image_processor.size["height"]
        images = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
        prompts = [f"a photo of {i % 4 + 1} red circles" for i in range(batch)]
        with torch.no_grad():
            t_base = timed(lambda i=images, p=prompts: baseline_judge(um, i, p), args.repeats)
            t_ours = timed(lambda i=images, p=prompts: um.judge(i, p), args.repeats)
        ratio = t_base / t_ours
        print(json.dumps({"batch": batch, "baseline_per_s": batch / t_base, "ours_per_s": batch / t_ours, "ratio": ratio}))
    print(f"judge ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
