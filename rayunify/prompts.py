"""Prompt sources: ShapesWorld's generator, prompt files, or a `datasets` dataset. Pure: no torch, ray or deepspeed.

File formats (`prompts.format`, or `auto` from the suffix and the content):
- txt: one prompt per line, category "default";
- jsonl: objects with "prompt" (and optional "category", "spec"); a source's own reader of the fields
  (`make`, e.g. ShapesWorld's, which requires a valid spec and gives its own ids) may be passed in;
- t2i_compbench: T2I-CompBench++'s category files, one prompt per line, the category from the file name
  (`color_val.txt` → color, `3d_spatial_train.txt` → 3d_spatial);
- geneval: GenEval's `evaluation_metadata.jsonl` ({"tag", "include", "prompt", ...}; category = tag).
`prompts.path` may name one file, a directory (its .txt / .jsonl files) or a glob (`dataset/*_train.txt`).

Every error names the file and line (or dataset row) and the reason. A prompt that appears twice is kept
once (the first category wins), so no prompt is sampled twice as often as the others; each file's report
says how many lines that dropped (and whether a byte-order mark was stripped). GenEval's metadata stays
whole in `Prompt.spec` (its scorer reads it back from the exported images' folders).
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rayunify import builtins
from rayunify.config import PromptsConfig
from rayunify.types import Prompt

# T2I-CompBench++'s categories, as its file names spell them (auto-detection only: any name works with
# format=t2i_compbench).
T2I_COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "3d_spatial", "numeracy")
HELD_OUT_SHARE = 5  # without an eval source, at most a fifth of the prompts is held out for evaluation
_SPLIT_SUFFIX = re.compile(r"_(train|val|test)$")


@dataclass
class FileReport:
    """What one prompt file gave: nothing is dropped or changed without a line here."""

    path: str
    format: str
    prompts: int
    duplicates: int = 0  # lines whose prompt was already read (this file or an earlier one): kept once
    byte_order_mark: bool = False
    categories: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        cats = ", ".join(f"{c} {n}" for c, n in self.categories.items())
        extra = f", {self.duplicates} duplicate line(s) dropped" if self.duplicates else ""
        extra += ", byte-order mark stripped" if self.byte_order_mark else ""
        return f"{self.path} ({self.format}): {self.prompts} prompts{extra}; {cats}"


@dataclass
class PromptSet:
    """Train and eval prompts with the report of how they were read."""

    train: list[Prompt]
    eval: list[Prompt]
    files: list[FileReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
    without one, a held-out split of the training prompts (removed from training). Eval prompts that are also
    training prompts are refused unless `prompts.allow_overlap`."""
    if cfg.source not in ("file", "hf_dataset"):
        source = builtins.prompt_source(cfg.source)
        train, evaluation = source.load(cfg.n_train, cfg.n_eval, cfg.seed, cfg.categories, cfg.eval_split)
        split = f", eval split {cfg.eval_split!r}" if cfg.eval_split else ""
        source_notes = [f"prompts: built-in source {cfg.source!r}{split}"]
        texts = len({p.text for p in evaluation})
        if texts < len(evaluation):  # a split's small categories repeat their few texts (own ids, own images)
            source_notes.append(
                f"eval: {len(evaluation)} prompts hold {texts} distinct texts: a text repeats under ids <id>~k"
            )
        return PromptSet(train, evaluation, notes=source_notes)
    files: list[FileReport] = []
    notes: list[str] = []
    if cfg.source == "file":
        assert cfg.path is not None
        pool = read_prompt_source(cfg.path, cfg.format, files)
        notes += _mixed_split_note(files)
    else:
        assert cfg.dataset is not None
        pool = read_hf_dataset(cfg.dataset, cfg.split, cfg.column, cfg.category_column)
    evaluation_pool = _eval_source(cfg, files)
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
    train = subset(pool, cfg.n_train, cfg.seed)
    notes += _overlap_note(train, evaluation, cfg.allow_overlap)
    if len(train) < len(pool):
        notes.append(f"train: a seeded sample of {len(train)} of {len(pool)} prompts (prompts.n_train)")
    return PromptSet(train, evaluation, files, notes)


