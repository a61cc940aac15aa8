"""GRPO's rewards from judgements: one judge's soft score or verdict, or a weighted sum over several judges.

Pure (types only): the judge actors call it on each chunk's judgements; tests call it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from rayunify.types import Judgement, Verdict

RewardMode = Literal["score", "verdict"]


def judgement_reward(judgement: Judgement, mode: RewardMode) -> float:
    """score: P(yes) in [0, 1]; verdict: 1 if accepted else 0. An INVALID answer earns 0 either way: an
    unparsable answer must not be rewarded by whatever soft score came with it."""
    if judgement.verdict == Verdict.INVALID:
        return 0.0
    return float(judgement.score) if mode == "score" else float(judgement.accepted)


def weighted_rewards(
    per_judge: Sequence[Sequence[Judgement]], weights: Sequence[float], mode: RewardMode
) -> tuple[list[float], list[int]]:
    """Per sample: Σ_j weight_j · reward_j, and how many of the judges answered INVALID.

    per_judge[j][i] is judge j's judgement of sample i; every judge judged the same samples in the same order.
    """
    if len(per_judge) != len(weights) or not per_judge:
        raise ValueError(f"{len(per_judge)} judges' judgements for {len(weights)} weights")
    count = len(per_judge[0])
    if any(len(judgements) != count for judgements in per_judge):
        raise ValueError(f"judges judged different numbers of samples: {[len(j) for j in per_judge]}")
    rewards = [0.0] * count
    invalid = [0] * count
    for judgements, weight in zip(per_judge, weights, strict=True):
        for i, judgement in enumerate(judgements):
            rewards[i] += weight * judgement_reward(judgement, mode)
            invalid[i] += judgement.verdict == Verdict.INVALID
    return rewards, invalid
