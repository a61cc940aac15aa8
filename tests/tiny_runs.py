"""What the runtime tests share: a local Ray cluster on loopback whose actors can import tests/ (user code
such as tests/fixture_judges.py), and the settings of a tiny run whose judge is a seeded coin flip (a random
tiny model's own judge answers nothing parsable; pairs must still form)."""

from __future__ import annotations

from pathlib import Path

import ray

TESTS = str(Path(__file__).parent)
COIN_FLIP_TINY_RUN = [
    "model.path=builtin:tiny",
    "judge.type=noisy",
    "judge.base.type=shapes_checker",
    "judge.random_fraction=1.0",
    "prompts.n_train=16",
    "prompts.n_eval=4",
    "sampling.samples_per_prompt=4",
    "sampling.guidance_scale=2.0",
    "rollout.num_cpus=0.5",
    "judge_actors.num_cpus=0.5",
]


def start_local_cluster(num_cpus: int = 3) -> None:
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": TESTS}})  # fmt: skip
