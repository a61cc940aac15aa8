"""Judging speed: our judge vs the straightforward transformers route, same model, images, prompts and threads.

Ours: one greedy decode with a KV cache, reading the soft score P("1") from the logits at the digit
position of that same decode; a teacher-forced pass only for rows whose answer strays from the format
("The score is 0/1"). Baseline: transformers' `generate()` for the verdict plus a separate teacher-forced
forward for the soft score, for every row — what a judge built from the public API does.

What it can show: the one piece of work ours skips is the teacher-forced pass for rows that answered in
the format, so the gain is at most (decode + forced pass) / decode. It exists only for a
model that answers in the format: a random model (builtin:tiny) strays on every row and does the same work
as the baseline (ratio about 1 by construction); the ShapesWorld base answers in the format on ShapesWorld
images. Images are ShapesWorld renders with their own prompts when the model takes 32-pixel images, else
random pixels. The `strayed` column says how many rows needed the extra pass.

Threads: --threads (default 1) for torch, set before anything runs. Decoding is many small operations; on
a shared 2-core machine two threads per operation wait for each other whenever another job holds a core,
which slows the many small decode steps far more than one large forward and swamps what this compares.

    python benchmarks/bench_judge.py [--model builtin:tiny builtin:shapes-base] [--batch 32] [--threads 1]

Last line: `judge ratio=<ours over baseline>` for the last model at the largest batch.
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


def cases(size: int, batch: int) -> tuple[list[np.ndarray], list[str], str]:
    """ShapesWorld renders with their prompts at 32 px (the built-in models' size), else random pixels."""
    if size == 32:
        from rayunify.shapes import rendered_cases
        from rayunify.shapes.world import make_prompt_text

        images, specs = rendered_cases(batch, seed=3)
        return list(images), [make_prompt_text(s) for s in specs], "shapes renders"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    return images, [f"a photo of {i % 4 + 1} red circles" for i in range(batch)], "random pixels"


def strayed_rows(um, images: list[np.ndarray], prompts: list[str]) -> int:
    """Rows whose greedy answer does not follow the format (ours then runs the teacher-forced pass for them)."""
    _, digit_logits = um._greedy_answer(um.judge_inputs(images, prompts), 8)
    return sum(d is None for d in digit_logits)


def measure(model: str, batches: list[int], repeats: int) -> list[dict]:
    torch.manual_seed(0)
    um = build_model(JanusModelConfig(path=model), device="cpu")
    rows = []
    for batch in batches:
        images, prompts, kind = cases(um.processor.image_processor.size["height"], batch)
        with torch.no_grad():
            t_base = timed(lambda i=images, p=prompts: baseline_judge(um, i, p), repeats)
            t_ours = timed(lambda i=images, p=prompts: um.judge(i, p), repeats)
            strayed = strayed_rows(um, images, prompts)
        row = {
            "model": model, "images": kind, "batch": batch, "strayed": strayed, "threads": torch.get_num_threads(),
            "baseline_per_s": batch / t_base, "ours_per_s": batch / t_ours, "ratio": t_base / t_ours,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["builtin:tiny", "builtin:shapes-base"])
    parser.add_argument("--batch", type=int, nargs="+", default=[32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for model in args.model for row in measure(model, args.batch, args.repeats)]
    last = {r["model"]: r for r in rows}
    print(
        "summary: " + "; ".join(
            f"{m} ({r['images']}, {r['strayed']}/{r['batch']} rows strayed): {r['ours_per_s']:.0f} vs "
            f"{r['baseline_per_s']:.0f} judgements/s, {r['ratio']:.2f}x" for m, r in last.items()
        ) + f"; {args.threads} torch thread(s)"
    )  # fmt: skip
    print(f"judge ratio={rows[-1]['ratio']:.2f}")


if __name__ == "__main__":
    main()
