"""Whether a run is training at all: a judge that answers off-format, or steps that find nothing to train on,
warn once with the figures and a likely cause, and stop the run after `health.patience` such steps in a row.

Pure (no ray, no torch): the driver feeds it each step's training-judge verdicts and whether the learner
stepped. Without it, a self-judge that never answers "1" or "0" yields 32 of 32 INVALID verdicts, no pairs,
every learner step skipped, and exit 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rayunify.config.health import HealthConfig
from rayunify.types import Judgement, Verdict


class NoTrainingSignal(RuntimeError):
    """The run stopped because it has trained on nothing for `health.patience` steps."""


@dataclass(frozen=True)
class VerdictCounts:
    total: int = 0
    invalid: int = 0
    accepted: int = 0
    example_answer: str | None = None  # one raw INVALID answer, to show what the judge says instead

    @classmethod
    def of(cls, verdicts: Sequence[Judgement]) -> VerdictCounts:
        invalid = [j for j in verdicts if j.verdict == Verdict.INVALID]
        example = next((j.answer for j in invalid if j.answer is not None), None)
        accepted = sum(j.verdict == Verdict.ACCEPT for j in verdicts)
        return cls(len(verdicts), len(invalid), accepted, example)

    @property
    def invalid_share(self) -> float:
        return self.invalid / self.total if self.total else 0.0

    def describe_invalid(self) -> str:
        shown = f", e.g. {self.example_answer[:80]!r}" if self.example_answer is not None else ""
        return f"{self.invalid} of {self.total} verdicts ({self.invalid_share:.0%}) are INVALID{shown}"


class TrainingHealth:
    def __init__(self, cfg: HealthConfig, judge_name: str) -> None:
        self.cfg, self.judge_name = cfg, judge_name
        self.unhealthy_streak = 0  # unhealthy steps in a row
        self.idle_streak = 0  # learner steps in a row with nothing to train on
        self.warned_invalid = self.warned_idle = False
        self.last = VerdictCounts()

    def off_format(self, counts: VerdictCounts) -> bool:
        return counts.total > 0 and counts.invalid_share > self.cfg.max_invalid_share

    def observe_verdicts(self, where: str, verdicts: Sequence[Judgement]) -> list[str]:
        """A step's (or an offline build's) training-judge verdicts; returns the warning to print, if due."""
        if not verdicts:
            return []
        self.last = VerdictCounts.of(verdicts)
        if not self.off_format(self.last) or self.warned_invalid:
            return []
        self.warned_invalid = True
        return [
            f"[health] {where}: {self.last.describe_invalid()}, above health.max_invalid_share="
            f"{self.cfg.max_invalid_share:g}: the judge ({self.judge_name}) likely answers off-format (not '1' or "
            "'0'); INVALID verdicts make no pairs and no SFT samples"
        ]

    def observe_step(self, step: int, trained: bool, verdicts: Sequence[Judgement] = ()) -> list[str]:
        """One learner step: its verdicts (online) and whether it trained. Returns warnings to print; raises
        NoTrainingSignal once `patience` unhealthy steps came in a row."""
        warnings = self.observe_verdicts(f"step {step}", verdicts)
        self.idle_streak = 0 if trained else self.idle_streak + 1
        unhealthy = not trained or (bool(verdicts) and self.off_format(self.last))
        self.unhealthy_streak = self.unhealthy_streak + 1 if unhealthy else 0
        if self.idle_streak >= self.cfg.warn_idle_steps and not self.warned_idle:
            self.warned_idle = True
            warnings.append(
                f"[health] step {step}: nothing to train on for {self.idle_streak} steps in a row: {self.likely_cause()}"
            )
        if self.cfg.patience and self.unhealthy_streak >= self.cfg.patience:
            raise NoTrainingSignal(
                f"no training signal for {self.unhealthy_streak} steps in a row (health.patience={self.cfg.patience}; "
                f"0 warns only): {self.likely_cause()}"
            )
        return warnings

    def likely_cause(self) -> str:
        c = self.last
        if c.total == 0:
            return "no judged samples reached the learner (the data went stale or the build made none)"
        if self.off_format(c):
            return f"{c.describe_invalid()}: the judge ({self.judge_name}) answers off-format"
        valid = c.total - c.invalid
        if c.accepted == valid:
            return f"the judge accepted all {valid} valid verdicts: no rejected image to pair against"
        if c.accepted == 0:
            return f"the judge rejected all {valid} valid verdicts: no accepted image to learn from"
        return (
            f"{c.accepted} of {valid} valid verdicts accept, but no prompt's group has both (every group agrees "
            "with itself; more samples_per_prompt would help)"
        )
