"""What a run's inputs are checked against before any actor starts: the model directory, the prompt files,
each judge against the prompts it will score, and the resources the actors ask for.

The dry run prints these checks; the driver runs them first, so a missing directory or a judge that cannot
score the prompts is one clear line (exit 2), not a Ray worker's traceback minutes into a run. No Ray and no
weights here: models are read as configs (and built on the meta device where sizes are wanted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rayunify import builtins
from rayunify.checkpoints import check_model_dir, has_weights
from rayunify.config import Config
from rayunify.prompts import PromptSet, load_prompt_set
from rayunify.sizing import RoleRequest, placement_problems
from rayunify.types import Prompt


class UserError(ValueError):
    """A problem with the user's input (a file, a directory, a value), said in one line."""


@dataclass(frozen=True)
class ModelCheck:
    description: str
    config: Any | None  # JanusConfig (Show-o: ShowoArch) where the architecture is known without loading weights


def check_model(cfg: Config, need_weights: bool) -> ModelCheck:
    """The model a run names: a built-in (name known), an architecture without weights (`builtin:*-shape`,
    dry runs only), or a directory with config.json and a tokenizer (and weights, unless a dry run)."""
    try:
        return _check_model(cfg, need_weights)
    except UserError:
        raise
    except (OSError, ValueError) as err:  # the registry's and transformers' own messages name the problem
        raise UserError(str(err)) from None


def _check_model(cfg: Config, need_weights: bool) -> ModelCheck:
    if cfg.model.type == "showo":
        from rayunify.models.showo.dryrun import check_showo_model

        return ModelCheck(*check_showo_model(cfg, need_weights))
    path = cfg.model.path
    arch = builtins.builtin_architecture(path)
    if arch is not None:
        if type(arch).__name__ == "ShowoArch":
            raise UserError(f"model.path={path!r} is a Show-o architecture: set model.type=showo")
        if need_weights:
            builtins.builtin_model(path)  # raises: an architecture alone cannot train
        from rayunify.models.janus.factory import janus_config

        return ModelCheck(f"{path} (architecture only, random weights on the meta device)", janus_config(arch))
    if builtins.is_builtin(path):
        entry = builtins.builtin_model(path)
        return ModelCheck(f"{path}: {entry.description}", None)
    directory = check_model_dir(path, family=cfg.model.type, complete=need_weights)
    from transformers import JanusConfig

    note = "weights present" if has_weights(directory) else "no weights: enough for a dry run"
    return ModelCheck(f"{directory} ({note})", JanusConfig.from_dict(json.loads((directory / "config.json").read_text())))


def check_prompt_lengths(cfg: Config, prompts: Sequence[Prompt]) -> str:
    """Every prompt against the model's text slot and context (`rayunify.models.prompt_fit`); one line. A
    built-in that would have to be trained first, and an architecture without a tokenizer, are checked when the
    run has the model (`Trainer` checks again after resolving the path, before any actor starts)."""
    path = cfg.model.path
    if builtins.builtin_architecture(path) is not None:
        return "prompt lengths: not checked (an architecture has no tokenizer; the run checks its checkpoint's)"
    directory = builtins.existing_model_dir(path, seed=cfg.model.builtin_seed)
    if directory is None:
        return f"prompt lengths: checked when the run has built {path}"
    from rayunify.models.prompt_fit import PromptTooLong, check_prompt_fit

    tokenizer_path = getattr(cfg.model, "tokenizer_path", None)
    try:
        return check_prompt_fit(cfg.model.type, directory, [p.text for p in prompts], tokenizer_path)
    except PromptTooLong as err:
        raise UserError(f"prompts: {err} (model.path={path})") from None
    except (OSError, ValueError) as err:  # a tokenizer or config that does not load: the model check's business
        raise UserError(f"prompt lengths: cannot read the tokenizer of {directory}: {err}") from None


def check_prompts(cfg: Config) -> PromptSet:
    try:
        return load_prompt_set(cfg.prompts)
    except (OSError, ValueError) as err:
        raise UserError(f"prompts: {err}") from None


def judge_roles(cfg: Config) -> list[tuple[str, Any]]:
    """Every judge the run loads: the training judge, GRPO's reward judges, and `guard.reference`, which is
    also the evaluations' referee, so it is loaded (and checked) even with the guard off."""
    roles = [("judge", cfg.judge)]
    for index, term in enumerate(getattr(cfg.algorithm, "rewards", None) or []):
        roles.append((f"algorithm.rewards[{index}]", term.judge))
    roles.append(("guard.reference" if cfg.guard.enabled else "guard.reference (the evaluations' referee)", cfg.guard.reference))
    return roles


