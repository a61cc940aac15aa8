"""Generated images in the folder layouts the official benchmark scorers read, so a checkpoint's GenEval and
T2I-CompBench(++) numbers come from those benchmarks' own tools, not from ours (docs/official-files.md says
how each scorer walks them).

GenEval (`evaluation/evaluate_images.py IMAGE_FOLDER`): one folder per prompt, named by digits, holding the
prompt's metadata line as `metadata.jsonl` (the scorer reads the object from there, never from the prompt
file) and the images as `samples/00000.png, 00001.png, ...`. A prompt's folder is its line's index in the
metadata file, as GenEval's own generation script numbers them.

T2I-CompBench(++): one folder per category holding `samples/<prompt verbatim>_<index>.png`. The scorers recover
the prompt with `name.split('_')[0]` and the index from the `_` field after it, and list results in index
order; the complex category's 3-in-1 scorer then pairs line i of `complex_val.txt` with results i*10 ..
i*10+9. So the index is the prompt's line index in its category file × 10 + the sample (whatever order the
evaluation drew prompts in), a prompt may not contain `_` or `/`, `samples/` holds images only, every prompt
has exactly 10 images, and a complex export must hold every line of its file. Images are PNG: both
benchmarks skip or mis-parse other formats. An export never goes into a folder holding an earlier one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayunify.prompt_files import SourceLine
from rayunify.types import Prompt

T2I_COMPBENCH_IMAGES_PER_PROMPT = 10
THREE_IN_ONE_CATEGORY = "complex"
FORMATS = ("geneval", "t2i_compbench")


class ExportError(ValueError):
    """The images cannot be written in a layout the benchmark's scorer would read correctly."""


@dataclass(frozen=True)
class PromptImages:
    """One prompt's generated images, in sample order."""

    prompt: Prompt
    images: Sequence[np.ndarray]  # (H, W, 3) uint8 each


class BenchmarkExporter:
    """Writes images as they are generated (chunk by chunk, in any prompt order) into `out_dir/<fmt>/`. Every
    prompt, the numbering and the complex category's pairing are checked when the exporter is made, before any
    image exists, so an export never fails half-way. `origins`: each prompt's file and line (None: the
    prompts are numbered in the order given, as when they come from a dataset)."""

    def __init__(
        self, out_dir: str | Path, fmt: str, prompts: Sequence[Prompt], samples: int,
        origins: Mapping[str, SourceLine] | None = None,
    ):  # fmt: skip
        if fmt not in FORMATS:
            raise ExportError(f"--export {fmt!r}: choose one of {', '.join(FORMATS)}")
        self.fmt, self.root, self.samples = fmt, Path(out_dir) / fmt, samples
        if self.root.exists():
            raise ExportError(f"{self.root} holds an earlier export: its scorers would read both; export into a new folder")
        for prompt in prompts:
            _geneval_metadata(prompt) if fmt == "geneval" else _check_compbench_prompt(prompt, samples)
        scope = (lambda p: "") if fmt == "geneval" else (lambda p: p.category)  # noqa: E731
        self.positions = numbering(prompts, origins, scope)
        if fmt == "t2i_compbench":
            check_three_in_one(prompts, origins)
        self.prompts_written = 0

    def describe(self) -> str:
        if self.fmt == "geneval":
            return f"export: geneval into {self.root}: one folder per prompt, numbered by its metadata line"
        return (f"export: t2i_compbench into {self.root}/<category>/samples: <prompt>_<line × {self.samples} + sample>.png, "
                "each category in its file's line order")  # fmt: skip

    def write(self, groups: Sequence[PromptImages]) -> None:
        for group in groups:
            if self.fmt == "geneval":
                self._write_geneval(group)
            else:
                self._write_compbench(group)
            self.prompts_written += 1

    def _write_geneval(self, group: PromptImages) -> None:
        folder = self.root / f"{self.positions[group.prompt.prompt_id]:0>5}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(_geneval_metadata(group.prompt)) + "\n")
        for sample, image in enumerate(group.images):
            _save_png(image, folder / "samples" / f"{sample:0>5}.png")

    def _write_compbench(self, group: PromptImages) -> None:
        _check_compbench_prompt(group.prompt, len(group.images))
        samples = self.root / group.prompt.category / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        first = self.positions[group.prompt.prompt_id] * T2I_COMPBENCH_IMAGES_PER_PROMPT
        for sample, image in enumerate(group.images):
            _save_png(image, samples / f"{group.prompt.text}_{first + sample:06d}.png")


