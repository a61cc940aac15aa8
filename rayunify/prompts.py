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
once (the first category wins), so no prompt is sampled twice as often as the others.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rayunify import builtins
from rayunify.config import PromptsConfig
from rayunify.types import Prompt

# T2I-CompBench++'s categories, as its file names spell them (auto-detection only: any name works with
# format=t2i_compbench).
T2I_COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "3d_spatial", "numeracy")
_SPLIT_SUFFIX = re.compile(r"_(train|val|test)$")


def load_prompts(cfg: PromptsConfig) -> tuple[list[Prompt], list[Prompt]]:
    """(train, eval) prompts as the config says. Without an eval source, eval is the first n_eval train prompts."""
    if cfg.source not in ("file", "hf_dataset"):
        return builtins.prompt_source(cfg.source).load(cfg.n_train, cfg.n_eval, cfg.seed, cfg.categories)
    if cfg.source == "file":
        assert cfg.path is not None
        train = read_prompt_source(cfg.path, cfg.format)
    else:
        assert cfg.dataset is not None
        train = read_hf_dataset(cfg.dataset, cfg.split, cfg.column, cfg.category_column)
    if cfg.source == "hf_dataset" and cfg.eval_split:
        evaluation = read_hf_dataset(cfg.dataset or "", cfg.eval_split, cfg.column, cfg.category_column)
    elif cfg.eval_path:
        evaluation = read_prompt_source(cfg.eval_path, cfg.format)
    else:
        evaluation = train
    return subset(train, cfg.n_train, cfg.seed), evaluation[: cfg.n_eval]


def subset(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """At most n prompts: a seeded sample in source order. A head cut would keep only the first categories of
    a source that lists them one after another (T2I-CompBench++, GenEval)."""
    if len(prompts) <= n:
        return prompts
    keep = np.sort(np.random.default_rng(seed).choice(len(prompts), size=n, replace=False))
    return [prompts[i] for i in keep]


# ---------------------------------------------------------------------------------------------- files
def read_prompt_source(path: str | Path, fmt: str = "auto") -> list[Prompt]:
    """Every prompt of a file, a directory of prompt files or a glob, in sorted file order, without repeats."""
    files = prompt_files(path)
    return unique([p for f in files for p in read_prompt_file(f, fmt)])


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    lines = _read_lines(path)
    kind = detect_format(path, lines) if fmt == "auto" else fmt
    readers: dict[str, Callable[[Path, int, str], Prompt]] = {
        "txt": lambda p, n, line: make_prompt(line),
        "t2i_compbench": lambda p, n, line: make_prompt(line, t2i_compbench_category(p)),
        "jsonl": lambda p, n, line: _jsonl_prompt(p, n, line, make or file_prompt),
        "geneval": _geneval_prompt,
    }
    if kind not in readers:
        raise ValueError(f"prompts.format={kind!r}: choose one of auto, {', '.join(readers)}")
    prompts = [readers[kind](path, number, line.strip()) for number, line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompt")
    return prompts


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) pairs; a line that is not UTF-8 is an error that names it."""
    out = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            out.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}:{number}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return out


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
    return make_prompt(data["prompt"].strip(), data["tag"].strip())


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
