"""Where the actors run: CPUs, GPUs and custom Ray resources per actor (rollout, judges; the learner's are in
`LearnerConfig`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from rayunify.config.base import Strict

_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
_CUSTOM_RESOURCES_HELP = (
    "Custom Ray resources each actor (learner: each rank) asks for besides CPUs and GPUs, to place a role on "
    "chosen nodes: e.g. {learner_node: 1}, with `ray start --resources='{\"learner_node\": 2}'` on the nodes "
    "meant for it. A restarted actor goes wherever these resources are free."
)


def _check_custom_resources(resources: dict[str, float]) -> dict[str, float]:
    for name, amount in resources.items():
        if name in _BUILTIN_RESOURCES:
            raise ValueError(f"resources: {name!r} is Ray's own; set num_cpus / num_gpus instead")
        if amount < 0:
            raise ValueError(f"resources: {name}={amount} must be >= 0")
    return resources


class Resources(Strict):
    num_actors: int = Field(1, ge=1, description="Actors of this role; a step's prompts are split between them.")
    num_cpus: float = Field(1, ge=0, description="CPUs per actor (also its torch threads).")
    num_gpus: float = Field(0, ge=0, description="GPUs per actor; a fraction shares a GPU with other actors.")
    resources: dict[str, float] = Field(default_factory=dict, description=_CUSTOM_RESOURCES_HELP)

    _custom = field_validator("resources")(_check_custom_resources)


class RolloutResources(Resources):
    max_rows: int | None = Field(
        None,
        gt=0,
        description="Rows per generate call, CFG twins included (a prompt takes samples_per_prompt rows, twice with "
        "guidance_scale > 1): an actor's prompts go through in calls of whole prompts, so KV-cache memory is "
        "bounded by this, not by prompts per step. A prompt draws the same images whatever it is. None: all of "
        "an actor's prompts in one call.",
    )


class JudgeResources(Resources):
    batch_size: int | None = Field(
        None, gt=0, description="Images per judge call (bounds the judge's memory). None: a chunk's images at once."
    )
