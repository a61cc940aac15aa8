"""Unification metrics from (own verdict, reference verdict) records. Pure: no torch, ray or deepspeed.

The paper's quantities, for a set of the model's own images:
- nonunified: share its own judge rejects (invalid answers excluded, counted in invalid_rate);
- gen_accuracy: share the reference judge (ShapesWorld's checker, or an external model) accepts (its invalid
  answers excluded, counted in reference_invalid_rate);
- judge_accuracy / judge_fpr / judge_fnr: the own judge against the reference;
- weak_generation: of the images the own judge rejects, the share the reference also rejects
  (the paper's evidence that the gap comes from generation rather than misjudging). Read it beside
  weak_generation_base_rate, the share of all (both-valid) images the reference rejects: what a judge
  that rejects everything, or at random, would get.

And for the judge on a fixed, balanced image set (`judge_set_metrics`): AUROC of its soft score P(yes) and
balanced accuracy of its verdicts against the labels.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rayunify.types import Verdict

METRIC_KEYS = (
    "gen_accuracy",
    "nonunified",
    "judge_accuracy",
    "judge_fpr",
    "judge_fnr",
    "weak_generation",
    "weak_generation_base_rate",
    "invalid_rate",
    "reference_invalid_rate",
    "mean_self_score",
    "count",
)


@dataclass(frozen=True)
class VerdictRecord:
    category: str
    own: Verdict
    own_score: float
    reference: Verdict


# The counts every metric is a ratio of. Keeping them as columns lets a bootstrap resample prompts by
# weighting per-prompt count rows instead of recomputing from records a thousand times.
COUNT_COLUMNS = (
    "images", "own_valid", "own_rejects", "ref_valid", "ref_accepts", "both_valid", "both_accept",
    "own_accept_ref_reject", "own_reject_ref_accept", "both_reject", "ref_rejects_both_valid",
    "ref_accepts_both_valid", "own_rejects_both_valid", "own_score_sum",
)  # fmt: skip


def counts(records: Iterable[VerdictRecord]) -> np.ndarray:
    """The COUNT_COLUMNS of a set of records (float64, one row)."""
    c = dict.fromkeys(COUNT_COLUMNS, 0.0)
    for r in records:
        own_ok, ref_ok = r.own != Verdict.INVALID, r.reference != Verdict.INVALID
        own, ref = r.own == Verdict.ACCEPT, r.reference == Verdict.ACCEPT
        c["images"] += 1
        c["own_score_sum"] += r.own_score
        c["own_valid"] += own_ok
        c["own_rejects"] += own_ok and not own
        c["ref_valid"] += ref_ok
        c["ref_accepts"] += ref_ok and ref
        if own_ok and ref_ok:
            c["both_valid"] += 1
            c["both_accept"] += own and ref
            c["own_accept_ref_reject"] += own and not ref
            c["own_reject_ref_accept"] += ref and not own
            c["both_reject"] += not own and not ref
            c["ref_rejects_both_valid"] += not ref
            c["ref_accepts_both_valid"] += ref
            c["own_rejects_both_valid"] += not own
    return np.array([c[k] for k in COUNT_COLUMNS], dtype=np.float64)


def count_rows(own: np.ndarray, scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`counts` of each image alone, for many images at once: (images, COUNT_COLUMNS) from arrays of own
    verdicts, own scores and reference verdicts (Verdict values)."""
    own, reference = np.asarray(own), np.asarray(reference)
    own_ok, ref_ok = own != Verdict.INVALID, reference != Verdict.INVALID
    yes, ref = own == Verdict.ACCEPT, reference == Verdict.ACCEPT
    both = own_ok & ref_ok
    columns = {
        "images": np.ones(len(own), dtype=bool), "own_valid": own_ok, "own_rejects": own_ok & ~yes,
        "ref_valid": ref_ok, "ref_accepts": ref, "both_valid": both, "both_accept": both & yes & ref,
        "own_accept_ref_reject": both & yes & ~ref, "own_reject_ref_accept": both & ~yes & ref,
        "both_reject": both & ~yes & ~ref, "ref_rejects_both_valid": both & ~ref,
        "ref_accepts_both_valid": both & ref, "own_rejects_both_valid": both & ~yes,
    }  # fmt: skip
    table = np.stack([columns[k] for k in COUNT_COLUMNS if k != "own_score_sum"], axis=1).astype(np.float64)
    return np.insert(table, COUNT_COLUMNS.index("own_score_sum"), np.asarray(scores, dtype=np.float64), axis=1)


def metrics_from_counts(row: np.ndarray) -> dict[str, float]:
    return {key: float(values[0]) for key, values in metric_arrays(row[None, :]).items()}


