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


class BenchmarkExporter:
    """Writes images as they are generated (chunk by chunk, prompts in order) into `out_dir/<fmt>/`. Every
    prompt is checked when the exporter is made, before any image exists, so an export never fails half-way."""

    def __init__(self, out_dir: str | Path, fmt: str, prompts: Sequence[Prompt], samples: int):
        if fmt not in FORMATS:
            raise ExportError(f"--export {fmt!r}: choose one of {', '.join(FORMATS)}")
        self.fmt, self.root = fmt, Path(out_dir) / fmt
        for prompt in prompts:
            _geneval_metadata(prompt) if fmt == "geneval" else _check_compbench_prompt(prompt, samples)
        self.prompts_written = 0
        self.category_counters: dict[str, int] = {}

    def write(self, groups: Sequence[PromptImages]) -> None:
        for group in groups:
            if self.fmt == "geneval":
                self._write_geneval(group)
            else:
                self._write_compbench(group)
            self.prompts_written += 1

    def _write_geneval(self, group: PromptImages) -> None:
        folder = self.root / f"{self.prompts_written:0>5}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(_geneval_metadata(group.prompt)) + "\n")
        for sample, image in enumerate(group.images):
            _save_png(image, folder / "samples" / f"{sample:0>5}.png")

    def _write_compbench(self, group: PromptImages) -> None:
        _check_compbench_prompt(group.prompt, len(group.images))
        category = group.prompt.category
        samples = self.root / category / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        for image in group.images:
            index = self.category_counters.get(category, 0)
            _save_png(image, samples / f"{group.prompt.text}_{index:06d}.png")
            self.category_counters[category] = index + 1


def export_images(groups: Sequence[PromptImages], out_dir: str | Path, fmt: str) -> Path:
    """Write `groups` (all at once) under `out_dir/<fmt>/` and return that folder."""
    exporter = BenchmarkExporter(out_dir, fmt, [g.prompt for g in groups], len(groups[0].images) if groups else 0)
    for group in groups:
        if len(group.images) != len(groups[0].images):
            raise ExportError(f"prompt {group.prompt.text!r} has {len(group.images)} images, the first {len(groups[0].images)}")
    exporter.write(groups)
    return exporter.root


def _geneval_metadata(prompt: Prompt) -> dict:
    spec = prompt.spec or {}
    if "include" not in spec or "tag" not in spec:
        raise ExportError(
            f"prompt {prompt.text!r} has no GenEval metadata (tag, include): --export geneval needs prompts read "
            "from GenEval's evaluation_metadata.jsonl (prompts.format=geneval or auto)"
        )
    return spec


def _check_compbench_prompt(prompt: Prompt, samples: int) -> None:
    text = prompt.text
    if "_" in text or "/" in text or not text.strip():
        raise ExportError(
            f"prompt {text!r} cannot be a T2I-CompBench file name: its scorers split names on '_' and paths on '/'"
        )
    if samples != T2I_COMPBENCH_IMAGES_PER_PROMPT:
        raise ExportError(
            f"prompt {text!r} has {samples} images; T2I-CompBench's scorers assume "
            f"{T2I_COMPBENCH_IMAGES_PER_PROMPT} per prompt (evaluate with --samples {T2I_COMPBENCH_IMAGES_PER_PROMPT})"
        )


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG")
