"""The co-degradation guard and the false-positive probe's bookkeeping. Pure: no torch, ray or deepspeed.

The non-unification score falls both when the model really improves (co-improvement) and when its judge
degrades with it (co-degradation), so Non alone cannot tell them apart (arXiv 2507.16663 v1, §5). Every
few steps a share of freshly judged samples is also scored by a reference judge; the guard logs how often
the two agree, the judge's false-positive rate against the reference and the reference's view of
generation accuracy, and raises an alarm when agreement is too low, or when reference accuracy falls while
the non-unification score falls too.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rayunify.metrics import VerdictRecord, unification_metrics


class CoDegradationAlarm(RuntimeError):
    """Raised (when configured to stop) with the measurements that triggered it."""


@dataclass
class GuardVerdict:
    metrics: dict[str, float]
    alarms: list[str]


class CoDegradationGuard:
    def __init__(self, min_agreement: float = 0.6, window: int = 3, min_samples: int = 8, tolerance: float = 0.02):
        self.min_agreement = min_agreement
        self.window = window
        self.min_samples = min_samples
        self.tolerance = tolerance
        self.history: deque[tuple[float, float]] = deque(maxlen=2 * window)  # (ref accuracy, nonunified)
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
        alarms: list[str] = []
        if len(records) < self.min_samples:
            return GuardVerdict(metrics, alarms)
        if not math.isnan(m["judge_accuracy"]) and m["judge_accuracy"] < self.min_agreement:
            alarms.append(
                f"judge agrees with the reference on only {m['judge_accuracy']:.0%} of samples "
                f"(threshold {self.min_agreement:.0%}): its verdicts are no longer trustworthy supervision"
            )
        self.history.append((m["gen_accuracy"], m["nonunified"]))
        trend = self._trend()
        if trend is not None:
            d_ref, d_non = trend
            metrics["guard/reference_accuracy_trend"] = d_ref
            metrics["guard/nonunified_trend"] = d_non
            if d_ref < -self.tolerance and d_non < -self.tolerance:
                alarms.append(
                    f"co-degradation: reference accuracy fell by {-d_ref:.1%} while the non-unification score "
                    f"fell by {-d_non:.1%}; the model is agreeing with itself, not improving"
                )
        self.alarms_total += len(alarms)
        metrics["guard/alarm"] = float(bool(alarms))
        metrics["guard/alarms_total"] = float(self.alarms_total)
        return GuardVerdict(metrics, alarms)

    def _trend(self) -> tuple[float, float] | None:
        """Mean of the latest `window` checks minus the mean of the `window` before them."""
        if len(self.history) < 2 * self.window:
            return None
        old, new = list(self.history)[: self.window], list(self.history)[self.window :]
        mean = lambda rows, i: sum(r[i] for r in rows) / len(rows)  # noqa: E731
        return mean(new, 0) - mean(old, 0), mean(new, 1) - mean(old, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "alarms_total": self.alarms_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque((tuple(h) for h in state["history"]), maxlen=2 * self.window)  # type: ignore[misc]
        self.alarms_total = int(state["alarms_total"])
