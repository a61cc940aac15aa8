"""The co-degradation guard and the false-positive probe's bookkeeping. Pure: no torch, ray or deepspeed.

The non-unification score falls both when the model really improves (co-improvement) and when its judge
degrades with it (co-degradation), so Non alone cannot tell them apart (arXiv 2507.16663 v1, §5). Every
few steps a share of freshly judged samples is also scored by a reference judge; the guard logs how often
the two agree, the judge's false-positive rate against the reference and the reference's view of
generation accuracy, and raises an alarm when agreement over the latest checks is too low, or when reference
accuracy falls while the non-unification score falls too.

A check sees a few dozen samples (a quarter of one step's), so its figures swing from sampling alone:
agreement is pooled over the latest `window` checks and alarms only when even its upper confidence bound
(`z` standard errors, Wilson) is below the threshold, and a trend counts only when it is larger than `z`
standard errors of the difference between two windows' pooled proportions (and than `tolerance`).
Without that, single unlucky checks, and a first check of nine samples, raised alarms.

The images of one prompt are correlated (an easy prompt's images are mostly right), so the standard errors
are clustered by prompt: each check keeps its counts per prompt, and a proportion's variance is the
cluster-robust (ratio-estimator) one, never below the independent-images one. The trend compares the
latest window with the window before it (a sudden fall) and with the first window of the run (a slow
drift that no two adjacent windows show).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any

from rayunify.metrics import VerdictRecord, unification_metrics
from rayunify.types import Verdict


class CoDegradationAlarm(RuntimeError):
    """Raised (when configured to stop) with the measurements that triggered it."""


@dataclass
class GuardVerdict:
    metrics: dict[str, float]
    alarms: list[str]


@dataclass(frozen=True)
class CheckCounts:
    """The counts of one prompt's images in a check; a check is a {prompt: CheckCounts} map, which windows
    pool prompt by prompt (proportions of pooled counts, not means of proportions)."""

    samples: int
    reference_accepts: int
    valid: int  # own verdicts that parsed
    own_rejects: int
    agreements: int

    @classmethod
    def of(cls, records: Sequence[VerdictRecord]) -> CheckCounts:
        valid = [r for r in records if r.own != Verdict.INVALID]
        return cls(
            samples=len(records),
            reference_accepts=sum(r.reference == Verdict.ACCEPT for r in records),
            valid=len(valid),
            own_rejects=sum(r.own == Verdict.REJECT for r in valid),
            agreements=sum(r.own == r.reference for r in valid),
        )


Check = dict[str, CheckCounts]  # prompt -> its counts


def check_counts(records: Sequence[VerdictRecord], clusters: Sequence[str]) -> Check:
    """One check's counts per prompt (`clusters`, one per record)."""
    keys = [str(c) for c in clusters]
    if len(keys) != len(records):
        raise ValueError(f"{len(records)} records but {len(keys)} cluster ids")
    groups: dict[str, list[VerdictRecord]] = {}
    for key, record in zip(keys, records, strict=True):
        groups.setdefault(key, []).append(record)
    return {key: CheckCounts.of(rs) for key, rs in groups.items()}


def wilson_upper(hits: float, n: float, z: float) -> float:
    """Upper end of the Wilson score interval for a proportion: unlike the normal approximation it stays
    sensible for the handful of samples a first check sees (9 of 9 or 0 of 9). `n` may be an effective
    sample size (`Proportion.effective_n`), so neither argument need be whole."""
    if n <= 0:
        return 1.0
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return min(1.0, (centre + spread) / (1 + z * z / n))


