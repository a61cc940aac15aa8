"""The adaptive curriculum's levels from the model itself: without `curriculum.levels`, categories are
ordered by how often the model's own judge accepted its images in the start evaluation, highest first (the
paper's difficulty is the pass rate). The order the training prompts first name them (their files' order)
only breaks ties, and categories the start evaluation did not measure (no eval prompt, or every verdict
INVALID) come last in that order. Pure: no ray, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rayunify.types import Verdict


@dataclass(frozen=True)
class LevelOrder:
    levels: list[str]  # easiest first
    rates: dict[str, float]  # acceptance rate per category; NaN: not measured

    def describe(self) -> str:
        shown = [
            f"{c} {self.rates[c]:.2f}" if not math.isnan(self.rates[c]) else f"{c} (not measured)"
            for c in self.levels
        ]
        return "curriculum levels by the start evaluation's acceptance rate, easiest first: " + ", ".join(
            shown
        )

    def metrics(self) -> dict[str, float]:
        """`curriculum/level/<category>`: the category's level (0 opens first)."""
        return {f"curriculum/level/{category}": float(level) for level, category in enumerate(self.levels)}


def acceptance_by_category(judged: Iterable[tuple[str, Verdict]]) -> dict[str, float]:
    """(category, own verdict) pairs → accepted / valid verdicts per category (INVALID left out; NaN: none
    valid)."""
    accepted: dict[str, int] = {}
    valid: dict[str, int] = {}
    for category, verdict in judged:
        accepted.setdefault(category, 0)
        valid.setdefault(category, 0)
        if verdict != Verdict.INVALID:
            valid[category] += 1
            accepted[category] += verdict == Verdict.ACCEPT
    return {c: accepted[c] / valid[c] if valid[c] else math.nan for c in valid}


def levels_by_acceptance(file_order: Sequence[str], rates: Mapping[str, float]) -> LevelOrder:
    """`file_order` (the training categories as the prompts first name them) sorted by acceptance rate,
    highest first; ties and unmeasured categories keep their file order, unmeasured ones last."""
    known = {c: rates.get(c, math.nan) for c in file_order}

    def key(indexed: tuple[int, str]) -> tuple[bool, float, int]:
        index, category = indexed
        rate = known[category]
        return (math.isnan(rate), -rate if not math.isnan(rate) else 0.0, index)

    ordered = [category for _, category in sorted(enumerate(file_order), key=key)]
    return LevelOrder(ordered, known)
