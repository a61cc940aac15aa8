"""`LearnerGroup`: the driver's handle on the K learner ranks (`rayunify.actors.learner.LearnerWorker`),
on one placement group, with the rendezvous done. Every call the driver makes on the learner goes through
it: train steps, packing weights for a push, the broadcast push group, checkpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, remove_placement_group

from rayunify.actors.group import ActorGroup, Strategy, reserve_bundles, run_on_bundle
from rayunify.actors.learner import LearnerWorker, LossFn, ModelFactory, node_ip_and_free_port
from rayunify.procs import is_port_clash
from rayunify.weights import DEFAULT_BUCKET_MB

log = logging.getLogger(__name__)

# Rank 0's rendezvous port is free when it is picked and bound a moment later by another process; on a busy
# node something may take it in between. That costs a fresh port, not the run.
_RENDEZVOUS_ATTEMPTS = 3


def _mean_metrics(per_rank: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = per_rank[0].keys()
    out = {k: sum(m[k] for m in per_rank) / len(per_rank) for k in keys}
    out["version"] = per_rank[0]["version"]
    out["step_s"] = max(m["step_s"] for m in per_rank)  # the slowest rank sets the pace
    return out


class LearnerGroup:
    """K learner ranks on one placement group, with the rendezvous done. K = 1 works the same way."""

    def __init__(
        self,
        num_ranks: int,
        model_factory: ModelFactory,
        loss_fn: LossFn,
        ds_config: Mapping[str, Any],
        *,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        num_cpus_per_rank: float = 1,
        num_gpus_per_rank: float = 0,
        resources_per_rank: Mapping[str, float] | None = None,
        strategy: Strategy = "PACK",
        seed: int = 0,
        setup_timeout_s: float = 300.0,
    ) -> None:
        self.num_ranks = num_ranks
        self.pg: PlacementGroup | None = reserve_bundles(
            num_ranks, num_cpus_per_rank, num_gpus_per_rank, resources_per_rank, strategy=strategy, name="learner"
        )
        actor_options = {"num_cpus": num_cpus_per_rank, "num_gpus": num_gpus_per_rank, "resources": resources_per_rank}
        rank_kwargs = {
            "world_size": num_ranks,
            "model_factory": model_factory,
            "loss_fn": loss_fn,
            "ds_config": dict(ds_config),
            "optimizer_kwargs": optimizer_kwargs,
            "seed": seed,
        }
        try:
            for attempt in range(1, _RENDEZVOUS_ATTEMPTS + 1):
                try:
                    self._start_ranks(actor_options, rank_kwargs, setup_timeout_s)
                    break
                except Exception as err:
                    if attempt == _RENDEZVOUS_ATTEMPTS or not is_port_clash(str(err)):
                        raise
                    log.warning("learner rendezvous port was taken before rank 0 bound it; new port (%s)", err)
                    self.group.kill()
        except BaseException:
            self.kill()
            raise

    def _start_ranks(self, actor_options: Mapping[str, Any], rank_kwargs: Mapping[str, Any], timeout_s: float) -> None:
        """Start the ranks on a fresh rendezvous port and wait until every one has built its engine."""
        assert self.pg is not None
        master_addr, master_port = run_on_bundle(self.pg, 0, node_ip_and_free_port)
        self.group = ActorGroup(
            LearnerWorker,
            self.num_ranks,
            placement_group=self.pg,
            name="learner",
            kwargs={**rank_kwargs, "master_addr": master_addr, "master_port": master_port},
            rank_kwargs=[{"rank": r} for r in range(self.num_ranks)],
            **actor_options,
        )
        start = time.perf_counter()
        self.setup_info = self.group.run("setup", timeout=timeout_s)
        self.setup_s = time.perf_counter() - start

    def async_train_step(self, batches: Sequence[Any]) -> list[ray.ObjectRef]:
        """Rank i trains on batches[i] (the driver splits the global batch); one ref per rank."""
        return self.group.async_run_each("train_step", batches)

    def train_step(self, batches: Sequence[Any]) -> dict[str, float]:
        """One synchronous step; metrics averaged over ranks. A non-finite loss raises FloatingPointError."""
        return _mean_metrics(ray.get(self.async_train_step(batches)))

    def async_build_update(
        self, bucket_mb: float = DEFAULT_BUCKET_MB
    ) -> tuple[ray.ObjectRef, list[ray.ObjectRef]]:
        """(rank 0's WeightUpdate ref, every rank's metadata ref). The update stays in the object store."""
        pairs = [a.build_update.options(num_returns=2).remote(bucket_mb) for a in self.group.actors]
        return pairs[0][0], [meta for _, meta in pairs]

    def async_prepare_broadcast(
        self, bucket_mb: float = DEFAULT_BUCKET_MB
    ) -> tuple[ray.ObjectRef, list[ray.ObjectRef]]:
        """(rank 0's UpdateHeader ref, every rank's metadata ref); rank 0 keeps the bytes for send_broadcast."""
        pairs = [a.prepare_broadcast.options(num_returns=2).remote(bucket_mb) for a in self.group.actors]
        return pairs[0][0], [meta for _, meta in pairs]

    def form_push_channel(
        self, receivers: Sequence[Any], backend: str = "gloo", generation: int = 0, timeout_s: float = 300.0
    ) -> Any:
        """(Re-)form the broadcast push group: learner rank 0 as root, then `receivers` in order. Every
        member joins at once (each join blocks until all have joined)."""
        from rayunify.actors.collective import ChannelSpec

        root = self.group.actors[0]
        address, port = ray.get(root.push_channel_address.remote())
        spec = ChannelSpec(address, port, 1 + len(receivers), backend, generation, timeout_s)
        joins = [root.join_push_channel.remote(spec)]
        joins += [r.join_push_channel.remote(spec, rank) for rank, r in enumerate(receivers, start=1)]
        ray.get(joins, timeout=timeout_s)
        return spec

    def send_broadcast(self, header_ref: ray.ObjectRef) -> ray.ObjectRef:
        """Rank 0 broadcasts the bytes `async_prepare_broadcast` packed; every receiver must take part."""
        return self.group.actors[0].send_broadcast.remote(header_ref)

    def compute(self, fn: Callable[[Any, Any], Any], batches: Sequence[Any]) -> list[Any]:
        """`fn(engine, batches[i])` without gradients on rank i, every rank at once (e.g. reference log-probs
        for new DPO pairs, each rank its shard); one result per rank. Every rank must take part: under ZeRO-3
        a forward all-gathers each layer's shards, so one rank alone would wait for the others forever."""
        if len(batches) != self.num_ranks:
            raise ValueError(f"compute takes one batch per rank: {len(batches)} for {self.num_ranks} ranks")
        return ray.get([a.compute.remote(fn, b) for a, b in zip(self.group.actors, batches, strict=True)])

    def param_checksums(self) -> list[str]:
        return self.group.run("param_checksum")

    def versions(self) -> list[int]:
        return self.group.run("get_version")

    def save_checkpoint(self, save_dir: str, tag: str, client_state: Mapping[str, Any] | None = None) -> str:
        return self.group.run("save_checkpoint", save_dir, tag, client_state)[0]

    def load_checkpoint(self, load_dir: str, tag: str | None = None) -> dict[str, Any]:
        return self.group.run("load_checkpoint", load_dir, tag)[0]

    def kill(self) -> None:
        """Kill every rank and release the placement group. Safe to call twice."""
        if hasattr(self, "group"):  # not yet when the first rendezvous port could not be picked
            self.group.kill()
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
