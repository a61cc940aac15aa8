"""Typed records that travel between rayunify's parts (rollout, judge, buffer, learner).

Pure: imports neither torch, ray nor deepspeed, so every part (and every test) can use them. Image tokens
are numpy arrays: Ray moves them through the object store without a copy.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

# How image-token log-probs are computed. "conditional": the prompt-conditioned logits alone.
# "cfg": the guided logits uncond + s * (cond - uncond), i.e. the distribution sampling actually used.
Geometry = Literal["conditional", "cfg"]


@dataclass(frozen=True)
class Prompt:
    """One text-to-image prompt. `spec` is the machine-checkable description where one exists."""

    prompt_id: str
    text: str
    category: str = "default"
    spec: dict[str, Any] | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """How an image was sampled; stored with every sample so log-probs can be recomputed the same way."""

    guidance_scale: float = 5.0
    temperature: float = 1.0
    top_k: int | None = None
    geometry: Geometry = "conditional"


@dataclass
class Sample:
    """One generated image (as VQ tokens) for one prompt, with the policy version that drew it."""

    sample_id: str
    prompt: Prompt
    image_tokens: np.ndarray  # (num_image_tokens,) int64
    policy_version: int
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    # GRPO: per-token log-probs (num_image_tokens,) float32 of these tokens under the policy that drew them,
    # in the distribution the learner scores (geometry, guidance): the denominator of the PPO ratio.
    behaviour_logprobs: np.ndarray | None = None
    # Show-o: the sampling step (0-based) that committed each image token, (num_image_tokens,) int64; its
    # `trajectory` estimator replays that path. None for families that draw tokens in order (Janus).
    commit_steps: np.ndarray | None = None


class Verdict(enum.IntEnum):
    REJECT = 0
    ACCEPT = 1
    INVALID = -1  # the judge's answer could not be parsed: counted, never a crash


@dataclass(frozen=True)
class Judgement:
    """A judge's view of one (image, prompt): a parsed binary verdict and a soft score P("1") in [0, 1]."""

    verdict: Verdict
    score: float
    answer: str = ""
    judge: str = "self"

    @property
    def accepted(self) -> bool:
        return self.verdict == Verdict.ACCEPT


@dataclass
class JudgedSample:
    sample: Sample
    judgement: Judgement
    reference: Judgement | None = None  # the co-degradation guard's reference judge, when it looked
    reward: float | None = None  # GRPO: the (weighted) judges' reward; INVALID answers count 0
    invalid_rewards: int = 0  # GRPO: how many reward judges answered INVALID on this sample


@dataclass
class PreferencePair:
    """A DPO pair from one prompt's group: the most positive-like accepted vs the most negative-like rejected."""

    prompt: Prompt
    chosen: Sample
    rejected: Sample
    chosen_score: float
    rejected_score: float
    ref_chosen_logp: float | None = None  # reference log-probs, computed once when the pair is made
    ref_rejected_logp: float | None = None
    created_step: int = 0

    @property
    def policy_version(self) -> int:
        return min(self.chosen.policy_version, self.rejected.policy_version)


class Judge(Protocol):
    """Anything that labels images against their prompts (`rayunify.judges.base.build_judge` makes one)."""

    name: str

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]: ...