def check_judges(cfg: Config, prompts: Sequence[Prompt], complete: bool = True) -> list[str]:
    """Each judge checked against the prompts it will score; one line each. `complete=False` (dry runs): a
    referee's model directory needs no weights yet."""
    return [f"{role}: {check_judge(role, judge_cfg, prompts, complete)}" for role, judge_cfg in judge_roles(cfg)]


def check_judge(role: str, judge_cfg: Any, prompts: Sequence[Prompt], complete: bool = True) -> str:
    kind = judge_cfg.type
    if kind == "noisy":
        return f"noisy over {check_judge(role + '.base', judge_cfg.base, prompts, complete)}"
    checker = builtins.JUDGE_PROMPT_CHECKS.get(kind)
    if checker is not None:
        problem = checker(prompts)
        if problem:
            raise UserError(f"{role}: {kind} cannot score these prompts: {problem}")
        return f"{kind} (built in)"
    if kind == "self":
        return "the model's own understanding"
    try:
        return _check_external_judge(judge_cfg, complete)
    except (OSError, ValueError, ImportError, AttributeError, TypeError) as err:
        raise UserError(f"{role}: {err}") from None


def _check_external_judge(judge_cfg: Any, complete: bool) -> str:
    from rayunify.judges.base import load_callable
    from rayunify.judges.vllm import check_python

    if judge_cfg.type == "python":
        load_callable(judge_cfg.import_path)
        return f"python:{judge_cfg.import_path} (imports)"
    if judge_cfg.type == "hf_vlm":
        return f"hf_vlm {check_model_dir(judge_cfg.path, role='hf_vlm judge', complete=complete)}"
    if judge_cfg.type == "vllm":
        return f"vllm server at {judge_cfg.url}" if judge_cfg.url else f"vllm started with {check_python(judge_cfg.python)}"
    raise ValueError(f"judge.type={judge_cfg.type!r} has no check")


def role_requests(cfg: Config) -> list[RoleRequest]:
    r, j, lr = cfg.rollout, cfg.judge_actors, cfg.learner
    return [
        RoleRequest("rollout", r.num_actors, r.num_cpus, r.num_gpus, r.resources),
        RoleRequest("judge", j.num_actors, j.num_cpus, j.num_gpus, j.resources),
        RoleRequest("learner", lr.num_ranks, lr.num_cpus, lr.num_gpus, lr.resources),
    ]


def local_cluster_cpus(cfg: Config) -> int:
    """The logical CPUs a local cluster declares: `ray.num_cpus`, else enough for every actor and at least
    this machine's usable cores (actors limit their own threads, so asking for more than the cores is fine)."""
    from rayunify.machine import usable_cpus

    needed = math.ceil(sum(r.count * r.cpus for r in role_requests(cfg)))
    return cfg.ray.num_cpus or max(usable_cpus(), needed)


def local_nodes(cfg: Config) -> list[dict[str, float]]:
    """The one node of the local cluster the driver would start: its logical CPUs and this machine's GPUs."""
    from rayunify.machine import gpus

    return [{"CPU": float(local_cluster_cpus(cfg)), "GPU": float(len(gpus()))}]


def check_algorithm(cfg: Config) -> None:
    """GRPO learns from groups drawn by the current policy: it needs the online loop."""
    if cfg.algorithm.type == "grpo" and cfg.trainer.mode != "online":
        raise UserError("algorithm.type=grpo trains on freshly drawn groups: set trainer.mode=online")


def check_run(cfg: Config) -> PromptSet:
    """Everything a training run reads, checked before any actor starts; returns its prompt set."""
    check_algorithm(cfg)
    check_model(cfg, need_weights=True)
    prompt_set = check_prompts(cfg)
    check_judges(cfg, prompt_set.train + prompt_set.eval)
    return prompt_set


def check_cluster(cfg: Config, nodes: list[dict[str, float]], roles: Sequence[str] | None = None) -> None:
    """The actors (of `roles`; None: all) against the nodes of the cluster the job joined: a placement that can
    never be met is an error now, not a wait without end."""
    requests = [r for r in role_requests(cfg) if roles is None or r.role in roles]
    problems = placement_problems(requests, nodes)
    if problems:
        raise UserError("; ".join(problems))


def judge_holds_model(cfg: Config) -> bool:
    """Whether the judge actors hold a copy of the policy model (its own judge, possibly wrapped)."""
    base = getattr(cfg.judge, "base", cfg.judge)
    return base.type == "self"
