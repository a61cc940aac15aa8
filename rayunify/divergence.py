"""The divergence guard: a learner step's gradient norm (before clipping) against the median of the steps
before it. A spike (far above) or a collapse (far below, typically exactly 0.0 once a blown-up model has
saturated) stops the run: the weights that produced it are already damaged, so the run names the last
checkpoint written before the damage. A non-finite norm counts as a spike. Pure: statistics only.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DivergenceGuard:
    spike_factor: float
    collapse_factor: float
    window: int
    history: list[float] = field(default_factory=list)  # the latest `window` finite norms

    def observe(self, step: int, grad_norm: float, loss: float | None = None) -> str | None:
        """None while training looks sane; else why it does not (one sentence, naming the config keys).
        A step whose loss is exactly 0 (e.g. GRPO groups of equal rewards: zero advantages) has no gradient by
        design and is never a collapse."""
        problem = self._judge(grad_norm, loss != 0.0)
        if problem is None and math.isfinite(grad_norm):
            self.history = [*self.history, grad_norm][-self.window :]
        return None if problem is None else f"training diverged at step {step}: {problem}"

    def _judge(self, grad_norm: float, may_collapse: bool) -> str | None:
        if not math.isfinite(grad_norm):
            return f"the gradient norm is {grad_norm}"
        if not self.history:
            return None
        median = statistics.median(self.history)
        if grad_norm > self.spike_factor * median:
            return (
                f"gradient norm {grad_norm:.3g} is {grad_norm / median:.3g}x the median {median:.3g} of the previous "
                f"{len(self.history)} steps (guard.divergence.spike_factor={self.spike_factor:g})"
            )
        if may_collapse and grad_norm < self.collapse_factor * median:
            return (
                f"gradient norm {grad_norm:.3g} collapsed below {self.collapse_factor:g}x the median {median:.3g} of "
                f"the previous {len(self.history)} steps (guard.divergence.collapse_factor)"
            )
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [float(x) for x in state.get("history", [])][-self.window :]
