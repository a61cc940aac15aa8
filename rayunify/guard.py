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
    """One check's counts, which windows pool (proportions of pooled counts, not means of proportions)."""

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


def wilson_upper(hits: int, n: int, z: float) -> float:
    """Upper end of the Wilson score interval for a proportion: unlike the normal approximation it stays
    sensible for the handful of samples a first check sees (9 of 9 or 0 of 9)."""
    if n == 0:
        return 1.0
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def _pooled(checks: Sequence[CheckCounts]) -> CheckCounts:
    return CheckCounts(*(sum(column) for column in zip(*(astuple(c) for c in checks), strict=True)))


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
        self.history: deque[CheckCounts] = deque(maxlen=2 * window)
        self.alarms_total = 0

    def observe(self, records: Sequence[VerdictRecord]) -> GuardVerdict:
        """Judge-vs-reference records of one check; returns guard metrics and any alarm messages."""
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
        self.history.append(CheckCounts.of(records))
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
        pooled = _pooled(recent)
        if pooled.valid < self.min_samples:
            return []
        agreement = pooled.agreements / pooled.valid
        upper = wilson_upper(pooled.agreements, pooled.valid, self.z)
        metrics["guard/agreement_window"] = agreement
        metrics["guard/agreement_upper"] = upper
        if upper >= self.min_agreement:
            return []  # as far as these few samples can tell, the judge may still be above the threshold
        return [
            f"judge agrees with the reference on only {agreement:.0%} of the {pooled.valid} samples of the last "
            f"{len(recent)} checks (at most {upper:.0%} at {self.z:g} standard errors; threshold "
            f"{self.min_agreement:.0%}): its verdicts are no longer trustworthy supervision"
        ]

    def _trend_alarms(self, metrics: dict[str, float]) -> list[str]:
        if len(self.history) < 2 * self.window:
            return []
        old = _pooled(list(self.history)[: self.window])
        new = _pooled(list(self.history)[self.window :])
        d_ref, ref_noise = self._difference(
            old.reference_accepts, old.samples, new.reference_accepts, new.samples
        )
        d_non, non_noise = self._difference(old.own_rejects, old.valid, new.own_rejects, new.valid)
        metrics["guard/reference_accuracy_trend"] = d_ref
        metrics["guard/nonunified_trend"] = d_non
        if d_ref < -ref_noise and d_non < -non_noise:
            return [
                f"co-degradation: reference accuracy fell by {-d_ref:.1%} while the non-unification score "
                f"fell by {-d_non:.1%}; the model is agreeing with itself, not improving"
            ]
        return []

    def _difference(self, old_hits: int, old_n: int, new_hits: int, new_n: int) -> tuple[float, float]:
        """New minus old proportion, and the smallest change that counts: `z` standard errors of the
        difference under "no change" (the pooled proportion), or `tolerance` if that is larger."""
        if not old_n or not new_n:
            return math.nan, math.inf
        p = (old_hits + new_hits) / (old_n + new_n)
        standard_error = math.sqrt(p * (1 - p) * (1 / old_n + 1 / new_n))
        return new_hits / new_n - old_hits / old_n, max(self.tolerance, self.z * standard_error)

    def state_dict(self) -> dict[str, Any]:
        return {"checks": [list(astuple(c)) for c in self.history], "alarms_total": self.alarms_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Checkpoints written before the guard kept counts have "history" instead: their window restarts.
        checks = (CheckCounts(*c) for c in state.get("checks", []))
        self.history = deque(checks, maxlen=2 * self.window)
        self.alarms_total = int(state["alarms_total"])
