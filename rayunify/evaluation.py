"""Evaluate a unified model: its images, its own verdicts on them, and a reference judge's verdicts.

`rayunify eval` and the trainer's periodic evaluation both call `evaluate`, so the numbers in eval.json,
in metrics.jsonl and in README mean the same thing.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayunify.judges.base import Judge
from rayunify.judges.inprocess import SelfJudge
from rayunify.metrics import VerdictRecord, by_category
from rayunify.models.base import UnifiedModel
from rayunify.types import Judgement, Prompt, SamplingSettings, Verdict


@dataclass
class JudgedImage:
    prompt: Prompt
    image: np.ndarray
    own: Judgement
    reference: Judgement
    tokens: np.ndarray  # the image's VQ tokens, for probes that re-score the same image later
    commit_steps: np.ndarray | None = None  # Show-o: the step that committed each token (Sample.commit_steps)


@dataclass
class EvalResult:
    report: dict[str, dict[str, float]]  # "overall" and one entry per category
    items: list[JudgedImage]


def evaluate(
    model: UnifiedModel,
    prompts: Sequence[Prompt],
    reference: Judge,
    n_per_prompt: int = 4,
    settings: SamplingSettings | None = None,
    seed: int = 0,
    prompts_per_batch: int = 16,
) -> EvalResult:
    """Generate n images per prompt, judge them with the model itself and with `reference`."""
    if not prompts:
        raise ValueError("evaluation needs at least one prompt")
    own_judge = SelfJudge(model)
    items: list[JudgedImage] = []
    for start in range(0, len(prompts), prompts_per_batch):
        batch = list(prompts[start : start + prompts_per_batch])
        out = model.generate([p.text for p in batch], n=n_per_prompt, settings=settings, seed=seed + start, decode=True)
        assert out.images is not None
        expanded = [p for p in batch for _ in range(n_per_prompt)]
        images = list(out.images)
        tokens = out.image_tokens.cpu().numpy()
        steps = [None] * len(tokens) if out.commit_steps is None else list(out.commit_steps.cpu().numpy())
        own = own_judge.judge(images, expanded)
        ref = reference.judge(images, expanded)
        items.extend(
            JudgedImage(p, img, o, r, t, s)
            for p, img, o, r, t, s in zip(expanded, images, own, ref, tokens, steps, strict=True)
        )
    records = [VerdictRecord(i.prompt.category, i.own.verdict, i.own.score, i.reference.verdict) for i in items]
    return EvalResult(report=by_category(records), items=items)


def write_eval(result: EvalResult, out_dir: str | Path, grid_size: int = 48) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result.report, indent=2, sort_keys=True))
    save_grid(result.items[:grid_size], out / "samples.png")
    return out / "eval.json"


MAX_GRID_SIDE = 2048  # px: a grid of 48 full-size 384-px images would be 12k px wide and tens of MB


def save_grid(items: Sequence[JudgedImage], path: str | Path, columns: int = 8, scale: int = 4) -> None:
    """A PNG of thumbnails, each captioned with its prompt, the model's verdict and the reference's. Small images
    are enlarged `scale` times; the grid's width stays within MAX_GRID_SIDE."""
    from PIL import Image, ImageDraw

    if not items:
        return
    columns = min(columns, len(items))
    side = min(items[0].image.shape[0] * scale, MAX_GRID_SIDE // columns)
    caption = 40
    items = items[: columns * max(1, MAX_GRID_SIDE // (side + caption))]  # the height stays within it too
    rows = (len(items) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * side, rows * (side + caption)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, item in enumerate(items):
        x, y = (index % columns) * side, (index // columns) * (side + caption)
        tile = Image.fromarray(item.image).resize((side, side), Image.Resampling.NEAREST if side >= item.image.shape[0] else Image.Resampling.BILINEAR)
        canvas.paste(tile, (x, y))
        text = textwrap.shorten(item.prompt.text, width=side // 6, placeholder="…")
        draw.text((x + 2, y + side + 1), text, fill="black")
        draw.text((x + 2, y + side + 13), f"self: {_mark(item.own)}", fill=_colour(item.own))
        draw.text((x + 2, y + side + 25), f"ref: {_mark(item.reference)}", fill=_colour(item.reference))
    canvas.save(path)


def _mark(j: Judgement) -> str:
    return {Verdict.ACCEPT: "yes", Verdict.REJECT: "no", Verdict.INVALID: "invalid"}[j.verdict] + f" {j.score:.2f}"


def _colour(j: Judgement) -> str:
    return {Verdict.ACCEPT: "green", Verdict.REJECT: "red", Verdict.INVALID: "gray"}[j.verdict]
