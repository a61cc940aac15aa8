"""What the learner trains and what every model-holding actor receives: the unified model as one module.

`PolicyModule` registers the unified model's torch module as its only submodule, so parameter names are
identical in the learner (inside DeepSpeed), the rollout actors and the live self-judges: a weight push is
a name-for-name copy. It reaches the model only through the `UnifiedModel` interface. Its forward is the teacher-forced image log-prob pass. The loss functions below are module-level
(picklable) and are what the generic `LearnerWorker` calls with its engine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from rayunify.algos import dpo_objective, sft_objective
from rayunify.algos.grpo import grpo_loss
from rayunify.models.base import UnifiedModel
from rayunify.types import Geometry


class PolicyModule(torch.nn.Module):
    def __init__(self, unified: UnifiedModel, keep_reference_copy: bool = False):
        super().__init__()
        # Registered as "janus" (the first family's name): weight pushes and checkpoints copy by these names.
        self.add_module("janus", unified.module())
        object.__setattr__(self, "unified", unified)  # a plain attribute: not a second registration
        # Full fine-tuning keeps a frozen copy for reference log-probs (TRL's ref_model), unregistered so it
        # is neither trained nor pushed; LoRA's reference is the adapter disabled, no copy.
        reference_copy = unified.make_reference_copy() if keep_reference_copy else None
        object.__setattr__(self, "_reference_copy", reference_copy)

    def forward(
        self, prompts: list[str], image_tokens: torch.Tensor, geometry: Geometry, guidance_scale: float,
        commit_steps: torch.Tensor | None = None,
    ):  # fmt: skip
        return self.unified.image_logprobs(
            prompts, image_tokens, geometry=geometry, guidance_scale=guidance_scale, commit_steps=commit_steps
        )

    def reference(self) -> contextlib.AbstractContextManager[None]:
        return self.unified.reference(self._reference_copy)


@dataclass
class TrainBatch:
    """One rank's share of a step: prompts and image tokens (chosen / rejected for DPO, accepted for SFT,
    the groups' images for GRPO)."""

    prompts: list[str]
    chosen: torch.Tensor  # (B, T)
    rejected: torch.Tensor | None = None  # (B, T), DPO only
    ref_chosen: torch.Tensor | None = None  # (B,), DPO only
    ref_rejected: torch.Tensor | None = None
    geometry: Geometry = "conditional"
    guidance_scale: float = 5.0
    old_logp: torch.Tensor | None = None  # (B, T) GRPO: behaviour log-probs recorded at generation
    ref_logp: torch.Tensor | None = None  # (B, T) GRPO with beta > 0: the reference's per-token log-probs
    advantages: torch.Tensor | None = None  # (B,) GRPO: group-relative advantages
    chosen_steps: torch.Tensor | None = None  # (B, T) Show-o: the commit step of each chosen token (else None)
    rejected_steps: torch.Tensor | None = None  # (B, T) the same for the rejected images (DPO)


def _sequence_logps(
    engine: Any, prompts: list[str], tokens: torch.Tensor, batch: TrainBatch, steps: torch.Tensor | None
) -> torch.Tensor:
    return engine(prompts, tokens, batch.geometry, batch.guidance_scale, steps).sum(-1)


def _both_steps(batch: TrainBatch) -> torch.Tensor | None:
    """Chosen then rejected commit steps, as the one forward over both takes them (None: the family has none)."""
    if batch.chosen_steps is None or batch.rejected_steps is None:
        return None
    return torch.cat([batch.chosen_steps, batch.rejected_steps])


def dpo_loss_fn(
    engine: Any,
    batch: TrainBatch,
    *,
    beta: float,
    loss_type: str,
    label_smoothing: float,
    nll_weight: float,
    nll_reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Chosen and rejected go through one forward (2B rows): one pass of the model per step."""
    assert batch.rejected is not None and batch.ref_chosen is not None and batch.ref_rejected is not None
    n = len(batch.prompts)
    logps = _sequence_logps(engine, batch.prompts * 2, torch.cat([batch.chosen, batch.rejected]), batch, _both_steps(batch))
    return dpo_objective(
        logps[:n],
        logps[n:],
        batch.ref_chosen.to(logps),
        batch.ref_rejected.to(logps),
        batch.chosen.shape[1],
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        nll_weight=nll_weight,
        nll_reduction=nll_reduction,
    )


def sft_loss_fn(engine: Any, batch: TrainBatch, nll_reduction: str = "mean") -> tuple[torch.Tensor, dict[str, float]]:
    logps = _sequence_logps(engine, batch.prompts, batch.chosen, batch, batch.chosen_steps)
    return sft_objective(logps, batch.chosen.shape[1], nll_reduction)


def grpo_loss_fn(
    engine: Any, batch: TrainBatch, *, clip_eps: float, clip_eps_high: float | None, beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped per-token ratio against the behaviour log-probs (+ beta · k3 to the reference), mean over
    the batch's images."""
    assert batch.old_logp is not None and batch.advantages is not None
    logp = engine(batch.prompts, batch.chosen, batch.geometry, batch.guidance_scale, batch.chosen_steps)
    ref = None if batch.ref_logp is None else batch.ref_logp.to(logp)
    per_sequence, metrics = grpo_loss(
        logp, batch.old_logp.to(logp), ref, batch.advantages.to(logp),
        clip_eps=clip_eps, clip_eps_high=clip_eps_high, beta=beta,
    )  # fmt: skip
    return per_sequence.mean(), metrics


@torch.no_grad()
def reference_token_logps_fn(engine: Any, batch: TrainBatch) -> list[list[float]]:
    """GRPO's per-token reference log-probs (B, T) of the batch's images, in the batch's geometry."""
    module: PolicyModule = engine.module if hasattr(engine, "module") else engine
    with module.reference():
        logps = module(batch.prompts, batch.chosen, batch.geometry, batch.guidance_scale, batch.chosen_steps)
    return logps.float().cpu().tolist()


@torch.no_grad()
def reference_logps_fn(engine: Any, batch: TrainBatch) -> tuple[list[float], list[float]]:
    """Summed reference log-probs of chosen and rejected images, in the batch's geometry."""
    assert batch.rejected is not None
    module: PolicyModule = engine.module if hasattr(engine, "module") else engine
    n = len(batch.prompts)
    with module.reference():
        tokens = torch.cat([batch.chosen, batch.rejected])
        logps = _sequence_logps(module, batch.prompts * 2, tokens, batch, _both_steps(batch))
    return logps[:n].tolist(), logps[n:].tolist()
