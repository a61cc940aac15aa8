"""Prompt files as the benchmarks ship them, each read in its declared format and checked against it. Pure: no
torch, ray or deepspeed.

Formats (`prompts.format`, or `auto` from the suffix and the content):
- txt: one prompt per line, category "default";
- jsonl: objects with "prompt" (and optional "category", "spec"); a source's own reader of the fields
  (`make`, e.g. ShapesWorld's, which requires a valid spec and gives its own ids) may be passed in;
- t2i_compbench: T2I-CompBench++'s category files, one prompt per line, the category from the file name
  (`color_val.txt` → color, `3d_spatial_train.txt` → 3d_spatial);
- geneval: GenEval's `evaluation_metadata.jsonl` ({"tag", "include", "prompt", ...}; category = tag).
A path may name one file, a directory (its .txt / .jsonl files) or a glob (`dataset/*_train.txt`).

A file that is not what its format says is an error naming the file and line: a JSON line in a text format
(GenEval's metadata given where t2i_compbench is set would otherwise become prompts made of raw JSON), GenEval
metadata without the fields its scorer reads, a GenEval folder where its metadata file is meant (its
`object_names.txt` would otherwise become 80 one-word prompts). Every prompt keeps the line it came from
(`SourceLine`): the T2I-CompBench and GenEval exports number images by it.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayunify.types import Prompt

# T2I-CompBench++'s categories, as its file names spell them (auto-detection only: any name works with
# format=t2i_compbench).
T2I_COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "3d_spatial", "numeracy")
_SPLIT_SUFFIX = re.compile(r"_(train|val|test)$")
TEXT_FORMATS = ("txt", "t2i_compbench")


@dataclass(frozen=True)
class SourceLine:
    """Where a prompt was read: its file, its 0-based line index as Python's `readlines()` counts lines (what
    T2I-CompBench's 3-in-1 scorer indexes), and how many lines that file has."""

    path: str
    index: int
    lines: int


@dataclass
class FileReport:
    """What one prompt file gave: nothing is dropped or changed without a line here."""

    path: str
    format: str
    prompts: int
    duplicates: int = 0  # lines whose prompt was already read (this file or an earlier one): kept once
    byte_order_mark: bool = False
    categories: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    first_line: dict[str, int] = field(default_factory=dict, repr=False)  # prompt id -> line index
    in_eval: list[str] = field(default_factory=list)  # training prompts dropped as also being eval prompts

    def describe(self) -> str:
        cats = ", ".join(f"{c} {n}" for c, n in self.categories.items())
        extra = f", {self.duplicates} duplicate line(s) dropped" if self.duplicates else ""
        extra += ", byte-order mark stripped" if self.byte_order_mark else ""
        extra += f", {len(self.in_eval)} also in the eval files dropped from training" if self.in_eval else ""
        return f"{self.path} ({self.format}): {self.prompts} prompts{extra}; {cats}"


def read_prompt_source(
    path: str | Path, fmt: str = "auto", reports: list[FileReport] | None = None,
    origins: dict[str, SourceLine] | None = None,
) -> list[Prompt]:  # fmt: skip
    """Every prompt of a file, a directory of prompt files or a glob, in sorted file order, without repeats
    (each file's report, with what was dropped, is appended to `reports`; each prompt's line to `origins`)."""
    seen: set[str] = set()
    out: list[Prompt] = []
    read = [read_prompt_file_with_report(path_, fmt) for path_ in prompt_files(path, fmt)]
    _refuse_mixed_geneval(path, [report for _, report in read])
    for prompts, report in read:
        kept = [p for p in prompts if p.prompt_id not in seen]
        seen.update(p.prompt_id for p in kept)
        report.duplicates += len(prompts) - len(kept)
        report.categories = dict(Counter(p.category for p in kept))
        out.extend(kept)
        if origins is not None:
            origins.update({p.prompt_id: SourceLine(report.path, report.first_line[p.prompt_id], report.lines) for p in kept})
        if reports is not None:
            reports.append(report)
    return out


def prompt_files(path: str | Path, fmt: str = "auto") -> list[Path]:
    text = str(path)
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"prompt glob {text} matches no file")
        return files
    location = Path(text)
    if location.is_dir():
        if fmt == "geneval":
            raise ValueError(
                f"{location} is a folder; format geneval reads one file: give {location / 'evaluation_metadata.jsonl'}"
            )
        files = sorted(p for p in location.iterdir() if p.suffix in (".txt", ".jsonl") and p.is_file())
        if not files:
            raise FileNotFoundError(f"prompt directory {location} holds no .txt or .jsonl file")
        return files
    if not location.is_file():
        raise FileNotFoundError(f"prompt file {location} does not exist")
    return [location]


