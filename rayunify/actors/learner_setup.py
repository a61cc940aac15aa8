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
    unified = build_model(cfg.model, seed=cfg.trainer.seed)
    module = PolicyModule(unified, keep_reference_copy=keep_reference_copy)
    return module, {name for name, p in module.named_parameters() if p.requires_grad}


def learner_loss(cfg: Config):
    from rayunify.actors.policy import dpo_loss_fn, sft_loss_fn

    a = cfg.algorithm
    if a.type == "sft":
        return sft_loss_fn
    return partial(dpo_loss_fn, beta=a.beta, loss_type=a.loss_type, label_smoothing=a.label_smoothing, nll_weight=a.nll_weight)


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
    """The configured learner ranks, set up and ready to train (DPO keeps a frozen reference copy)."""
    from rayunify.actors.learner_group import LearnerGroup

    dpo = cfg.algorithm.type == "dpo"
    return LearnerGroup(
        cfg.learner.num_ranks,
        partial(make_policy, cfg.model_dump(mode="json"), keep_reference_copy=dpo),
        learner_loss(cfg),
        deepspeed_config(cfg),
        optimizer_kwargs={"lr": cfg.learner.lr, "weight_decay": cfg.learner.weight_decay},
        num_cpus_per_rank=cfg.learner.num_cpus,
        num_gpus_per_rank=cfg.learner.num_gpus,
        seed=cfg.trainer.seed,
    )
