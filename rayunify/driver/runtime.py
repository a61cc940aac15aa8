"""Ray start-up and the actors of a run, built in a known order and torn down in reverse."""

from __future__ import annotations

import math
import os
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from rayunify.config import Config


class ActorDied(Exception):
    """Stands for Ray's actor-death errors (one type for the collector to catch, whatever the call)."""


def ray_get(ref: Any) -> Any:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as err:
        raise ActorDied(str(err)) from err
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ray.exceptions.RayActorError):
            raise ActorDied(str(err)) from err
        raise


def init_ray(cfg: Config) -> bool:
    """Connect to a cluster (`ray.address`, or RAY_ADDRESS inside `ray job submit`) or start a local one.
    Returns whether we started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    needed = (
        cfg.rollout.num_actors * cfg.rollout.num_cpus
        + cfg.judging.num_actors * cfg.judging.num_cpus
        + cfg.learner.num_ranks * cfg.learner.num_cpus
    )
    # Logical CPUs: actors limit their own threads, so asking for more than the cores is fine locally.
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, math.ceil(needed))
    # A private loopback cluster for this run: no token file, no usage report, never someone else's cluster.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_level="ERROR")
    return True


@dataclass
class Actors:
    """Every actor of a run: the training-data service, rollout and judge groups, the learner ranks."""

    data: Any  # the TrainingData actor (replay buffer, pairing, curriculum)
    rollout: Any  # ActorGroup of RolloutWorker
    judges: Any  # ActorGroup of JudgeWorker
    learner: Any  # LearnerGroup
    live_judges: bool  # the judges are the model itself with live weights: they take pushes too

    def receivers(self) -> list[Any]:
        """Who takes weight pushes now (a restart replaces an actor in its group's list)."""
        return self.rollout.actors + (self.judges.actors if self.live_judges else [])


def start_actors(cfg: Config, train_prompts: list[Any], stack: ExitStack) -> Actors:
    """Start Ray if needed and build every actor; each one's teardown goes on `stack` as soon as it exists."""
    import ray

    from rayunify.actors.group import ActorGroup
    from rayunify.actors.learner_setup import build_learner
    from rayunify.actors.workers import JudgeWorker, RolloutWorker
    from rayunify.builtins import PROMPT_SOURCES
    from rayunify.replay import TrainingData

    if init_ray(cfg):
        stack.callback(ray.shutdown)
    as_dict, cur = cfg.model_dump(mode="json"), cfg.curriculum
    source = PROMPT_SOURCES.get(cfg.prompts.source)
    levels = source.category_order() if source else None  # None: the prompts' own categories, sorted
    data = (
        ray.remote(TrainingData)
        .options(num_cpus=0)
        .remote(
            train_prompts, cur.type, cur.replay_at, cur.priority_alpha, cur.admit_threshold, cur.smoothing, levels,
            seed=cfg.trainer.seed,
        )
    )  # fmt: skip
    groups = []
    for cls, role, name in ((RolloutWorker, cfg.rollout, "rollout"), (JudgeWorker, cfg.judging, "judge")):
        group = ActorGroup(
            cls, role.num_actors, num_cpus=role.num_cpus, num_gpus=role.num_gpus,
            kwargs={"config": as_dict, "num_cpus": role.num_cpus}, name=name,
        )  # fmt: skip
        stack.callback(group.kill)
        groups.append(group)
    learner = build_learner(cfg)
    stack.callback(learner.kill)
    for group in groups:
        group.wait_ready()
    base = getattr(cfg.judge, "base", cfg.judge)  # a wrapper judge (e.g. noisy) names the judge it wraps
    return Actors(data, groups[0], groups[1], learner, live_judges=base.type == "self" and base.weights == "live")


def make_progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="rayunify", unit="step", dynamic_ncols=True)
