"""`rayunify train --dry-run`: check every part of a run without weights and say what would run.

Runs the driver's preflight checks (model directory or architecture, prompt files with their report, prompt
lengths against the model's text slot and context, each judge the run loads against the prompts it will
score, the actors' resources against this machine) and adds what only a dry run shows: the model's size and a memory estimate per GPU at the configured batch sizes. A model
directory needs only config.json and its tokenizer; `builtin:janus-pro-1b-shape` / `-7b-shape` need nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rayunify import preflight
from rayunify.actors.learner_setup import deepspeed_config, keeps_reference
from rayunify.config import Config
from rayunify.sizing import (
    ModelShape,
    RunShape,
    describe,
    fit_problem,
    learner_memory,
    placement_problems,
    role_tenants,
    rollout_memory,
    worst_gpu,
)


def dry_run(cfg: Config, allow_over_memory: bool = False) -> int:
    lines = [f"config OK: {cfg.trainer.mode} {cfg.algorithm.type}, {cfg.trainer.sync}, judge={cfg.judge.type}"]
    try:
        preflight.check_algorithm(cfg)
        model = preflight.check_model(cfg, need_weights=False)
        lines.append(f"model: {model.description}")
        prompt_set = preflight.check_prompts(cfg)
        lines += prompt_set.describe()
        lines.append(preflight.check_prompt_lengths(cfg, prompt_set.train + prompt_set.eval))
        lines += preflight.check_judges(cfg, prompt_set.train + prompt_set.eval, complete=False)
        lines += _resources(cfg)
        lines.append(_learner_summary(cfg))
        if model.config is not None:
            lines += _model_sizes(cfg, model.config, allow_over_memory)
    except preflight.UserError as err:
        # What was checked so far, then the problem: the answer a dry run exists to give, not a traceback.
        print("\n".join(lines))
        print(f"dry run FAILED: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print("dry run OK: every part checks out")
    return 0


def _resources(cfg: Config) -> list[str]:
    """What this machine really has, then the actors against it as a local cluster. Only a note: a GPU recipe
    is often checked on a machine without GPUs before it goes to the cluster, and the run checks again against
    the cluster it joins (its nodes as Ray reports them), before any actor starts."""
    from rayunify.machine import this_machine

    machine = this_machine()
    requests = preflight.role_requests(cfg)
    declared = preflight.local_cluster_cpus(cfg)
    lines = [f"this machine: {machine.describe()}"]
    if cfg.ray.address:
        lines.append(f"cluster: ray.address={cfg.ray.address}; the run checks the actors against its nodes when it joins")
    if declared > machine.cpus:
        asked = sum(r.count * r.cpus for r in requests)
        lines.append(
            f"a local cluster would declare {declared} logical CPUs on these {machine.cpus} cores (the actors ask for "
            f"{asked:g}; each limits its threads to its num_cpus, so they share the cores)"
        )
    problems = placement_problems(requests, preflight.local_nodes(cfg))
    if problems:
        lines.append(f"resources: {_asked(requests)}; NOT on this machine as a local cluster: {'; '.join(problems)}")
    else:
        lines.append(f"resources: {_asked(requests)}; fits this machine as a local cluster")
    return lines


def _asked(requests: list[Any]) -> str:
    return ", ".join(f"{r.role} {r.count} x ({r.cpus:g} CPU, {r.gpus:g} GPU)" for r in requests)


def _learner_summary(cfg: Config) -> str:
    ds = deepspeed_config(cfg)
    per_step = cfg.trainer.prompts_per_step * cfg.sampling.samples_per_prompt
    return (
        f"learner: {cfg.learner.num_ranks} rank(s), ZeRO-{ds['zero_optimization']['stage']}, "
        f"micro-batch {ds['train_micro_batch_size_per_gpu']} per rank; {per_step} images per online step; "
        f"outputs under {Path(cfg.trainer.output_dir) / cfg.trainer.run_name}"
    )


def _model_sizes(cfg: Config, config: Any, allow_over_memory: bool = False) -> list[str]:
    shape = model_shape(cfg, config)
    run = run_shape(cfg, shape)
    trainable = "LoRA adapters" if cfg.model.trainable == "lora" else "the language model"
    learner, rollout = learner_memory(shape, run), rollout_memory(shape, run)
    lines = [] if cfg.model.type != "showo" else [_showo_note(cfg, config)]
    lines += [
        f"model size: {shape.total_params / 1e9:.2f} B parameters, language model "
        f"{shape.language_model_params / 1e9:.2f} B, {shape.trainable_params / 1e6:.1f} M trainable ({trainable}), "
        f"{shape.num_image_tokens} image tokens",
        f"memory per learner GPU (estimate): {describe(learner)}",
        f"memory per rollout GPU (estimate, {run.rollout_rows} rows a generate call): {describe(rollout)}",
    ]
    return lines + memory_verdict(cfg, shape, run, allow_over_memory)


def memory_verdict(cfg: Config, shape: ModelShape, run: RunShape, allow_over_memory: bool) -> list[str]:
    """The worst-packed GPU against `ray.gpu_memory_gib` (or this machine's GPU): over it is a user error
    naming the changes that would fit, unless `--allow-over-memory`."""
    holds = preflight.judge_holds_model(cfg)
    need, who = worst_gpu(role_tenants(cfg, shape, run, holds))
    if not who:
        return []  # no role on a GPU
    gib = cfg.ray.gpu_memory_gib or _local_gpu_gib()
    line = f"worst GPU (estimate + CUDA margin): {need:.1f} GiB, {who}"
    if gib is None:
        return [line + "; not checked: set ray.gpu_memory_gib to the GPUs' memory"]
    problem = fit_problem(cfg, shape, run, holds, gib)
    if problem is None:
        return [line + f"; fits {gib:g} GiB GPUs"]
    if allow_over_memory:
        return [line + f"; OVER {gib:g} GiB GPUs, going on (--allow-over-memory)"]
    raise preflight.UserError(f"memory: {problem}")


def _local_gpu_gib() -> float | None:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None


def _showo_note(cfg: Config, config: Any) -> str:
    from rayunify.models.showo.dryrun import estimator_note

    return estimator_note(cfg, config)


def model_shape(cfg: Config, config: Any) -> ModelShape:
    """Parameter counts from the architecture built on the meta device (no memory, no weights)."""
    import torch
    from transformers import JanusForConditionalGeneration

    if cfg.model.type == "showo":
        from rayunify.models.showo.dryrun import showo_model_shape

        return showo_model_shape(cfg, config)

    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    lm = model.model.language_model
    lm_params = sum(p.numel() for p in lm.parameters())
    text = config.text_config
    return ModelShape(
        total_params=sum(p.numel() for p in model.parameters()),
        language_model_params=lm_params,
        trainable_params=_lora_params(lm, cfg) if cfg.model.trainable == "lora" else lm_params,
        lora_params=_lora_params(lm, cfg),
        num_layers=text.num_hidden_layers,
        hidden_size=text.hidden_size,
        num_kv_heads=text.num_key_value_heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        num_image_tokens=config.vision_config.num_image_tokens,
        image_vocab=config.vq_config.num_embeddings,
        vision_hidden=config.vision_config.hidden_size,
        image_pixels=config.vision_config.image_size**2,
    )


def _lora_params(language_model: Any, cfg: Config) -> int:
    """rank x (in + out) for every linear layer the adapter targets."""
    import torch

    targets = set(cfg.model.lora.target_modules)
    return sum(
        cfg.model.lora.rank * (m.in_features + m.out_features)
        for name, m in language_model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
    )


def rollout_prompts_per_call(cfg: Config) -> int:
    """Prompts one rollout actor generates in one call: its share of a step (online) or of a build chunk
    (offline), in parts of at most `rollout.max_rows` rows."""
    online = cfg.trainer.mode == "online"
    batch = cfg.trainer.prompts_per_step if online else (cfg.trainer.build_chunk_prompts or cfg.prompts.n_train)
    share = -(-batch // cfg.rollout.num_actors)
    if cfg.rollout.max_rows is None:
        return share
    return min(share, max(1, cfg.rollout.max_rows // cfg.sampling.rows_per_prompt()))  # as workers.prompts_per_call


def _learner_micro_batch(cfg: Config, deepspeed_micro: int) -> int:
    """Items one rank's forward holds: GRPO's `learner.batch_size` counts prompt groups and trains in
    mini-batches of `algorithm.mini_batch_size` images (all of a step's images when unset)."""
    if cfg.algorithm.type != "grpo":
        return deepspeed_micro
    images = cfg.algorithm.mini_batch_size or cfg.learner.batch_size * cfg.sampling.samples_per_prompt
    return -(-images // cfg.learner.num_ranks)


def run_shape(cfg: Config, shape: ModelShape) -> RunShape:
    ds = deepspeed_config(cfg)
    dpo = cfg.algorithm.type == "dpo"
    reference = keeps_reference(cfg)
    prompts_per_actor = rollout_prompts_per_call(cfg)
    return RunShape(
        dtype=cfg.model.dtype,
        learner_bf16=cfg.learner.bf16,
        zero_stage=cfg.learner.zero_stage,
        learner_ranks=cfg.learner.num_ranks,
        micro_batch=_learner_micro_batch(cfg, ds["train_micro_batch_size_per_gpu"]),
        sequences_per_item=2 if dpo else 1,
        guided_logprobs=cfg.sampling.geometry == "cfg",
        keeps_reference_copy=reference and cfg.model.trainable != "lora",
        rollout_rows=prompts_per_actor * cfg.sampling.rows_per_prompt(),
        rollout_prompts=prompts_per_actor,
        judge_rows=cfg.judge_actors.batch_size or prompts_per_actor * cfg.sampling.samples_per_prompt,
    )
