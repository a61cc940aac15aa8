"""The per-image records of one arm (a recipe at the start or the end, one file per training seed) and the
resampling of its texts and images that rayunify.intervals builds its intervals from. Pure: numpy only."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from rayunify.metrics import COUNT_COLUMNS as _COLUMNS
from rayunify.metrics import VerdictRecord, count_rows, metric_arrays
from rayunify.types import Verdict

REPEAT_MARK = "~"  # <prompt id>~k: the k-th repeat of a prompt's text

# metrics.metric_arrays' definitions of the figures the report draws: (numerator columns, denominator column)
_RATIOS = {
    "gen_accuracy": (("ref_accepts",), "ref_valid"),
    "nonunified": (("own_rejects",), "own_valid"),
    "judge_accuracy": (("both_accept", "both_reject"), "both_valid"),
}


@dataclass(frozen=True)
class ArmRecords:
    """The per-image count rows (metrics.COUNT_COLUMNS) of one arm, with each image's seed and text."""

    rows: np.ndarray  # (images, COUNT_COLUMNS)
    seed: np.ndarray  # (images,) index of the seed (the file) the image came from
    text: np.ndarray  # (images,) index into texts
    texts: tuple[str, ...]  # ordered by (category, text)
    categories: tuple[str, ...]  # of each text
    seeds: int

    def texts_of(self, category: str) -> list[str]:
        return [t for t, c in zip(self.texts, self.categories, strict=True) if c == category]

    @cached_property
    def cells(self) -> _Cells:
        return _cells(self)


def read_eval_records(paths: Sequence[str | Path]) -> ArmRecords:
    """The records of one arm, one file per training seed."""
    records: list[tuple[int, str, str, VerdictRecord]] = []
    for seed, path in enumerate(paths):
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                record = VerdictRecord(
                    row["category"], Verdict(row["own"]), row["score"], Verdict(row["reference"])
                )
                text = row["prompt_id"].split(REPEAT_MARK)[0]
            except (KeyError, ValueError, AttributeError) as error:
                raise ValueError(f"{path}:{number}: not an eval record ({error})") from error
            records.append((seed, text, row["category"], record))
    return arm_records(records, len(paths))


def arm_records(records: Sequence[tuple[int, str, str, VerdictRecord]], seeds: int) -> ArmRecords:
    """(seed index, text, category, record) per image → ArmRecords."""
    category_of: dict[str, str] = {}
    for _, text, category, _ in records:
        if category_of.setdefault(text, category) != category:
            raise ValueError(f"text {text!r} is in two categories ({category_of[text]!r}, {category!r})")
    texts = tuple(sorted(category_of, key=lambda t: (category_of[t], t)))
    index = {t: i for i, t in enumerate(texts)}
    rows = count_rows(
        np.array([int(r.own) for *_, r in records], dtype=np.int64),
        np.array([r.own_score for *_, r in records], dtype=np.float64),
        np.array([int(r.reference) for *_, r in records], dtype=np.int64),
    )
    return ArmRecords(
        rows,
        np.array([s for s, *_ in records], dtype=np.int64),
        np.array([index[t] for _, t, *_ in records], dtype=np.int64),
        texts,
        tuple(category_of[t] for t in texts),
        seeds,
    )


def point(arm: ArmRecords, metric: str, group: str = "overall") -> float:
    """The metric on the arm's own images, every seed pooled (no resampling)."""
    cells = arm.cells
    return float(
        _metric_of(category_tables(cells, np.ones((1, len(cells.seed))), cells.number[None]), metric, group)[
            0
        ]
    )


def seed_points(arm: ArmRecords, metric: str, group: str = "overall") -> list[float]:
    """The metric of each seed alone."""
    cells = arm.cells
    alone = [(cells.seed == s)[None, :].astype(np.float64) for s in range(arm.seeds)]
    return [float(_metric_of(category_tables(cells, w, cells.number[None]), metric, group)[0]) for w in alone]


def _multinomial(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)


def text_weights(arm: ArmRecords, resamples: int, rng: np.random.Generator) -> np.ndarray:
    weights = np.zeros((resamples, len(arm.texts)))
    categories = np.array(arm.categories)
    for category in sorted(set(arm.categories)):
        columns = np.flatnonzero(categories == category)
        weights[:, columns] = _multinomial(len(columns), resamples, rng)
    return weights


@dataclass(frozen=True)
class _Cells:
    """An arm's images grouped by (text, seed) cell, and within a cell by verdict pattern (the count row
    without the score): resampling a cell's images is then one multinomial draw over its patterns. Cells are
    ordered by text, so each category's cells are one slice."""

    seed: np.ndarray  # (cells,)
    text: np.ndarray  # (cells,)
    number: np.ndarray  # (cells, patterns): the cell's images with each pattern
    means: np.ndarray  # (cells, patterns, COUNT_COLUMNS): their mean count row (scores differ within one)
    slices: dict[str, slice]  # each category's cells