@dataclass(frozen=True)
class Proportion:
    """A pooled proportion over clusters with its cluster-robust variance."""

    value: float
    n: int
    variance: float

    @classmethod
    def of(cls, hits: Sequence[int], totals: Sequence[int]) -> Proportion:
        """Σ hits / Σ totals; variance C/(C−1) · Σ (hits_i − p·n_i)² / N² over the C clusters with images
        (the ratio estimator's), floored at p(1−p)/N, the variance were the images independent."""
        pairs = [(h, t) for h, t in zip(hits, totals, strict=True) if t > 0]
        n = sum(t for _, t in pairs)
        if n == 0:
            return cls(math.nan, 0, math.inf)
        p = sum(h for h, _ in pairs) / n
        independent = p * (1 - p) / n
        c = len(pairs)
        clustered = c / (c - 1) * sum((h - p * t) ** 2 for h, t in pairs) / n**2 if c > 1 else independent
        return cls(p, n, max(clustered, independent))

    def effective_n(self) -> float:
        """The sample size of independent images with this variance (n when p is 0 or 1)."""
        if self.variance <= 0 or self.value in (0.0, 1.0):
            return float(self.n)
        return min(float(self.n), self.value * (1 - self.value) / self.variance)


def _pooled(checks: Sequence[Check]) -> Check:
    """The checks' counts merged prompt by prompt: a prompt seen in several checks is one cluster."""
    merged: dict[str, CheckCounts] = {}
    for check in checks:
        for key, counts in check.items():
            before = merged.get(key)
            merged[key] = counts if before is None else CheckCounts(
                *(a + b for a, b in zip(astuple(before), astuple(counts), strict=True))
            )
    return merged


def _proportion(check: Check, hits: str, total: str) -> Proportion:
    rows = list(check.values())
    return Proportion.of([getattr(r, hits) for r in rows], [getattr(r, total) for r in rows])