def numbering(
    prompts: Sequence[Prompt], origins: Mapping[str, SourceLine] | None, scope: Callable[[Prompt], str]
) -> dict[str, int]:
    """Each prompt's position within its scope (GenEval: the whole export; T2I-CompBench: its category): its
    line index in its source file, or without origins its rank in the order given. A scope read from two
    files would number two prompts alike, so it is refused."""
    if not origins:
        ranks: dict[str, int] = {}
        positions = {}
        for prompt in prompts:
            positions[prompt.prompt_id] = ranks.get(scope(prompt), 0)
            ranks[scope(prompt)] = positions[prompt.prompt_id] + 1
        return positions
    files: dict[str, set[str]] = {}
    for prompt in prompts:
        if prompt.prompt_id not in origins:
            raise ExportError(f"prompt {prompt.text!r} has no source line: export prompts read from files only")
        files.setdefault(scope(prompt), set()).add(origins[prompt.prompt_id].path)
    for name, paths in files.items():
        if len(paths) > 1:
            what = f"category {name!r}" if name else "the export"
            raise ExportError(f"{what} comes from {len(paths)} files ({', '.join(sorted(paths))}): the scorers number "
                              "its images by one file's lines; evaluate one file per category")  # fmt: skip
    return {p.prompt_id: origins[p.prompt_id].index for p in prompts}


def check_three_in_one(prompts: Sequence[Prompt], origins: Mapping[str, SourceLine] | None) -> None:
    """T2I-CompBench's 3-in-1 scorer (`3_in_1_eval/3_in_1.py`) pairs line i of `complex_val.txt` with the
    results i*10 .. i*10+9 of every line: an export without all of the file's lines misaligns or crashes it.
    A subset is refused rather than written with a matching subset file: its score would not be the
    benchmark's complex score, yet would read like one."""
    complex_prompts = [p for p in prompts if p.category == THREE_IN_ONE_CATEGORY]
    if not complex_prompts:
        return
    if not origins:
        raise ExportError("category 'complex' has no source file: 3-in-1 pairs images with complex_val.txt's lines, "
                          "so export complex prompts read from that file")  # fmt: skip
    source = origins[complex_prompts[0].prompt_id]
    missing = sorted(set(range(source.lines)) - {origins[p.prompt_id].index for p in complex_prompts})
    if missing:
        lines = ", ".join(str(i + 1) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ExportError(
            f"category 'complex': T2I-CompBench's 3-in-1 scorer pairs line i of {source.path} with images "
            f"i*10..i*10+9, so it needs all {source.lines} lines, and this export lacks {len(missing)} (line {lines}): "
            "evaluate every complex prompt (prompts.n_eval at least the eval prompt count, no --max-prompts, no "
            "repeated or blank line in the file) or leave complex_val.txt out of prompts.eval_path"
        )


def export_images(
    groups: Sequence[PromptImages], out_dir: str | Path, fmt: str, origins: Mapping[str, SourceLine] | None = None
) -> Path:
    """Write `groups` (all at once) under `out_dir/<fmt>/` and return that folder."""
    prompts = [g.prompt for g in groups]
    exporter = BenchmarkExporter(out_dir, fmt, prompts, len(groups[0].images) if groups else 0, origins)
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