def _cells(arm: ArmRecords) -> _Cells:
    binary = np.delete(arm.rows, _COLUMNS.index("own_score_sum"), axis=1)  # 0/1 columns: one bit each
    _, pattern = np.unique(binary @ (2.0 ** np.arange(binary.shape[1])), return_inverse=True)
    keys, cell = np.unique(arm.text * max(arm.seeds, 1) + arm.seed, return_inverse=True)
    sums = np.zeros((len(keys), pattern.max(initial=0) + 1, arm.rows.shape[1]))
    np.add.at(sums, (cell, pattern), arm.rows)
    number = np.zeros(sums.shape[:2])
    np.add.at(number, (cell, pattern), 1.0)
    text = keys // max(arm.seeds, 1)
    category = np.array(arm.categories)[text]
    slices = {}
    for c in sorted(set(arm.categories)):
        where = np.flatnonzero(category == c)
        slices[c] = slice(int(where[0]), int(where[-1]) + 1)
    return _Cells(keys % max(arm.seeds, 1), text, number, sums / np.maximum(number, 1.0)[..., None], slices)


def image_draws(cells: _Cells, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, cells, patterns): how many images of each pattern each cell draws when it draws as many of
    its own images as it has, with replacement (an image's score is its pattern's mean score in the cell)."""
    # a multinomial as a chain of binomials (each pattern out of what the ones before it left): numpy's
    # multinomial with a row of probabilities per cell is two orders of magnitude slower
    left = np.broadcast_to(cells.number.sum(axis=1), (resamples, len(cells.number))).astype(np.int64)
    share_left = np.ones(len(cells.number))
    drawn = np.zeros((resamples, *cells.number.shape))
    for p in range(cells.number.shape[1]):
        share = cells.number[:, p] / np.maximum(cells.number.sum(axis=1), 1)
        chance = np.clip(
            np.divide(share, share_left, out=np.zeros_like(share), where=share_left > 0), 0.0, 1.0
        )
        drawn[:, :, p] = rng.binomial(left, chance)
        left = left - drawn[:, :, p].astype(np.int64)
        share_left = share_left - share
    return drawn


def category_tables(cells: _Cells, weights: np.ndarray, drawn: np.ndarray) -> dict[str, np.ndarray]:
    """Per category, the (resamples, COUNT_COLUMNS) totals of its cells, each cell's `drawn` images
    (resamples or 1, cells, patterns) counted `weights` (resamples, cells) times."""
    tables = {}
    for category, part in cells.slices.items():
        counted = weights[:, part, None] * drawn[:, part]
        tables[category] = counted.reshape(len(counted), -1) @ cells.means[part].reshape(
            -1, cells.means.shape[2]
        )
    return tables


def _metric_of(tables: Mapping[str, np.ndarray], metric: str, group: str) -> np.ndarray:
    if group == "overall":
        return metric_values(sum(tables.values()), metric)
    if group == "category_mean":
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a category no resample defines the metric for
            return np.nanmean(np.stack([metric_values(t, metric) for t in tables.values()]), axis=0)
    if group not in tables:
        raise ValueError(f"no category {group!r} in the records ({', '.join(tables)})")
    return metric_values(tables[group], metric)


def metric_values(table: np.ndarray, metric: str) -> np.ndarray:
    """metrics.metric_arrays' figures, and the judge's balanced accuracy (mean of its true-positive and
    true-negative rates: on a set balanced by label, chance is 0.5 whatever the judge's bias). An INVALID
    answer counts as a wrong verdict, as metrics.judge_set_metrics counts it: the rates are over every image
    the reference labelled, not only those the judge answered. Derived here, not in metric_arrays, because
    metric_arrays' keys are what every evaluation logs: only the judge set, balanced by construction, has a
    use for it."""
    if metric == "balanced_accuracy":
        c = {name: table[:, i] for i, name in enumerate(_COLUMNS)}
        positives = c["ref_accepts"]
        negatives = c["ref_valid"] - c["ref_accepts"]
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = np.where(positives > 0, c["both_accept"] / np.maximum(positives, 1), np.nan)
            tnr = np.where(negatives > 0, c["both_reject"] / np.maximum(negatives, 1), np.nan)
        return (tpr + tnr) / 2
    if metric in _RATIOS:  # the figures the report draws, without computing every other one each time
        numerator, denominator = _RATIOS[metric]
        top = sum(table[:, _COLUMNS.index(c)] for c in numerator)
        bottom = table[:, _COLUMNS.index(denominator)]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)
    arrays = metric_arrays(table)
    if metric not in arrays:
        raise ValueError(
            f"unknown metric {metric!r}; choose from {', '.join([*arrays, 'balanced_accuracy'])}"
        )
    return arrays[metric]
