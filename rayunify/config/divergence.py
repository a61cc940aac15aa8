"""The divergence guard's section: when a learner step's gradient norm says training has blown up."""

from __future__ import annotations

from pydantic import Field

from rayunify.config.base import Strict


class DivergenceConfig(Strict):
    """Watches the learner's gradient norm (before clipping); a spike or a collapse stops the run with the
    last checkpoint written before it."""

    enabled: bool = Field(True, description="Stop the run when the gradient norm spikes or collapses.")
    spike_factor: float = Field(
        1000.0, gt=1, allow_inf_nan=False,
        description="Stop when a step's gradient norm exceeds this many times the median of the previous `window` "
        "steps' norms (a learning rate far too high gives factors of 10^4 and more).",
    )  # fmt: skip
    collapse_factor: float = Field(
        1e-6, ge=0, lt=1,
        description="Stop when a step's gradient norm falls below this fraction of that median (a model saturated "
        "after a blow-up has zero gradients: it trains no more and says nothing). 0: spikes only.",
    )  # fmt: skip
    window: int = Field(5, gt=0, description="Previous steps whose median gradient norm is the baseline.")