def _refuse_mixed_geneval(path: str | Path, reports: list[FileReport]) -> None:
    """GenEval's `prompts/` folder also holds `object_names.txt` (80 class names) and `generation_prompts.txt`:
    read together, those would become prompts of category "default" beside the real ones."""
    geneval = [r.path for r in reports if r.format == "geneval"]
    others = [Path(r.path).name for r in reports if r.format != "geneval"]
    if geneval and others:
        raise ValueError(
            f"{path} mixes GenEval metadata ({', '.join(geneval)}) with other prompt files ({', '.join(others)}), "
            f"which would become prompts of their own: give the metadata file alone"
        )


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
    if path.is_dir():
        raise ValueError(f"{path} is a folder where a prompt file is expected")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    lines, had_bom = _read_lines(path)
    kind = detect_format(path, lines) if fmt == "auto" else fmt
    readers: dict[str, Callable[[Path, int, str], Prompt]] = {
        "txt": lambda p, n, line: _text_prompt(p, n, line, "txt", "default"),
        "t2i_compbench": lambda p, n, line: _text_prompt(p, n, line, "t2i_compbench", t2i_compbench_category(p)),
        "jsonl": lambda p, n, line: _jsonl_prompt(p, n, line, make or file_prompt),
        "geneval": _geneval_prompt,
    }
    if kind not in readers:
        raise ValueError(f"prompts.format={kind!r}: choose one of auto, {', '.join(readers)}")
    read = [(number, readers[kind](path, number, line.strip())) for number, line in lines if line.strip()]
    if not read:
        raise ValueError(f"prompt file {path} holds no prompt")
    first_line: dict[str, int] = {}
    for number, prompt in read:
        first_line.setdefault(prompt.prompt_id, number - 1)
    prompts = unique([prompt for _, prompt in read])
    report = FileReport(str(path), kind, len(prompts), len(read) - len(prompts), had_bom, lines=len(lines))
    report.first_line = first_line
    return prompts, report


def _read_lines(path: Path) -> tuple[list[tuple[int, str]], bool]:
    """(line number, text) pairs and whether a UTF-8 byte-order mark was stripped; a line that is not UTF-8 is
    an error that names it. CRLF and a missing final newline read like LF (bytes.splitlines breaks where
    Python's universal newlines do, so line numbers are the scorers' `readlines()` positions)."""
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


def _text_prompt(path: Path, number: int, line: str, kind: str, category: str) -> Prompt:
    """A line of a text format; a JSON object or array there means the file is JSONL (or GenEval's metadata)
    under the wrong format, and its raw JSON would become the prompt."""
    if line.startswith(("{", "[")):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict | list):
            looks = "GenEval metadata" if isinstance(data, dict) and "tag" in data else "JSONL"
            raise ValueError(
                f"{path}:{number}: a JSON {type(data).__name__} in a {kind} prompt file: this is {looks}; "
                "set the format for this path to auto, jsonl or geneval"
            )
    return make_prompt(line, category)


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
    problem = _geneval_clauses_problem(data)
    if problem:
        raise ValueError(f"{path}:{number}: GenEval metadata {problem}")
    return make_prompt(data["prompt"].strip(), data["tag"].strip(), spec=data)  # the scorer's metadata, kept whole


def _geneval_clauses_problem(data: dict[str, Any]) -> str | None:
    """What GenEval's `evaluate_images.py` would fail on: `include` (and `exclude`, if present) must be lists
    of objects with a string 'class' and an integer 'count'."""
    if "include" not in data:
        return f"needs 'include', the objects its scorer looks for (keys here: {', '.join(data)})"
    for key in ("include", "exclude"):
        clauses = data.get(key, [])
        if not isinstance(clauses, list):
            return f"'{key}' must be a list of {{class, count}} objects, got {type(clauses).__name__}"
        for clause in clauses:
            if not (isinstance(clause, dict) and isinstance(clause.get("class"), str)
                    and isinstance(clause.get("count"), int) and not isinstance(clause.get("count"), bool)):  # fmt: skip
                return f"'{key}' holds {json.dumps(clause)}: expected an object with a string 'class' and an integer 'count'"
    return None
