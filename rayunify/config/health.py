"""The `health:` section: when a run that trains nothing says so, and when it stops."""

from __future__ import annotations

from pydantic import Field

from rayunify.config.base import Strict


class HealthConfig(Strict):
    """A run whose judge answers off-format, or whose steps find nothing to train on, would otherwise go on
    quietly: every step skipped, exit 0. These settings make it warn, then stop."""

    max_invalid_share: float = Field(
        0.5, ge=0, le=1, description="A step (or an offline build) whose training judge answers INVALID (off-format) "
        "on more than this share of its verdicts is unhealthy; the first such step warns with the share and one raw "
        "answer. 1: never."
    )  # fmt: skip
    warn_idle_steps: int = Field(
        3, gt=0, description="Warn once when this many learner steps in a row had nothing to train on (no pairs, no "
        "accepted image for SFT, no GRPO group whose rewards differ), with the likely cause."
    )  # fmt: skip
    patience: int = Field(
        10, ge=0, description="Stop the run (one line, exit 1) after this many unhealthy steps in a row (INVALID "
        "above max_invalid_share, or nothing to train on). 0: warn only, never stop."
    )  # fmt: skip
