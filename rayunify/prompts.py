"""Prompt sources: ShapesWorld's generator, prompt files, or a `datasets` dataset. Pure: no torch, ray or deepspeed.

Files are read by `rayunify.prompt_files` (formats, and what each is checked against). Every error names the
file and line (or dataset row) and the reason. A prompt that appears twice is kept once (the first category
wins), so no prompt is sampled twice as often as the others; each file's report says how many lines that
dropped (and whether a byte-order mark was stripped). A training prompt that is also an eval prompt is
dropped from training and reported (`prompts.overlap`): the official T2I-CompBench files share two spatial
prompts between train and val, and users cannot edit official files. GenEval's metadata stays whole in
`Prompt.spec` (its scorer reads it back from the exported images' folders).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rayunify import builtins
from rayunify.config import PromptsConfig
from rayunify.prompt_files import (  # noqa: F401  (re-exported: the readers' public names)
    T2I_COMPBENCH_CATEGORIES,
    FileReport,
    PromptMaker,
    SourceLine,
    detect_format,
    file_prompt,
    make_prompt,
    prompt_files,
    read_prompt_file,
    read_prompt_file_with_report,
    read_prompt_source,
    t2i_compbench_category,
    unique,
)
from rayunify.types import Prompt

HELD_OUT_SHARE = 5  # without an eval source, at most a fifth of the prompts is held out for evaluation
OVERLAP_TEXTS_SHOWN = 20  # a report lists at most this many dropped texts (then a count)
_SPLIT_SUFFIX = re.compile(r"_(train|val|test)$")


@dataclass
class PromptSet:
    """Train and eval prompts with the report of how they were read."""

    train: list[Prompt]
    eval: list[Prompt]
    files: list[FileReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Each prompt's file and line where it came from a file (an eval prompt's eval file first): the benchmark
    # exports number images by it.
    origins: dict[str, SourceLine] = field(default_factory=dict)

    def describe(self) -> list[str]:
        counts = lambda ps: ", ".join(f"{c} {n}" for c, n in Counter(p.category for p in ps).items())  # noqa: E731
        return [f"prompt file {f.describe()}" for f in self.files] + self.notes + [
            f"train: {len(self.train)} prompts ({counts(self.train)})",
            f"eval: {len(self.eval)} prompts ({counts(self.eval)})",
        ]


def load_prompts(cfg: PromptsConfig) -> tuple[list[Prompt], list[Prompt]]:
    """(train, eval) prompts as the config says (see `load_prompt_set`)."""
    prompt_set = load_prompt_set(cfg)
    return prompt_set.train, prompt_set.eval


def load_prompt_set(cfg: PromptsConfig) -> PromptSet:
    """Train and eval prompts with a report. Eval is a seeded, category-stratified sample of the eval source;
    without one, a held-out split of the training prompts (removed from training). Training prompts that are
    also in the eval source are dropped from training and reported (`prompts.overlap`)."""
    if cfg.source not in ("file", "hf_dataset"):
        return _builtin_prompt_set(cfg)
    files: list[FileReport] = []
    notes: list[str] = []
    train_origins: dict[str, SourceLine] = {}
    eval_origins: dict[str, SourceLine] = {}
    if cfg.source == "file":
        assert cfg.path is not None
        pool = read_prompt_source(cfg.path, cfg.format, files, train_origins)
        notes += _mixed_split_note(files)
    else:
        assert cfg.dataset is not None
        pool = read_hf_dataset(cfg.dataset, cfg.split, cfg.column, cfg.category_column)
    train_files = list(files)
    evaluation_pool = _eval_source(cfg, files, eval_origins)
    if evaluation_pool is None:
        evaluation = stratified_sample(pool, min(cfg.n_eval, len(pool) // HELD_OUT_SHARE), cfg.seed)
        if not evaluation:
            raise ValueError(f"{len(pool)} prompts are too few to hold out an eval split: give prompts.eval_path")
        held_out = {p.prompt_id for p in evaluation}
        pool = [p for p in pool if p.prompt_id not in held_out]
        notes.append(
            f"eval: no eval source given, so {len(evaluation)} of {len(pool) + len(evaluation)} prompts were held "
            f"out of training (seeded, by category; at most prompts.n_eval={cfg.n_eval} and 1/{HELD_OUT_SHARE})"
        )
    else:
        evaluation = stratified_sample(evaluation_pool, cfg.n_eval, cfg.seed)
        if cfg.overlap == "drop":
            pool, dropped = _drop_eval_prompts(pool, evaluation_pool, train_files, train_origins)
            notes += dropped
    train = subset(pool, cfg.n_train, cfg.seed)
    notes += _overlap_note(train, evaluation, cfg.overlap)
    if len(train) < len(pool):
        notes.append(f"train: a seeded sample of {len(train)} of {len(pool)} prompts (prompts.n_train)")
    return PromptSet(train, evaluation, files, notes, {**train_origins, **eval_origins})


def _builtin_prompt_set(cfg: PromptsConfig) -> PromptSet:
    source = builtins.prompt_source(cfg.source)
    train, evaluation = source.load(cfg.n_train, cfg.n_eval, cfg.seed, cfg.categories, cfg.eval_split)
    split = f", eval split {cfg.eval_split!r}" if cfg.eval_split else ""
    source_notes = [f"prompts: built-in source {cfg.source!r}{split}"]
    texts = len({p.text for p in evaluation})
    if texts < len(evaluation):  # a split's small categories repeat their few texts (own ids, own images)
        source_notes.append(f"eval: {len(evaluation)} prompts hold {texts} distinct texts: a text repeats under ids <id>~k")
    return PromptSet(train, evaluation, notes=source_notes)


def _eval_source(cfg: PromptsConfig, files: list[FileReport], origins: dict[str, SourceLine]) -> list[Prompt] | None:
    if cfg.source == "hf_dataset" and cfg.eval_split:
        return read_hf_dataset(cfg.dataset or "", cfg.eval_split, cfg.column, cfg.category_column)
    if cfg.eval_path:
        return read_prompt_source(cfg.eval_path, cfg.eval_format, files, origins)
    return None


def _drop_eval_prompts(
    pool: list[Prompt], evaluation_pool: list[Prompt], train_files: list[FileReport], origins: dict[str, SourceLine]
) -> tuple[list[Prompt], list[str]]:
    """The training pool without the prompts of the eval source (all of it, not just the sampled eval set, so
    which prompts train does not depend on prompts.n_eval or the seed); each dropped text goes on its
    training file's report and in one note."""
    eval_ids = {p.prompt_id for p in evaluation_pool}
    dropped = [p for p in pool if p.prompt_id in eval_ids]
    if not dropped:
        return pool, []
    reports = {f.path: f for f in train_files}
    for prompt in dropped:
        origin = origins.get(prompt.prompt_id)
        if origin is not None:
            reports[origin.path].in_eval.append(prompt.text)
    shown = ", ".join(repr(p.text) for p in dropped[:OVERLAP_TEXTS_SHOWN])
    more = f" and {len(dropped) - OVERLAP_TEXTS_SHOWN} more" if len(dropped) > OVERLAP_TEXTS_SHOWN else ""
    note = (f"train: dropped {len(dropped)} of {len(pool)} prompts that are also eval prompts (prompts.overlap=drop; "
            f"refuse or keep are the alternatives): {shown}{more}")  # fmt: skip
    return [p for p in pool if p.prompt_id not in eval_ids], [note]