def metric_arrays(table: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of a (rows, COUNT_COLUMNS) table; NaN where a denominator is zero."""
    c = {name: table[:, i] for i, name in enumerate(COUNT_COLUMNS)}
    return {
        "gen_accuracy": _ratio(c["ref_accepts"], c["ref_valid"]),
        "nonunified": _ratio(c["own_rejects"], c["own_valid"]),
        "judge_accuracy": _ratio(c["both_accept"] + c["both_reject"], c["both_valid"]),
        "judge_fpr": _ratio(c["own_accept_ref_reject"], c["ref_rejects_both_valid"]),
        "judge_fnr": _ratio(c["own_reject_ref_accept"], c["ref_accepts_both_valid"]),
        "weak_generation": _ratio(c["both_reject"], c["own_rejects_both_valid"]),
        "weak_generation_base_rate": _ratio(c["ref_rejects_both_valid"], c["both_valid"]),
        "invalid_rate": _ratio(c["images"] - c["own_valid"], c["images"]),
        "reference_invalid_rate": _ratio(c["images"] - c["ref_valid"], c["images"]),
        "mean_self_score": _ratio(c["own_score_sum"], c["images"]),
        "count": c["images"].copy(),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def unification_metrics(records: Sequence[VerdictRecord]) -> dict[str, float]:
    """An answer that did not parse (own or reference: external referees do answer off-format) is left out
    of every figure that needs it and counted in `invalid_rate` / `reference_invalid_rate`."""
    return metrics_from_counts(counts(records))


def by_category(records: Iterable[VerdictRecord]) -> dict[str, dict[str, float]]:
    """Overall metrics (pooled over images) under "overall", their unweighted mean over categories under
    "category_mean", then one entry per category."""
    groups: dict[str, list[VerdictRecord]] = defaultdict(list)
    everything: list[VerdictRecord] = []
    for record in records:
        groups[record.category].append(record)
        everything.append(record)
    per_category = {category: unification_metrics(rs) for category, rs in sorted(groups.items())}
    return {"overall": unification_metrics(everything), "category_mean": category_mean(per_category), **per_category}


def category_mean(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each metric averaged over categories with equal weight, as GenEval's overall score averages its six
    tasks: a prompt set drawn in proportion to how many meanings each category has is dominated by the
    hardest categories, and the pooled figure then says little about the easy ones. NaNs (a category with
    no image the metric applies to) are left out; `count` is the total."""
    mean = {}
    for key in METRIC_KEYS:
        values = [m[key] for m in per_category.values() if not math.isnan(m[key])]
        mean[key] = sum(values) / len(values) if values else math.nan
    mean["count"] = float(sum(m["count"] for m in per_category.values()))
    return mean


def flatten(report: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    """{"overall": {"nonunified": x}} → {"{prefix}nonunified": x, "{prefix}colour/nonunified": …}."""
    flat = {}
    for group, values in report.items():
        scope = "" if group == "overall" else f"{group}/"
        for key, value in values.items():
            flat[f"{prefix}{scope}{key}"] = value
    return flat


# ---------------------------------------------------------------------------------------------- the judge set
JUDGE_SET_KEYS = ("auroc", "balanced_accuracy", "true_positive_rate", "true_negative_rate", "invalid_rate", "count")


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve of `scores` for `labels`: the chance that a random positive scores above a
    random negative, ties counting half (the Mann-Whitney U statistic over n_pos · n_neg). NaN without
    both classes."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Mid-ranks handle ties: the rank sum of the positives minus its minimum is U.
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    start = 0
    while start < len(s):
        end = start
        while end + 1 < len(s) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def balanced_accuracy(labels: Sequence[bool], predictions: Sequence[bool | None]) -> float:
    """(true-positive rate + true-negative rate) / 2. A prediction of None (an answer that did not parse)
    counts as wrong whatever the label: a judge that cannot answer has not judged. NaN without both classes."""
    tpr, tnr = _class_rates(labels, predictions)
    return (tpr + tnr) / 2


def _class_rates(labels: Sequence[bool], predictions: Sequence[bool | None]) -> tuple[float, float]:
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    pos = [p is True for y, p in zip(labels, predictions, strict=True) if y]
    neg = [p is False for y, p in zip(labels, predictions, strict=True) if not y]
    if not pos or not neg:
        return math.nan, math.nan
    return sum(pos) / len(pos), sum(neg) / len(neg)


def judge_set_metrics(labels: Sequence[bool], scores: Sequence[float], verdicts: Sequence[Verdict]) -> dict[str, float]:
    """The judge on labelled images: AUROC of P(yes), balanced accuracy of its verdicts (INVALID counts as
    wrong), the two class rates, the share of INVALID answers and the image count."""
    predictions = [None if v == Verdict.INVALID else v == Verdict.ACCEPT for v in verdicts]
    tpr, tnr = _class_rates(labels, predictions)
    invalid = sum(p is None for p in predictions)
    return {
        "auroc": auroc(labels, scores),
        "balanced_accuracy": (tpr + tnr) / 2,
        "true_positive_rate": tpr,
        "true_negative_rate": tnr,
        "invalid_rate": invalid / len(predictions) if predictions else math.nan,
        "count": float(len(predictions)),
    }


def judge_set_report(
    categories: Sequence[str], labels: Sequence[bool], scores: Sequence[float], verdicts: Sequence[Verdict]
) -> dict[str, dict[str, float]]:
    """`judge_set_metrics` pooled ("overall") and per category, in `flatten`'s layout."""
    rows: dict[str, list[int]] = defaultdict(list)
    for index, category in enumerate(categories):
        rows[category].append(index)
    report = {"overall": judge_set_metrics(labels, scores, verdicts)}
    for category, idx in sorted(rows.items()):
        report[category] = judge_set_metrics([labels[i] for i in idx], [scores[i] for i in idx], [verdicts[i] for i in idx])
    return report


# ---------------------------------------------------------------------------------------------- intervals
def bootstrap_intervals(
    records: Sequence[VerdictRecord],
    prompt_ids: Sequence[str],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, list[float]]]:
    """Percentile intervals for every metric of `by_category(records)`, from a bootstrap over prompts: the
    images of one prompt are correlated, so prompts (with all their images) are what is resampled, within
    each category (so every category keeps its size and the category mean stays defined)."""
    if len(records) != len(prompt_ids):
        raise ValueError(f"{len(records)} records but {len(prompt_ids)} prompt ids")
    rows: dict[str, dict[str, list[VerdictRecord]]] = defaultdict(lambda: defaultdict(list))
    for record, prompt_id in zip(records, prompt_ids, strict=True):
        rows[record.category][prompt_id].append(record)
    rng = np.random.default_rng(seed)
    per_category = {}
    for category, by_prompt in sorted(rows.items()):
        table = np.stack([counts(rs) for rs in by_prompt.values()])
        weights = rng.multinomial(len(table), np.full(len(table), 1 / len(table)), size=resamples)
        per_category[category] = weights @ table  # (resamples, COUNT_COLUMNS)
    if not per_category:
        return {}
    arrays = {category: metric_arrays(table) for category, table in per_category.items()}
    overall = metric_arrays(sum(per_category.values()))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: a metric no resample defines
        mean = {k: np.nanmean(np.stack([a[k] for a in arrays.values()]), axis=0) for k in METRIC_KEYS}
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    out = {}
    for group, values in {"overall": overall, "category_mean": mean, **arrays}.items():
        out[group] = {k: _percentiles(values[k], lo, hi) for k in METRIC_KEYS if k != "count"}
    return out


def _percentiles(values: np.ndarray, lo: float, hi: float) -> list[float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [math.nan, math.nan]
    return [float(np.percentile(finite, lo)), float(np.percentile(finite, hi))]


# ---------------------------------------------------------------------------------------------- the probe
# Per-image figures of the false-positive probe (images the base accepted and the reference rejects), as the
# rollout worker returns them beside the means; the driver pops them and logs what `probe_changes` makes.
PROBE_P_YES = "probe_images/p_yes"
PROBE_GEN_LOGP = "probe_images/gen_logp"


def probe_changes(start: Mapping[str, Sequence[float]], now: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Each probe image's change since the start in the judge's P(yes) (ΔU) and in the generation
    log-likelihood per token (ΔG), summarised: their means, the share of images where both fall (the
    paper's shared-kernel mechanism moves both the same way on the same image) and their Pearson
    correlation across images (NaN under three images or with no spread)."""
    lengths = {len(figures[key]) for figures in (start, now) for key in (PROBE_P_YES, PROBE_GEN_LOGP)}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"probe figures do not line up: {sorted(lengths)} images at the start and now")
    du = np.asarray(now[PROBE_P_YES], float) - np.asarray(start[PROBE_P_YES], float)
    dg = np.asarray(now[PROBE_GEN_LOGP], float) - np.asarray(start[PROBE_GEN_LOGP], float)
    spread = du.size >= 3 and du.std() > 0 and dg.std() > 0
    return {
        "probe/delta_u_mean": float(du.mean()),
        "probe/delta_g_mean": float(dg.mean()),
        "probe/both_fall": float(np.mean((du < 0) & (dg < 0))),
        "probe/delta_corr": float(np.corrcoef(du, dg)[0, 1]) if spread else math.nan,
    }
