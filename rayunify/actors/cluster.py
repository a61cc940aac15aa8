"""Joining or starting the Ray cluster a job runs on (training and `rayunify eval` alike)."""

from __future__ import annotations

import math
import os

from rayunify.config import Config


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
        + cfg.judge_actors.num_actors * cfg.judge_actors.num_cpus
        + cfg.learner.num_ranks * cfg.learner.num_cpus
    )
    # Logical CPUs: actors limit their own threads, so asking for more than the cores is fine locally.
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, math.ceil(needed))
    # A private loopback cluster for this run: no token file, no usage report, never someone else's cluster.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_level="ERROR")
    return True
