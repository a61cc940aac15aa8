"""A group of identical Ray actors of one role, on one placement group.

Roles (rollout, judge, learner) are plain Python classes; the group wraps them as actors at construction
with resources that come from config, so no class carries a hard-coded `@ray.remote(num_gpus=...)`.
Each actor owns one placement-group bundle: a dead actor can be recreated in its own bundle with the
same constructor arguments (`restart`), and the driver re-queues that actor's in-flight work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

Strategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


class ActorGroup:
    """`num_actors` actors of `cls`, actor i built with `cls(**kwargs, **rank_kwargs[i])`.

    Methods of the wrapped class are called on every actor with `async_run` (ObjectRefs) or `run`
    (results); `async_run_each` gives actor i its own argument (a shard of prompts, a rank's batch).
    """

    def __init__(
        self,
        cls: type,
        num_actors: int,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        resources: Mapping[str, float] | None = None,
        strategy: Strategy = "PACK",
        kwargs: Mapping[str, Any] | None = None,
        rank_kwargs: Sequence[Mapping[str, Any]] | None = None,
        name: str | None = None,
        placement_group: PlacementGroup | None = None,
        ready_timeout_s: float = 120.0,
    ) -> None:
        if num_actors < 1:
            raise ValueError(f"an actor group needs at least one actor, got {num_actors}")
        if rank_kwargs is not None and len(rank_kwargs) != num_actors:
            raise ValueError(f"rank_kwargs has {len(rank_kwargs)} entries for {num_actors} actors")
        self.name = name or cls.__name__
        self._remote_cls: Any = ray.remote(cls)
        self._num_cpus, self._num_gpus = num_cpus, num_gpus
        self._resources = dict(resources or {})  # custom Ray resources: which nodes the role may use
        self._kwargs = dict(kwargs or {})
        self._rank_kwargs = (
            [dict(rk) for rk in rank_kwargs] if rank_kwargs else [{} for _ in range(num_actors)]
        )
        # A caller-made placement group (learner rendezvous, colocated roles) stays the caller's to remove.
        self._owns_pg = placement_group is None
        self.placement_group: PlacementGroup | None = placement_group or reserve_bundles(
            num_actors, num_cpus, num_gpus, self._resources, strategy=strategy, name=self.name,
            timeout_s=ready_timeout_s,
        )  # fmt: skip
        self.actors: list[Any] = [self._spawn(i) for i in range(num_actors)]
        self.restarts = [0] * num_actors

    def __len__(self) -> int:
        return len(self.actors)

    def _spawn(self, index: int) -> Any:
        if self.placement_group is None:
            raise RuntimeError(f"{self.name}: the group was killed; build a new one")
        options: dict[str, Any] = {
            "num_cpus": self._num_cpus,
            "num_gpus": self._num_gpus,
            "resources": self._resources,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.placement_group, placement_group_bundle_index=index
            ),
            # Restarts are the driver's job (it must re-queue the lost work), not Ray's.
            "max_restarts": 0,
        }
        return self._remote_cls.options(**options).remote(**self._kwargs, **self._rank_kwargs[index])

    def async_run(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        """Call `method(*args, **kwargs)` on every actor; one ObjectRef per actor, in actor order."""
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def async_run_each(self, method: str, per_actor: Sequence[Any], **kwargs: Any) -> list[ray.ObjectRef]:
        """Call `method(per_actor[i], **kwargs)` on actor i."""
        if len(per_actor) != len(self.actors):
            raise ValueError(f"{self.name}: {len(per_actor)} inputs for {len(self.actors)} actors")
        return [getattr(a, method).remote(x, **kwargs) for a, x in zip(self.actors, per_actor, strict=True)]

    def run(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> list[Any]:
        return ray.get(self.async_run(method, *args, **kwargs), timeout=timeout)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every constructor has finished; a constructor's exception surfaces here."""
        ray.get([actor.__ray_ready__.remote() for actor in self.actors], timeout=timeout)

    def alive(self, timeout: float = 10.0) -> list[bool]:
        """False for actors known dead. A busy actor cannot answer before its current call ends, so one
        still silent after `timeout` counts as alive: the reliable death signal is RayActorError on an
        in-flight ref."""
        refs = [actor.__ray_ready__.remote() for actor in self.actors]
        ray.wait(refs, num_returns=len(refs), timeout=timeout)
        status = []
        for ref in refs:
            try:
                ray.get(ref, timeout=0)
                status.append(True)
            except ray.exceptions.GetTimeoutError:
                status.append(True)
            except ray.exceptions.RayActorError:
                status.append(False)
        return status

    def restart(self, index: int, wait: bool = True, timeout: float = 60.0) -> Any:
        """Replace actor `index` (dead or not) by a fresh one with the same constructor arguments.

        Its state is lost: the driver re-queues its in-flight work and, for a model holder, re-pushes
        the current weights.
        """
        ray.kill(self.actors[index], no_restart=True)
        # The old actor's bundle resources come back asynchronously; the new actor waits for them.
        start = time.monotonic()
        self.actors[index] = self._spawn(index)
        self.restarts[index] += 1
        if wait:
            remaining = max(1.0, timeout - (time.monotonic() - start))
            ray.get(self.actors[index].__ray_ready__.remote(), timeout=remaining)
        return self.actors[index]

    def kill(self) -> None:
        """Kill every actor and release the placement group. Safe to call twice."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self._owns_pg and self.placement_group is not None:
            remove_placement_group(self.placement_group)
        self.placement_group = None


def reserve_bundles(
    num_bundles: int,
    num_cpus: float,
    num_gpus: float = 0,
    resources: Mapping[str, float] | None = None,
    *,
    strategy: Strategy = "PACK",
    name: str = "",
    timeout_s: float = 120.0,
) -> PlacementGroup:
    """Reserve `num_bundles` x {CPU: num_cpus, GPU: num_gpus, **resources}; a clear error if the cluster cannot.

    `name` only labels error messages. A bundle on a node that is lost is re-reserved by Ray on a node that
    has room, so an actor restarted in it may land elsewhere.
    """
    bundle: dict[str, float] = {"CPU": num_cpus, **(resources or {})}
    if num_gpus:
        bundle["GPU"] = num_gpus
    # Unnamed: names are unique per namespace, and two groups of one role may coexist (tests, restarts).
    pg = placement_group([dict(bundle) for _ in range(num_bundles)], strategy=strategy)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(pg)
        raise TimeoutError(
            f"{name or 'placement group'}: could not reserve {num_bundles} x {bundle} ({strategy}) within "
            f"{timeout_s:.0f} s; the cluster has {ray.available_resources()} free"
        )
    return pg


def run_on_bundle(pg: PlacementGroup, index: int, fn: Callable[[], Any]) -> Any:
    """Run `fn` as a zero-CPU task inside bundle `index` of `pg`, i.e. on the node that bundle is on."""
    strategy = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)
    return ray.get(ray.remote(fn).options(num_cpus=0, scheduling_strategy=strategy).remote())
