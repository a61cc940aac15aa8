"""What the driver (and `--dry-run`) need to build the learner from a config: the model factory, the loss,
the DeepSpeed config and the `LearnerGroup` itself. Kept apart from `learner.py`, which is generic over the
model and knows nothing of configs; importing this module imports neither ray nor deepspeed.
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, Any

from rayunify.config import Config

if TYPE_CHECKING:
    from rayunify.actors.learner_group import LearnerGroup


def make_policy(config: dict[str, Any], keep_reference_copy: bool):
    """The learner's model factory: the unified model as a PolicyModule, and which parameters train."""
    from rayunify.actors.policy import PolicyModule
    from rayunify.models import build_model

    cfg = Config.model_validate(config)
    unified = build_model(cfg.model)
    module = PolicyModule(unified, keep_reference_copy=keep_reference_copy)
    return module, {name for name, p in module.named_parameters() if p.requires_grad}


def learner_loss(cfg: Config):
    from rayunify.actors.policy import dpo_loss_fn, grpo_loss_fn, sft_loss_fn

    a = cfg.algorithm
    if a.type == "sft":
        return partial(sft_loss_fn, nll_reduction=a.nll_reduction)
    if a.type == "grpo":
        return partial(grpo_loss_fn, clip_eps=a.clip_eps, clip_eps_high=a.clip_eps_high, beta=a.beta)
    return partial(
        dpo_loss_fn, beta=a.beta, loss_type=a.loss_type, label_smoothing=a.label_smoothing,
        nll_weight=a.nll_weight, nll_reduction=a.nll_reduction,
    )  # fmt: skip


def keeps_reference(cfg: Config) -> bool:
    """DPO always scores against a reference; GRPO only when its KL term weighs something (beta > 0)."""
    a = cfg.algorithm
    return a.type == "dpo" or (a.type == "grpo" and a.beta > 0)


def deepspeed_config(cfg: Config) -> dict[str, Any]:
    learner = cfg.learner
    per_rank = max(1, math.ceil(learner.batch_size / learner.num_ranks))
    return {
        "train_micro_batch_size_per_gpu": per_rank,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": learner.grad_clip,
        "zero_optimization": {"stage": learner.zero_stage},
        "bf16": {"enabled": learner.bf16},
    }


def build_learner(cfg: Config) -> LearnerGroup:
    """The configured learner ranks, set up and ready to train (with a frozen reference copy when the
    algorithm needs a reference and full fine-tuning cannot get one by switching LoRA off)."""
    from rayunify.actors.learner_group import LearnerGroup

    return LearnerGroup(
        cfg.learner.num_ranks,
        partial(make_policy, cfg.model_dump(mode="json"), keep_reference_copy=keeps_reference(cfg)),
        learner_loss(cfg),
        deepspeed_config(cfg),
        optimizer_kwargs={"lr": cfg.learner.lr, "weight_decay": cfg.learner.weight_decay},
        num_cpus_per_rank=cfg.learner.num_cpus,
        num_gpus_per_rank=cfg.learner.num_gpus,
        resources_per_rank=cfg.learner.resources,
        seed=cfg.trainer.seed,
    )