def _eval_source(cfg: PromptsConfig, files: list[FileReport]) -> list[Prompt] | None:
    if cfg.source == "hf_dataset" and cfg.eval_split:
        return read_hf_dataset(cfg.dataset or "", cfg.eval_split, cfg.column, cfg.category_column)
    if cfg.eval_path:
        return read_prompt_source(cfg.eval_path, cfg.eval_format, files)
    return None


def _overlap_note(train: list[Prompt], evaluation: list[Prompt], allowed: bool) -> list[str]:
    train_ids = {p.prompt_id for p in train}
    shared = [p for p in evaluation if p.prompt_id in train_ids]
    if not shared:
        return []
    message = (
        f"{len(shared)} of {len(evaluation)} eval prompts are also training prompts (e.g. {shared[0].text!r})"
    )
    if not allowed:
        raise ValueError(f"{message}: evaluation would measure memorisation. Point prompts.eval_path at prompts "
                         "outside prompts.path, or set prompts.allow_overlap=true")  # fmt: skip
    return [f"eval: {message} (prompts.allow_overlap=true)"]


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


# ---------------------------------------------------------------------------------------------- files
def read_prompt_source(path: str | Path, fmt: str = "auto", reports: list[FileReport] | None = None) -> list[Prompt]:
    """Every prompt of a file, a directory of prompt files or a glob, in sorted file order, without repeats
    (each file's report, with what was dropped, is appended to `reports`)."""
    seen: set[str] = set()
    out: list[Prompt] = []
    for path_ in prompt_files(path):
        prompts, report = read_prompt_file_with_report(path_, fmt)
        kept = [p for p in prompts if p.prompt_id not in seen]
        seen.update(p.prompt_id for p in kept)
        report.duplicates += len(prompts) - len(kept)
        report.categories = dict(Counter(p.category for p in kept))
        out.extend(kept)
        if reports is not None:
            reports.append(report)
    return out


def prompt_files(path: str | Path) -> list[Path]:
    text = str(path)
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"prompt glob {text} matches no file")
        return files
    location = Path(text)
    if location.is_dir():
        files = sorted(p for p in location.iterdir() if p.suffix in (".txt", ".jsonl") and p.is_file())
        if not files:
            raise FileNotFoundError(f"prompt directory {location} holds no .txt or .jsonl file")
        return files
    if not location.is_file():
        raise FileNotFoundError(f"prompt file {location} does not exist")
    return [location]


# A JSONL object's (text, category, spec) -> Prompt, category and spec None where absent; a ValueError says
# what is wrong with them (the reader adds the file and line).
PromptMaker = Callable[[str, Any, Any], Prompt]


def read_prompt_file(path: str | Path, fmt: str = "auto", make: PromptMaker | None = None) -> list[Prompt]:
    """One prompt file in the given format (see the module docstring); `auto` picks it from the file.
    `make` builds each JSONL prompt (default: `file_prompt`)."""
    return read_prompt_file_with_report(path, fmt, make)[0]


