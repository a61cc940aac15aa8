"""Algorithm sections: DPO (+NLL), SFT and GRPO."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from rayunify.config.base import Strict, variants
from rayunify.config.judges import JudgeConfig

_NLL_REDUCTION: Any = Field(
    "mean",
    description="The chosen/accepted images' NLL: mean per image token (the default), or sum over an image's "
    "tokens (the scale of DPO's summed log-probs, so its weight does not depend on the image's token count).",
)


class DPOConfig(Strict):
    type: Literal["dpo"] = "dpo"
    beta: float = Field(0.1, gt=0, description="DPO's β: the strength of the implicit KL to the reference.")
    loss_type: Literal["sigmoid", "robust", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid: the paper's DPO; robust (label-noise robust), ipo and hinge: the TRL variants."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="cDPO's ε: the chosen image wins with probability 1 − ε (sigmoid, robust)."
    )
    nll_weight: float = Field(1.0, ge=0, description="Weight of the NLL term on the chosen image (the paper's).")
    nll_reduction: Literal["mean", "sum"] = _NLL_REDUCTION
    reference: Literal["stored", "recompute"] = Field(
        "stored", description="stored: reference log-probs computed once when the pair is made."
    )


class SFTConfig(Strict):
    type: Literal["sft"] = "sft"
    nll_reduction: Literal["mean", "sum"] = _NLL_REDUCTION


class RewardTermConfig(Strict):
    """One judge's share of GRPO's reward: the reward is the weighted sum of every term's score or verdict."""

    judge: JudgeConfig = Field(..., description="Any judge, configured as the top-level `judge:` is.")
    weight: float = Field(1.0, description="Multiplies this judge's reward (negative: a penalty).")

    @field_validator("weight")
    @classmethod
    def _weight_counts(cls, value: float) -> float:
        if not math.isfinite(value) or value == 0:
            raise ValueError("weight must be a finite nonzero number (drop a judge rather than weigh it 0)")
        return value


class GRPOConfig(Strict):
    """Group-relative policy optimisation on the online loop: each prompt's samples_per_prompt images form a group."""

    type: Literal["grpo"] = "grpo"
    reward: Literal["score", "verdict"] = Field(
        "score", description="score: the judge's soft score P(yes); verdict: 1 if it accepts, else 0."
    )
    rewards: list[RewardTermConfig] | None = Field(
        None, description="A weighted sum of several judges' rewards; None: the training judge (`judge:`) alone."
    )
    scale_rewards: bool = Field(
        True, description="Divide each group's centred rewards by its std (+1e-4); false: r − mean_group only."
    )
    clip_eps: float = Field(0.2, gt=0, lt=1, description="Per-token ratio clipped to [1 − clip_eps, 1 + clip_eps_high].")
    clip_eps_high: float | None = Field(
        None, description="Upper clip width (>= clip_eps, e.g. 0.28 for DAPO's clip-higher); None: clip_eps."
    )
    beta: float = Field(0.0, ge=0, description="Weight of the k3 KL estimate to the reference; 0: no reference model kept.")
    ppo_epochs: int = Field(1, gt=0, description="Passes over each step's images (ratios against the drawing policy).")
    mini_batch_size: int | None = Field(
        None, gt=0, description="Images per optimizer step within a pass; None: the step's whole batch at once."
    )

    @model_validator(mode="after")
    def _consistent(self) -> GRPOConfig:
        if self.clip_eps_high is not None and not (
            math.isfinite(self.clip_eps_high) and self.clip_eps_high >= self.clip_eps
        ):
            raise ValueError(
                f"algorithm.clip_eps_high={self.clip_eps_high} must be >= algorithm.clip_eps={self.clip_eps} "
                "(or null for a symmetric clip)"
            )
        if self.rewards is not None and not self.rewards:
            raise ValueError(
                "algorithm.rewards is an empty list: give at least one {judge, weight}, or null to reward with `judge:`"
            )
        return self


if TYPE_CHECKING:
    AlgorithmConfig = DPOConfig | SFTConfig | GRPOConfig
else:
    AlgorithmConfig = variants(DPOConfig, SFTConfig, GRPOConfig)

