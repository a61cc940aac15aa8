"""Ray start-up and the actors of a run, built in a known order and torn down in reverse."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from rayunify.actors.cluster import init_ray, stop_ray
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


def is_actor_death(err: BaseException) -> bool:
    """Whether `err` says an actor died (directly, or as the cause of a task's error)."""
    import ray

    if isinstance(err, ActorDied | ray.exceptions.RayActorError):
        return True
    return isinstance(err, ray.exceptions.RayTaskError) and isinstance(err.cause, ray.exceptions.RayActorError)


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
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rayunify.actors.group import ActorGroup
    from rayunify.actors.learner_setup import build_learner
    from rayunify.actors.workers import JudgeWorker, RolloutWorker
    from rayunify.preflight import check_cluster
    from rayunify.prompts import curriculum_levels
    from rayunify.training_data import TrainingData

    if init_ray(cfg):
        stack.callback(stop_ray)
    check_cluster(cfg, [node["Resources"] for node in ray.nodes() if node["Alive"]])
    as_dict, cur = cfg.model_dump(mode="json"), cfg.curriculum
    # The run's data lives on the driver's node: a node lost elsewhere must not take it along (the driver's
    # node going ends the run anyway).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    data = (
        ray.remote(TrainingData)
        .options(num_cpus=0, scheduling_strategy=here)
        .remote(
            train_prompts, cur, curriculum_levels(train_prompts, cur.levels), seed=cfg.trainer.seed,
            keep_groups=cfg.algorithm.type == "grpo",
        )  # fmt: skip
    )
    groups = []
    for cls, role, name in ((RolloutWorker, cfg.rollout, "rollout"), (JudgeWorker, cfg.judge_actors, "judge")):
        group = ActorGroup(
            cls, role.num_actors, num_cpus=role.num_cpus, num_gpus=role.num_gpus, resources=role.resources,
            kwargs={"config": as_dict, "num_cpus": role.num_cpus}, name=name,
        )  # fmt: skip
        stack.callback(group.kill)
        groups.append(group)
    learner = build_learner(cfg)
    stack.callback(learner.kill)
    for group in groups:
        group.wait_ready()
    return Actors(data, groups[0], groups[1], learner, live_judges=cfg.has_live_judges())


def make_progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="rayunify", unit="step", dynamic_ncols=True)
