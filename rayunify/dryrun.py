"""`rayunify train --dry-run`: build every part of a run without weights, and say what would run.

Catches what a config check alone cannot: a model directory that is missing or incomplete, a judge import
path that does not resolve, a prompt file with a bad line, a DeepSpeed config that does not fit the batch.
The model is instantiated on the meta device, so a 7B config is checked in seconds on a laptop.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from rayunify.config import Config


def dry_run(cfg: Config) -> int:
    lines = [f"config OK: {cfg.trainer.mode} {cfg.algorithm.type}, {cfg.trainer.sync}, judge={cfg.judge.type}"]
    try:
        for summary in (_model_summary, _judge_summary, _prompt_summary, _learner_summary):
            lines.append(summary(cfg))
    except (OSError, ValueError, ImportError) as err:
        # A missing model directory or a bad prompt line is the answer a dry run exists to give: say it
        # plainly (what was checked so far, then the problem), not as a traceback.
        print("\n".join(lines))
        print(f"dry run FAILED: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    print("dry run OK: every part builds")
    return 0


def _model_summary(cfg: Config) -> str:
    import torch
    from transformers import JanusConfig, JanusForConditionalGeneration

    path = cfg.model.path
    if path.startswith("builtin:"):
        return f"model: {path} (built and cached on first use)"
    from rayunify.checkpoints import check_model_dir

    directory = check_model_dir(path, family="janus")
    config = JanusConfig.from_dict(json.loads((directory / "config.json").read_text()))
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    lm = sum(p.numel() for p in model.model.language_model.parameters())
    trainable = "LoRA adapters on" if cfg.model.trainable == "lora" else "all of"
    return (
        f"model: {directory} — {total / 1e9:.2f} B parameters, language model {lm / 1e9:.2f} B "
        f"({trainable} it trains), {config.vision_config.num_image_tokens} image tokens, dtype {cfg.model.dtype}"
    )


def _judge_summary(cfg: Config) -> str:
    from rayunify.judges.base import build_judge

    def no_model():
        raise RuntimeError("needs the model")  # a self-judge is the model itself: checked above

    described = []
    for role, judge_cfg in (("judge", cfg.judge), ("guard reference", cfg.guard.reference)):
        if _needs_model(judge_cfg):
            described.append(f"{role}: {judge_cfg.type} (the model's own understanding)")
            continue
        judge = build_judge(judge_cfg, no_model)
        described.append(f"{role}: {judge.name}")
    return "; ".join(described)


def _needs_model(judge_cfg) -> bool:
    base = getattr(judge_cfg, "base", judge_cfg)
    return base.type == "self"


def _prompt_summary(cfg: Config) -> str:
    from rayunify.prompts import load_prompts

    train, evaluation = load_prompts(cfg.prompts)
    categories = sorted({p.category for p in train})
    return f"prompts: {len(train)} train, {len(evaluation)} eval, categories {', '.join(categories)}"


def _learner_summary(cfg: Config) -> str:
    from rayunify.train import deepspeed_config

    ds = deepspeed_config(cfg)
    per_step = cfg.trainer.prompts_per_step * cfg.sampling.samples_per_prompt
    gpus = cfg.rollout.num_actors * cfg.rollout.num_gpus + cfg.judging.num_actors * cfg.judging.num_gpus
    gpus += cfg.learner.num_ranks * cfg.learner.num_gpus
    return (
        f"learner: {cfg.learner.num_ranks} rank(s), ZeRO-{ds['zero_optimization']['stage']}, "
        f"micro-batch {ds['train_micro_batch_size_per_gpu']} per rank; {per_step} images per online step; "
        f"{math.ceil(gpus)} GPU(s) requested; outputs under {Path(cfg.trainer.output_dir) / cfg.trainer.run_name}"
    )
