"""Training objectives, as pure functions of per-sequence image-token log-probs (torch only).

The learner calls one of two objectives, chosen by the config's algorithm:
  sft_objective(policy_logps, num_tokens) -> (loss, metrics)
      the paper's SFT: per-token NLL of every accepted image.
  dpo_objective(policy_c, policy_r, ref_c, ref_r, num_tokens_c, *, beta, loss_type, label_smoothing,
                nll_weight) -> (loss, metrics)
      the paper's DPO (+ NLL on the chosen image), with the sigmoid / robust / ipo / hinge variants.
Call check_finite(loss, name, step) before backward().
"""

from rayunify.algos.losses import (
    LOSS_TYPES,
    check_finite,
    dpo_loss,
    dpo_metrics,
    dpo_objective,
    nll_loss,
    sft_objective,
)

__all__ = [
    "LOSS_TYPES",
    "check_finite",
    "dpo_loss",
    "dpo_metrics",
    "dpo_objective",
    "nll_loss",
    "sft_objective",
]
