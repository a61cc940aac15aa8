"""Paired bootstrap intervals over prompts for before/after and recipe-vs-recipe comparisons. Pure: numpy only.

An evaluation writes one row per image (`eval_<tag>_records.jsonl`: prompt id, category, the model's own
verdict and score, the reference verdict). The images of one prompt are correlated, so the unit of
resampling is the prompt: every resample draws prompts with replacement within each category (a category
keeps its size, so the category mean stays defined) and applies the *same* draw to every arm being compared
(start and end of a run, or two recipes), which makes the interval of a difference a paired one. Several
seeds of one arm pool their images per prompt: a prompt drawn brings its images from every seed. A prompt
repeated under ids of its own (`<id>~k`: a small category filled to its size with the same texts) is one
prompt here, since its repeats are the same text.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayunify.metrics import VerdictRecord, counts, metric_arrays
from rayunify.types import Verdict

REPEAT_MARK = "~"  # <prompt id>~k: the k-th repeat of a prompt's text


def write_eval_records(items: Iterable[Any], path: str | Path) -> Path:
    """One JSON line per judged image (items carry .prompt, .own and .reference as evaluation makes them)."""
    rows = [
        (
            i.prompt.prompt_id,
            i.prompt.category,
            int(i.own.verdict),
            float(i.own.score),
            int(i.reference.verdict),
        )
        for i in items
    ]
    return _write_records(rows, path)


def write_judge_set_records(
    texts: Sequence[str],
    categories: Sequence[str],
    labels: Sequence[bool],
    judgements: Sequence[Any],
    path: str | Path,
) -> Path:
    """The judge on the fixed judge set, in the same rows: the prompt is the text judged against, the
    reference verdict is the image's label. Read back, `balanced_accuracy` is the judge's on the set."""
    rows = [
        (text, category, int(j.verdict), float(j.score), int(Verdict.ACCEPT if label else Verdict.REJECT))
        for text, category, label, j in zip(texts, categories, labels, judgements, strict=True)
    ]
    return _write_records(rows, path)


def _write_records(rows: Iterable[tuple[str, str, int, float, int]], path: str | Path) -> Path:
    keys = ("prompt_id", "category", "own", "score", "reference")
    Path(path).write_text("".join(json.dumps(dict(zip(keys, row, strict=True))) + "\n" for row in rows))
    return Path(path)


@dataclass(frozen=True)
class PromptTable:
    """Per-prompt count rows (metrics.COUNT_COLUMNS) of one arm, and each prompt's category."""

    rows: dict[str, np.ndarray]
    categories: dict[str, str]


def read_eval_records(paths: Sequence[str | Path]) -> PromptTable:
    """The records of one arm, pooled over several files (one per seed) by prompt id."""
    by_prompt: dict[str, list[VerdictRecord]] = {}
    categories: dict[str, str] = {}
    for path in paths:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                record = VerdictRecord(row["category"], Verdict(row["own"]), row["score"], Verdict(row["reference"]))
            except (KeyError, ValueError) as error:
                raise ValueError(f"{path}:{number}: not an eval record ({error})") from error
            prompt = row["prompt_id"].split(REPEAT_MARK)[0]
            by_prompt.setdefault(prompt, []).append(record)
            categories[prompt] = row["category"]
    return PromptTable({pid: counts(rs) for pid, rs in by_prompt.items()}, categories)


def bootstrap_arms(
    arms: Mapping[str, PromptTable],
    metric: str,
    group: str = "overall",
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Resampled values of `metric` (pooled over images, or the mean over categories) for every arm, all
    from the same draws of prompts. Arms must cover the same prompts."""
    names = list(arms)
    prompts = sorted(arms[names[0]].rows)
    for name in names[1:]:
        if sorted(arms[name].rows) != prompts:
            raise ValueError(f"arm {name!r} was evaluated on other prompts than {names[0]!r}")
    categories = arms[names[0]].categories
    rng = np.random.default_rng(seed)
    weights = {  # per category: (resamples, prompts of that category), shared by every arm
        category: rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=resamples)
        for category, ids in _by_category(prompts, categories).items()
    }
    ids_of = _by_category(prompts, categories)
    out = {}
    for name in names:
        tables = {c: weights[c] @ np.stack([arms[name].rows[p] for p in ids]) for c, ids in ids_of.items()}
        out[name] = _metric_of(tables, metric, group)
    return out


def _by_category(prompts: Sequence[str], categories: Mapping[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for pid in prompts:
        grouped.setdefault(categories[pid], []).append(pid)
    return dict(sorted(grouped.items()))


def _metric_of(tables: Mapping[str, np.ndarray], metric: str, group: str) -> np.ndarray:
    if group == "overall":
        return _metric(sum(tables.values()), metric)
    if group == "category_mean":
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a category no resample defines the metric for
            return np.nanmean(np.stack([_metric(t, metric) for t in tables.values()]), axis=0)
    return _metric(tables[group], metric)


def _metric(table: np.ndarray, metric: str) -> np.ndarray:
    """metrics.metric_arrays' figures, and the judge's balanced accuracy (mean of its true-positive and
    true-negative rates: on a set balanced by label, chance is 0.5 whatever the judge's bias). Derived here,
    not in metric_arrays, because metric_arrays' keys are what every evaluation logs: only the judge set,
    which is balanced by construction, has a use for it."""
    arrays = metric_arrays(table)
    if metric == "balanced_accuracy":
        return 1.0 - (arrays["judge_fpr"] + arrays["judge_fnr"]) / 2
    return arrays[metric]


def point(table: PromptTable, metric: str, group: str = "overall") -> float:
    """The metric on the arm's own images (no resampling)."""
    tables = {}
    for pid, row in table.rows.items():
        category = table.categories[pid]
        tables[category] = tables.get(category, 0) + row[None, :]
    return float(_metric_of(tables, metric, group)[0])


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of resampled values, NaNs (resamples where the metric is undefined) left out."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))
