"""Generated images in the folder layouts the official benchmark scorers read, so a checkpoint's GenEval and
T2I-CompBench(++) numbers come from those benchmarks' own tools, not from ours.

GenEval (`evaluation/evaluate_images.py IMAGE_FOLDER`): one folder per prompt, named by digits, holding the
prompt's metadata line as `metadata.jsonl` (the scorer reads the object from there, never from the prompt
file) and the images as `samples/00000.png, 00001.png, ...`.

T2I-CompBench(++): one folder per category holding `samples/<prompt verbatim>_<index>.png`, the index a 6-digit
counter over the whole category, prompt-major. The scorers recover the prompt with `name.split('_')[0]` and
the index from the last `_` field, number results by sorted position or by the parsed index, and the
complex category's 3-in-1 scorer combines them assuming 10 images per prompt at `i*10 .. i*10+9`; so a
prompt may not contain `_` or `/`, `samples/` holds images only, and every prompt has exactly 10 images.
Images are PNG: both benchmarks skip or mis-parse other formats.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayunify.types import Prompt

T2I_COMPBENCH_IMAGES_PER_PROMPT = 10
FORMATS = ("geneval", "t2i_compbench")


class ExportError(ValueError):
    """The images cannot be written in a layout the benchmark's scorer would read correctly."""


@dataclass(frozen=True)
class PromptImages:
    """One prompt's generated images, in sample order."""

    prompt: Prompt
    images: Sequence[np.ndarray]  # (H, W, 3) uint8 each


def export_images(groups: Sequence[PromptImages], out_dir: str | Path, fmt: str) -> Path:
    """Write `groups` under `out_dir/<fmt>/` and return that folder."""
    if fmt not in FORMATS:
        raise ExportError(f"--export {fmt!r}: choose one of {', '.join(FORMATS)}")
    root = Path(out_dir) / fmt
    (export_geneval if fmt == "geneval" else export_t2i_compbench)(groups, root)
    return root


def export_geneval(groups: Sequence[PromptImages], root: Path) -> None:
    for group in groups:
        _geneval_metadata(group.prompt)  # refuse before writing anything
    for index, group in enumerate(groups):
        folder = root / f"{index:0>5}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(_geneval_metadata(group.prompt)) + "\n")
        for sample, image in enumerate(group.images):
            _save_png(image, folder / "samples" / f"{sample:0>5}.png")


def _geneval_metadata(prompt: Prompt) -> dict:
    spec = prompt.spec or {}
    if "include" not in spec or "tag" not in spec:
        raise ExportError(
            f"prompt {prompt.text!r} has no GenEval metadata (tag, include): --export geneval needs prompts read "
            "from GenEval's evaluation_metadata.jsonl (prompts.format=geneval or auto)"
        )
    return spec


def export_t2i_compbench(groups: Sequence[PromptImages], root: Path) -> None:
    for group in groups:
        _check_compbench_prompt(group)
    counters: dict[str, int] = {}
    for group in groups:
        samples = root / group.prompt.category / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        for image in group.images:
            index = counters.get(group.prompt.category, 0)
            _save_png(image, samples / f"{group.prompt.text}_{index:06d}.png")
            counters[group.prompt.category] = index + 1


def _check_compbench_prompt(group: PromptImages) -> None:
    text = group.prompt.text
    if "_" in text or "/" in text or not text.strip():
        raise ExportError(
            f"prompt {text!r} cannot be a T2I-CompBench file name: its scorers split names on '_' and paths on '/'"
        )
    if len(group.images) != T2I_COMPBENCH_IMAGES_PER_PROMPT:
        raise ExportError(
            f"prompt {text!r} has {len(group.images)} images; T2I-CompBench's scorers assume "
            f"{T2I_COMPBENCH_IMAGES_PER_PROMPT} per prompt (evaluate with --samples {T2I_COMPBENCH_IMAGES_PER_PROMPT})"
        )


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG")
