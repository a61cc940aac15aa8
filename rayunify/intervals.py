"""Intervals for before/after and recipe-vs-recipe comparisons: a hierarchical bootstrap. Pure: numpy only.

An evaluation writes one row per image (`eval_<tag>_records.jsonl`: prompt id, category, the model's own
verdict and score, the reference verdict), one file per training seed. A figure varies for three reasons,
and each resample redraws all three, top down:

- **seeds**: the training seeds are drawn with replacement (the same draw for every arm with as many seeds:
  a run's start and end are the same seed, and recipes share seed numbers);
- **texts within category**: the texts of each category with replacement (a category keeps its size, so
  the category mean stays defined), the same draw for every arm, which pairs a difference over texts;
- **images within text**: the images of each (seed, text) with replacement, independently per arm (two
  arms never share images, except the fixed judge set, which resamples seeds only).

A prompt repeated under ids of its own (`<id>~k`: a small category filled to its size with the same text)
is one text. The interval is `estimate ± t(df) · SE` (rayunify.power): a percentile interval over three
seeds cannot reach its level (three draws span the mean only 75% of the time), so the seed level's share of
the variance is estimated from the seeds' spread with its small-sample correction and carries `seeds − 1`
degrees of freedom (Satterthwaite). docs/intervals.md gives the coverage this was checked to keep.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rayunify.power import VarianceComponents, satterthwaite_df, t_quantile, two_sided_p
from rayunify.records import (  # noqa: F401  (ArmRecords, read_eval_records, point, seed_points: re-exported)
    REPEAT_MARK,
    ArmRecords,
    category_tables,
    image_draws,
    metric_values,
    point,
    read_eval_records,
    seed_points,
    text_weights,
)
from rayunify.types import Verdict


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


# Fewer texts than this in a category and its between-text spread is not estimated (two texts give its
# variance one degree of freedom, and an interval built on it is either arbitrarily wide or overstated):
# the category's figures are then about its texts only, and the report says so.
MIN_TEXTS_FOR_SPREAD = 5
LEVELS = ("seed", "text", "image")  # what a resample redraws, top down
JUDGE_SET_LEVELS = (
    "seed",
)  # the judge set's images are fixed and its judge deterministic: only the seed varies


@dataclass(frozen=True)
class Interval:
    """A figure (or a contrast of figures) with its interval: estimate ± t(df) · se."""

    estimate: float
    se: float
    df: float
    seeds: int
    components: VarianceComponents  # per seed: what the MDE at other seed counts is computed from
    level: float = 0.95
    note: str = ""

    @property
    def low(self) -> float:
        return self.estimate - self._half_width()

    @property
    def high(self) -> float:
        return self.estimate + self._half_width()

    def _half_width(self) -> float:
        if not np.isfinite(self.se):
            return float("nan")
        return t_quantile(0.5 + self.level / 2, self.df) * self.se if self.se > 0 else 0.0

    def at(self, level: float) -> Interval:
        return replace(self, level=level)

    def p_value(self) -> float:
        return two_sided_p(self.estimate, self.se, self.df)

    def clears(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def contrast_interval(
    arms: Mapping[str, ArmRecords],
    weights: Mapping[str, float],
    metric: str,
    group: str = "overall",
    levels: Sequence[str] = LEVELS,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """The interval of Σ weights[arm] · metric(arm): {"end": 1} a figure, {"end": 1, "start": -1} a change,
    {"a": 1, "b": -1} a recipe against another. Arms must cover the same texts.

    The levels are taken apart and their variances combined as in a crossed seeds × texts design with images
    nested in both: the seeds' spread (from the seeds' own figures), never less than what resampling the
    images alone gives, plus each category's between-text spread (a two-way analysis of variance of the
    (text × seed) table; with one seed, resampled texts beyond their images). Nesting all three levels in
    one resample would count the image noise three times (docs/intervals.md)."""
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown resampling level {sorted(unknown)[0]!r}; choose from {', '.join(LEVELS)}")
    chosen = {n: arms[n] for n in weights}
    _check_same_texts(chosen)
    estimate = sum(w * point(chosen[n], metric, group) for n, w in weights.items())
    seeds = min(arm.seeds for arm in chosen.values())
    share = _category_weights(next(iter(chosen.values())), group)
    between = _between_texts(chosen, weights, metric, share) if {"seed", "text"} <= set(levels) else None
    drawn = [lv for lv in levels if lv != "seed" and not (lv == "text" and between is not None)]
    draws = _level_draws(chosen, weights, metric, drawn, resamples, seed)
    images = _variance(_combine(draws["image"], share, group)) if "image" in levels else 0.0
    spread = images * seeds  # the variance of one seed's figure
    if "seed" in levels and seeds >= 2:
        spread = _seed_spread(chosen, weights, metric, group)
        if "image" not in levels:  # a fixed image set (the judge set): nothing below the seeds is drawn
            spread = max(spread, _rounding_variance(chosen, weights, group))
    if between is None:
        texts, text_df = _text_part(draws, share, next(iter(chosen.values())), levels)
    else:
        texts, text_df = sum(v for v, _ in between), satterthwaite_df(between) if between else float("inf")
    components = VarianceComponents(spread, images * seeds, texts, text_df)
    note = (
        "one seed: the training seed's spread is not in this interval"
        if "seed" in levels and seeds < 2
        else ""
    )
    return Interval(
        float(estimate),
        components.standard_error(seeds),
        components.df(seeds),
        seeds,
        components,
        level,
        note,
    )


def _seed_spread(
    arms: Mapping[str, ArmRecords], weights: Mapping[str, float], metric: str, group: str
) -> float:
    """The variance of one seed's figure of the contrast, from the seeds' own figures: what resampling seeds
    converges to, computed exactly (three seeds allow only ten distinct resamples). Arms with as many seeds
    are paired by seed number (a run's start and end are one seed); otherwise each arm's spread counts on
    its own, scaled to the fewest seeds (the interval then has that many seeds' degrees of freedom)."""
    per_seed = {n: np.array(seed_points(a, metric, group)) for n, a in arms.items()}
    if len({len(v) for v in per_seed.values()}) == 1:
        return _variance(sum(weights[n] * v for n, v in per_seed.items()))
    fewest = min(len(v) for v in per_seed.values())
    return sum(weights[n] ** 2 * _variance(v) * fewest / len(v) for n, v in per_seed.items())


def _rounding_variance(arms: Mapping[str, ArmRecords], weights: Mapping[str, float], group: str) -> float:
    """The least variance one seed's figure of the contrast is given on a fixed image set: each arm's figure
    moves in steps of one verdict (about 1 / its images in the group), so seeds that agree to the step say
    the spread is below a step, not that it is zero. Without it, a judge that flips the same one of 600
    images under every seed gets a zero-width interval that "clears" (the rounding error of a uniform
    step, h² / 12, as in Sheppard's correction)."""
    total = 0.0
    for name, arm in arms.items():
        categories = np.array(arm.categories)[arm.text]
        in_group = len(categories) if group in ("overall", "category_mean") else int(np.sum(categories == group))
        images_per_seed = max(in_group / arm.seeds, 1.0)
        total += weights[name] ** 2 / (12 * images_per_seed**2)
    return total


def _between_texts(
    arms: Mapping[str, ArmRecords], weights: Mapping[str, float], metric: str, share: Mapping[str, float]
) -> list[tuple[float, float]] | None:
    """Per category, (variance, df) of the figure from which texts it holds, by a two-way analysis of
    variance of the contrast's (text × seed) table: the texts' mean square less the text-by-seed one, so that
    neither the seeds' shifts nor the image noise (both already in the seeds' spread) count twice. A
    category with fewer than MIN_TEXTS_FOR_SPREAD texts gives none (docs/intervals.md). None where the arms' seeds cannot be paired or
    there is one seed: the text resampling's spread beyond the images' is used instead."""
    first = next(iter(arms.values()))
    seeds = first.seeds
    if seeds < 2 or len({a.seeds for a in arms.values()}) != 1:
        return None
    table = np.zeros((len(first.texts), seeds))
    for name, arm in arms.items():
        cells = arm.cells
        grid = np.full((len(arm.texts), seeds), np.nan)
        grid[cells.text, cells.seed] = metric_values(
            np.einsum("kp,kpc->kc", cells.number, cells.means), metric
        )
        table = table + weights[name] * grid
    parts = []
    categories = np.array(first.categories)
    for category, weight in share.items():
        grid = table[categories == category]
        grid = grid[~np.isnan(grid).any(axis=1)]
        n = len(grid)
        if n < MIN_TEXTS_FOR_SPREAD or weight == 0:
            continue
        texts_ms = seeds * np.var(grid.mean(axis=1), ddof=1)
        residual = grid - grid.mean(axis=1, keepdims=True) - grid.mean(axis=0, keepdims=True) + grid.mean()
        residual_ms = float((residual**2).sum()) / ((n - 1) * (seeds - 1))
        if texts_ms <= residual_ms:
            continue
        df = (texts_ms - residual_ms) ** 2 / (
            texts_ms**2 / (n - 1) + residual_ms**2 / ((n - 1) * (seeds - 1))
        )
        parts.append((float(weight * weight * (texts_ms - residual_ms) / seeds / n), float(df)))
    return parts


def _text_part(
    draws: Mapping[str, dict[str, np.ndarray]],
    share: Mapping[str, float],
    arm: ArmRecords,
    levels: Sequence[str],
) -> tuple[float, float]:
    """(variance, df) of the figure from which texts each category holds: per category the spread of its
    resampled texts (corrected by n / (n − 1)) beyond what its images alone give; a category with fewer than
    MIN_TEXTS_FOR_SPREAD texts gives none (docs/intervals.md)."""
    if "text" not in levels:
        return 0.0, float("inf")
    parts = []
    for category, weight in share.items():
        n = len(arm.texts_of(category))
        if n < MIN_TEXTS_FOR_SPREAD or weight == 0:
            continue
        spread = _variance(draws["text"][category]) * n / (n - 1)
        images = _variance(draws["image"][category]) if "image" in levels else 0.0
        parts.append((weight * weight * max(spread - images, 0.0), float(n - 1)))
    return sum(v for v, _ in parts), satterthwaite_df(parts) if parts else float("inf")


def _category_weights(arm: ArmRecords, group: str) -> dict[str, float]:
    """How much each category's figure weighs in the group's: the category mean weighs them equally, a
    category is itself, the pooled figure weighs them (to first order) by their images."""
    categories = sorted(set(arm.categories))
    if group == "category_mean":
        return dict.fromkeys(categories, 1 / len(categories))
    if group != "overall":
        if group not in categories:
            raise ValueError(f"no category {group!r} in the records ({', '.join(categories)})")
        return {c: float(c == group) for c in categories}
    images = np.array(arm.categories)[arm.text]
    return {c: float(np.mean(images == c)) for c in categories}


def _combine(per_category: Mapping[str, np.ndarray], share: Mapping[str, float], group: str) -> np.ndarray:
    """The group's draws from each category's: exact for the category mean and one category; the pooled
    figure comes precomputed under the key "overall"."""
    if group == "overall":
        return per_category["overall"]
    if group != "category_mean":
        return per_category[group]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack([per_category[c] for c in share]), axis=0)


def _variance(draws: np.ndarray) -> float:
    finite = draws[np.isfinite(draws)]
    return float(np.var(finite, ddof=1)) if len(finite) > 1 else 0.0


def _check_same_texts(arms: Mapping[str, ArmRecords]) -> None:
    names = list(arms)
    for name in names[1:]:
        if arms[name].texts != arms[names[0]].texts:
            raise ValueError(f"arm {name!r} was evaluated on other prompts than {names[0]!r}")


def _level_draws(
    arms: Mapping[str, ArmRecords],
    weights: Mapping[str, float],
    metric: str,
    levels: Sequence[str],
    resamples: int,
    seed: int,
) -> dict[str, dict[str, np.ndarray]]:
    """{level: {category or "overall": the contrast's resampled values}} with only that level redrawn: texts
    within category (the same draw for every arm: texts pair them) or images within (seed, text)
    (independent per arm). The seed level is not drawn: `_seed_spread` computes it exactly."""
    rng = np.random.default_rng(seed)
    first = next(iter(arms.values()))
    text_w = text_weights(first, resamples, rng) if "text" in levels else None
    out: dict[str, dict[str, np.ndarray]] = {level: {} for level in levels if level != "seed"}
    for name, arm in arms.items():
        cells, held = arm.cells, np.ones((1, len(arm.cells.seed)))
        resampled = {}
        if "text" in levels:
            resampled["text"] = category_tables(cells, text_w[:, cells.text], cells.number[None])
        if "image" in levels:
            resampled["image"] = category_tables(cells, held, image_draws(cells, resamples, rng))
        for level, by_category in resampled.items():
            for key, values in {**{c: metric_values(t, metric) for c, t in by_category.items()},
                                "overall": metric_values(sum(by_category.values()), metric)}.items():  # fmt: skip
                out[level][key] = out[level].get(key, 0.0) + weights[name] * values
    return out
