"""Training objectives, as pure functions of image-token log-probs (torch only).

The learner calls one of these, chosen by the config's algorithm:
  sft_objective(policy_logps, num_tokens, nll_reduction) -> (loss, metrics)
      the paper's SFT: NLL (per token, or per image) of every accepted image.
  dpo_objective(policy_c, policy_r, ref_c, ref_r, num_tokens_c, *, beta, loss_type, label_smoothing,
                nll_weight, nll_reduction) -> (loss, metrics)
      the paper's DPO (+ NLL on the chosen image), with the sigmoid / robust / ipo / hinge variants.
  grpo_loss(logp, old_logp, ref_logp, advantages, clip_eps, clip_eps_high, beta) -> (loss_per_sequence, metrics)
      GRPO on per-token log-probs, with advantages from group_advantages(rewards, group_size) over the
      groups that informative_groups(rewards, group_size) keeps.
Call check_finite(loss, name, step) before backward().
"""

from rayunify.algos.grpo import group_advantages, grpo_loss, informative_groups
from rayunify.algos.losses import (
    LOSS_TYPES,
    NLL_REDUCTIONS,
    check_finite,
    dpo_loss,
    dpo_metrics,
    dpo_objective,
    nll_loss,
    sft_objective,
)

__all__ = [
    "LOSS_TYPES",
    "NLL_REDUCTIONS",
    "check_finite",
    "dpo_loss",
    "dpo_metrics",
    "dpo_objective",
    "group_advantages",
    "grpo_loss",
    "informative_groups",
    "nll_loss",
    "sft_objective",
]