class CoDegradationGuard:
    def __init__(
        self,
        min_agreement: float = 0.6,
        window: int = 3,
        min_samples: int = 8,
        tolerance: float = 0.02,
        z: float = 2.0,
    ):
        if window < 1:
            raise ValueError(f"guard window must be >= 1 check, got {window}")
        self.min_agreement = min_agreement
        self.window = window
        self.min_samples = min_samples
        self.tolerance = tolerance
        self.z = z
        self.history: deque[Check] = deque(maxlen=2 * window)
        self.start: list[Check] = []  # the run's first `window` checks, kept for the drift comparison
        self.checks_seen = 0
        self.alarms_total = 0

    def observe(self, records: Sequence[VerdictRecord], prompts: Sequence[str] | None = None) -> GuardVerdict:
        """Judge-vs-reference records of one check, with each record's prompt (the cluster its image belongs
        to; None: images independent); returns guard metrics and any alarm messages."""
        m = unification_metrics(records)
        metrics = {
            "guard/agreement": m["judge_accuracy"],
            "guard/judge_fpr": m["judge_fpr"],
            "guard/judge_fnr": m["judge_fnr"],
            "guard/reference_accuracy": m["gen_accuracy"],
            "guard/nonunified": m["nonunified"],
            "guard/samples": m["count"],
        }
        if len(records) < self.min_samples:
            return GuardVerdict(metrics, [])
        # Without prompts every image is its own cluster, unique to this check.
        clusters = prompts if prompts is not None else [f"check{self.checks_seen}/{i}" for i in range(len(records))]
        check = check_counts(records, clusters)
        self.history.append(check)
        self.checks_seen += 1
        if len(self.start) < self.window:
            self.start.append(check)
        agreement_alarms = self._agreement_alarms(metrics)
        trend_alarms = self._trend_alarms(metrics)
        alarms = agreement_alarms + trend_alarms
        self.alarms_total += len(alarms)
        metrics["guard/alarm_agreement"] = float(bool(agreement_alarms))
        metrics["guard/alarm_codegradation"] = float(bool(trend_alarms))
        metrics["guard/alarm"] = float(bool(alarms))
        metrics["guard/alarms_total"] = float(self.alarms_total)
        return GuardVerdict(metrics, alarms)

    def _agreement_alarms(self, metrics: dict[str, float]) -> list[str]:
        recent = list(self.history)[-self.window :]
        agreement = _proportion(_pooled(recent), "agreements", "valid")
        if agreement.n < self.min_samples:
            return []
        n_eff = agreement.effective_n()
        upper = wilson_upper(agreement.value * n_eff, n_eff, self.z)
        metrics["guard/agreement_window"] = agreement.value
        metrics["guard/agreement_upper"] = upper
        if upper >= self.min_agreement:
            return []  # as far as these few samples can tell, the judge may still be above the threshold
        return [
            f"judge agrees with the reference on only {agreement.value:.0%} of the {agreement.n} samples of the "
            f"last {len(recent)} checks (at most {upper:.0%} at {self.z:g} standard errors, clustered by prompt; "
            f"threshold {self.min_agreement:.0%}): its verdicts are no longer trustworthy supervision"
        ]

    def _trend_alarms(self, metrics: dict[str, float]) -> list[str]:
        """Both comparisons need two disjoint windows: the latest against the one before it, and against the
        run's first window (once the latest no longer overlaps it)."""
        history = list(self.history)
        latest = _pooled(history[-self.window :])
        alarms = []
        if len(history) == 2 * self.window:
            alarms += self._compare(_pooled(history[: self.window]), latest, metrics, "trend", "the last window")
        if self.checks_seen >= 2 * self.window:
            alarms += self._compare(_pooled(self.start), latest, metrics, "since_start", "the start")
        return alarms[:1]  # one message per check: both say the same thing

    def _compare(self, old: Check, new: Check, metrics: dict[str, float], suffix: str, since: str) -> list[str]:
        d_ref, ref_noise = self._difference(
            _proportion(old, "reference_accepts", "samples"), _proportion(new, "reference_accepts", "samples")
        )
        d_non, non_noise = self._difference(_proportion(old, "own_rejects", "valid"), _proportion(new, "own_rejects", "valid"))
        metrics[f"guard/reference_accuracy_{suffix}"] = d_ref
        metrics[f"guard/nonunified_{suffix}"] = d_non
        if d_ref < -ref_noise and d_non < -non_noise:
            return [
                f"co-degradation: since {since}, reference accuracy fell by {-d_ref:.1%} while the "
                f"non-unification score fell by {-d_non:.1%}; the model is agreeing with itself, not improving"
            ]
        return []

    def _difference(self, old: Proportion, new: Proportion) -> tuple[float, float]:
        """New minus old proportion, and the smallest change that counts: `z` standard errors of the
        difference (the windows independent), each window's variance its clustered one but at least what
        the pooled proportion gives its size under "no change"; or `tolerance` if that is larger."""
        if not old.n or not new.n:
            return math.nan, math.inf
        p = (old.value * old.n + new.value * new.n) / (old.n + new.n)
        variance = max(old.variance, p * (1 - p) / old.n) + max(new.variance, p * (1 - p) / new.n)
        return new.value - old.value, max(self.tolerance, self.z * math.sqrt(variance))

    def state_dict(self) -> dict[str, Any]:
        def plain(checks: Sequence[Check]) -> list[dict[str, list[int]]]:
            return [{key: list(astuple(c)) for key, c in check.items()} for check in checks]

        return {
            "clustered_checks": plain(self.history), "start": plain(self.start),
            "checks_seen": self.checks_seen, "alarms_total": self.alarms_total,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Checkpoints written before the guard clustered by prompt hold no per-prompt counts: their windows restart.
        def checks(rows: Sequence[dict[str, list[int]]]) -> list[Check]:
            return [{key: CheckCounts(*c) for key, c in row.items()} for row in rows]

        self.history = deque(checks(state.get("clustered_checks", [])), maxlen=2 * self.window)
        self.start = checks(state.get("start", []))
        self.checks_seen = int(state.get("checks_seen", len(self.history)))
        self.alarms_total = int(state["alarms_total"])