def read_prompt_file_with_report(
    path: str | Path, fmt: str = "auto", make: PromptMaker | None = None
) -> tuple[list[Prompt], FileReport]:
    """The prompts of one file, repeats within it dropped, and what reading it did."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    lines, had_bom = _read_lines(path)
    kind = detect_format(path, lines) if fmt == "auto" else fmt
    readers: dict[str, Callable[[Path, int, str], Prompt]] = {
        "txt": lambda p, n, line: make_prompt(line),
        "t2i_compbench": lambda p, n, line: make_prompt(line, t2i_compbench_category(p)),
        "jsonl": lambda p, n, line: _jsonl_prompt(p, n, line, make or file_prompt),
        "geneval": _geneval_prompt,
    }
    if kind not in readers:
        raise ValueError(f"prompts.format={kind!r}: choose one of auto, {', '.join(readers)}")
    read = [readers[kind](path, number, line.strip()) for number, line in lines if line.strip()]
    if not read:
        raise ValueError(f"prompt file {path} holds no prompt")
    prompts = unique(read)
    return prompts, FileReport(str(path), kind, len(prompts), len(read) - len(prompts), had_bom)


def _read_lines(path: Path) -> tuple[list[tuple[int, str]], bool]:
    """(line number, text) pairs and whether a UTF-8 byte-order mark was stripped; a line that is not UTF-8 is
    an error that names it. CRLF and a missing final newline read like LF."""
    data = path.read_bytes()
    had_bom = data.startswith(codecs.BOM_UTF8)
    out = []
    for number, raw in enumerate(data.removeprefix(codecs.BOM_UTF8).splitlines(), 1):
        try:
            out.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}:{number}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return out, had_bom


def detect_format(path: Path, lines: list[tuple[int, str]]) -> str:
    if path.suffix == ".jsonl":
        first = next((line for _, line in lines if line.strip()), "")
        try:
            data = json.loads(first)
        except json.JSONDecodeError:
            return "jsonl"  # the reader reports the bad line
        return "geneval" if isinstance(data, dict) and "tag" in data and "include" in data else "jsonl"
    if path.suffix == ".txt":
        return "t2i_compbench" if t2i_compbench_category(path) in T2I_COMPBENCH_CATEGORIES else "txt"
    raise ValueError(f"cannot tell the format of prompt file {path} from its suffix: set prompts.format")


def t2i_compbench_category(path: Path) -> str:
    """`color_val.txt` → color, `3d_spatial_train.txt` → 3d_spatial, `complex.txt` → complex."""
    return _SPLIT_SUFFIX.sub("", path.stem)


def make_prompt(text: str, category: str = "default", spec: dict | None = None) -> Prompt:
    """A prompt from a file or a dataset; its id is a hash of the text (built-in sources have their own)."""
    prompt_id = hashlib.sha1(text.encode()).hexdigest()[:12]
    return Prompt(prompt_id=prompt_id, text=text, category=category, spec=spec)


def file_prompt(text: str, category: Any = None, spec: Any = None) -> Prompt:
    """A JSONL prompt file's fields as a prompt; a spec is kept as given, for the judge that reads it."""
    if spec is not None and not isinstance(spec, dict):
        raise ValueError(f"bad spec: expected a JSON object, got {type(spec).__name__}")
    return make_prompt(text, "default" if category is None else str(category), spec)


def unique(prompts: list[Prompt]) -> list[Prompt]:
    seen: set[str] = set()
    out = []
    for prompt in prompts:
        if prompt.prompt_id not in seen:
            seen.add(prompt.prompt_id)
            out.append(prompt)
    return out


def _json_object(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
    return data


def _jsonl_prompt(path: Path, number: int, line: str, make: PromptMaker) -> Prompt:
    data = _json_object(path, number, line)
    if not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
        raise ValueError(f"{path}:{number}: expected an object with a non-empty string field 'prompt'")
    try:
        return make(data["prompt"].strip(), data.get("category"), data.get("spec"))
    except ValueError as err:
        raise ValueError(f"{path}:{number}: {err}") from None


def _geneval_prompt(path: Path, number: int, line: str) -> Prompt:
    data = _json_object(path, number, line)
    for key in ("tag", "prompt"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(
                f"{path}:{number}: GenEval metadata needs a non-empty string '{key}' (keys here: {', '.join(data)})"
            )
    return make_prompt(data["prompt"].strip(), data["tag"].strip(), spec=data)  # the scorer's metadata, kept whole


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