def _overlap_note(train: list[Prompt], evaluation: list[Prompt], overlap: str) -> list[str]:
    train_ids = {p.prompt_id for p in train}
    shared = [p for p in evaluation if p.prompt_id in train_ids]
    if not shared:
        return []
    message = (
        f"{len(shared)} of {len(evaluation)} eval prompts are also training prompts (e.g. {shared[0].text!r})"
    )
    if overlap == "refuse":
        raise ValueError(f"{message}: evaluation would measure memorisation. Point prompts.eval_path at prompts "
                         "outside prompts.path, or set prompts.overlap=drop (or keep)")  # fmt: skip
    return [f"eval: {message} (prompts.overlap={overlap})"]


def _mixed_split_note(files: list[FileReport]) -> list[str]:
    splits = {m.group(1) for f in files if (m := _SPLIT_SUFFIX.search(Path(f.path).stem))}
    if len(splits) > 1:
        return [f"prompts.path reads files of several splits ({', '.join(sorted(splits))}): they are all training prompts"]
    return []


def subset(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """At most n prompts: a seeded sample in source order. A head cut would keep only the first categories of
    a source that lists them one after another (T2I-CompBench++, GenEval)."""
    if len(prompts) <= n:
        return prompts
    keep = np.sort(np.random.default_rng(seed).choice(len(prompts), size=n, replace=False))
    return [prompts[i] for i in keep]


def stratified_sample(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """At most n prompts drawn round-robin over categories (in order of first appearance), each category's in a
    seeded order: every prefix of the result is balanced across categories, so an evaluation that uses its
    first k prompts still sees every category."""
    by_category: dict[str, list[Prompt]] = {}
    for prompt in prompts:
        by_category.setdefault(prompt.category, []).append(prompt)
    rng = np.random.default_rng(seed)
    queues = [[group[i] for i in rng.permutation(len(group))] for group in by_category.values()]
    out: list[Prompt] = []
    for rank in range(max(map(len, queues), default=0)):
        out.extend(queue[rank] for queue in queues if rank < len(queue))
    return out[:n]


def curriculum_levels(prompts: Sequence[Prompt], configured: Sequence[str] | None) -> list[str]:
    """The adaptive curriculum's levels, easiest first: `curriculum.levels`, else the categories in the order
    they first appear. A configured list must name every training category."""
    present = list(dict.fromkeys(p.category for p in prompts))
    if configured is None:
        return present
    missing = [c for c in present if c not in configured]
    if missing:
        raise ValueError(f"curriculum.levels {list(configured)} does not list the training categories {missing}")
    return [c for c in configured if c in present]


# ---------------------------------------------------------------------------------------------- datasets
def read_hf_dataset(name: str, split: str, column: str = "prompt", category_column: str | None = None) -> list[Prompt]:
    """Prompts from a `datasets` dataset: a hub name, a local data directory, or a `save_to_disk` directory."""
    data = _open_dataset(name, split)
    where = f"dataset {name!r} split {split!r}"
    for wanted in (column, category_column):
        if wanted is not None and wanted not in data.column_names:
            raise ValueError(f"{where} has no column {wanted!r} (columns: {', '.join(data.column_names)})")
    texts = data[column]
    categories = data[category_column] if category_column else ["default"] * len(texts)
    prompts = []
    for row, (text, category) in enumerate(zip(texts, categories, strict=True)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where} row {row}: column {column!r} is not a non-empty string (got {text!r})")
        prompts.append(make_prompt(text.strip(), str(category)))
    if not prompts:
        raise ValueError(f"{where} holds no prompt")
    return unique(prompts)


def _open_dataset(name: str, split: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "prompts.source=hf_dataset needs the `datasets` package, which rayunify does not install: "
            "pip install datasets"
        ) from None
    local = Path(name)
    if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
        loaded = datasets.load_from_disk(str(local))  # a save_to_disk directory
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(loaded)})")
            return loaded[split]
        return loaded
    try:
        return datasets.load_dataset(name, split=split)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"cannot load dataset {name!r} split {split!r}: {err}") from None
