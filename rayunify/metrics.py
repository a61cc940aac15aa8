"""Unification metrics from (own verdict, reference verdict) records. Pure: no torch, ray or deepspeed.

The paper's quantities, for a set of the model's own images:
- nonunified: share its own judge rejects (invalid answers excluded, counted in invalid_rate);
- gen_accuracy: share the reference judge (ShapesWorld's checker, or an external model) accepts;
- judge_accuracy / judge_fpr / judge_fnr: the own judge against the reference;
- weak_generation: of the images the own judge rejects, the share the reference also rejects
  (the paper's evidence that the gap comes from generation rather than misjudging).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rayunify.types import Verdict

METRIC_KEYS = (
    "gen_accuracy",
    "nonunified",
    "judge_accuracy",
    "judge_fpr",
    "judge_fnr",
    "weak_generation",
    "invalid_rate",
    "mean_self_score",
    "count",
)


@dataclass(frozen=True)
class VerdictRecord:
    category: str
    own: Verdict
    own_score: float
    reference: Verdict


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def unification_metrics(records: Sequence[VerdictRecord]) -> dict[str, float]:
    valid = [r for r in records if r.own != Verdict.INVALID]
    own_accept = [r.own == Verdict.ACCEPT for r in valid]
    ref_accept = [r.reference == Verdict.ACCEPT for r in valid]
    pairs = list(zip(own_accept, ref_accept, strict=True))
    ref_rejects = sum(not ref for ref in ref_accept)
    ref_accepts = sum(ref_accept)
    own_rejects = sum(not own for own in own_accept)
    return {
        "gen_accuracy": _ratio(sum(r.reference == Verdict.ACCEPT for r in records), len(records)),
        "nonunified": _ratio(own_rejects, len(valid)),
        "judge_accuracy": _ratio(sum(own == ref for own, ref in pairs), len(valid)),
        "judge_fpr": _ratio(sum(own and not ref for own, ref in pairs), ref_rejects),
        "judge_fnr": _ratio(sum(ref and not own for own, ref in pairs), ref_accepts),
        "weak_generation": _ratio(sum(not own and not ref for own, ref in pairs), own_rejects),
        "invalid_rate": _ratio(len(records) - len(valid), len(records)),
        "mean_self_score": _ratio(0, 1) if not records else sum(r.own_score for r in records) / len(records),
        "count": float(len(records)),
    }


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
