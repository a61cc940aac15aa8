"""Weight push over a collective broadcast instead of the Ray object store.

The learner's rank 0 and every receiver (rollout actors, live self-judges) form a process group of their
own -- not the learners' DeepSpeed world, which the receivers are not part of -- with its own TCP store,
so it can be formed, torn down and re-formed (after an actor restart) without touching training. The
bucket *bytes* travel by `broadcast` from rank 0 (gloo on CPU; NCCL where the buckets live on GPUs); the
small header (version, names, shapes, offsets, checksums) travels by RPC, so each receiver allocates its
buffers before the broadcast and checks the result exactly as an object-store push is checked
(`rayunify.weights.apply_update`: stale, partial or corrupted updates are refused, weights untouched).

Every actor that takes pushes answers the one receiver protocol, `WeightReceiver`; `ModuleReceiver`
implements it for an actor holding one module. No ray import here: `WeightSync` (the driver's one push
path) and `LearnerGroup` call these through actor methods.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from rayunify.config.transport import push_backend  # noqa: F401 - the rule lives with the config; re-exported
from rayunify.weights import Bucket, WeightUpdate, apply_update

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class ChannelSpec:
    """Where and how to form the group: rank 0 is the learner and hosts the TCP store."""

    address: str
    port: int
    world_size: int
    backend: str = "gloo"
    generation: int = 0  # bumped at every re-formation (each one also gets a fresh port, so groups never mix)
    timeout_s: float = 300.0


class BroadcastChannel:
    """One member of the push group. Every member must call `broadcast_buckets` for the same header."""

    def __init__(self, spec: ChannelSpec, rank: int):
        if spec.backend not in BACKENDS:
            raise ValueError(f"learner.weight_transport backend {spec.backend!r}: choose one of {BACKENDS}")
        if not 0 <= rank < spec.world_size:
            raise ValueError(f"rank {rank} outside a push group of {spec.world_size}")
        self.spec, self.rank = spec, rank
        timeout = datetime.timedelta(seconds=spec.timeout_s)
        store = torch.distributed.TCPStore(spec.address, spec.port, spec.world_size, rank == 0, timeout=timeout)
        self.group: Any  # ProcessGroupNCCL or ProcessGroupGloo; torch's stubs lack the broadcast both have
        if spec.backend == "nccl":
            # Buckets are moved to this rank's GPU for the broadcast (NCCL moves device memory only).
            self.device = torch.device("cuda", torch.cuda.current_device())
            self.group = torch.distributed.ProcessGroupNCCL(store, rank, spec.world_size)  # type: ignore[call-arg]
        else:
            self.device = torch.device("cpu")
            self.group = torch.distributed.ProcessGroupGloo(store, rank, spec.world_size, timeout)

    def broadcast_buckets(self, header: UpdateHeader, buckets: list[Bucket] | None = None) -> WeightUpdate:
        """Root passes its packed `buckets`; receivers pass None and get the filled-in update back."""
        if (buckets is None) != (self.rank != 0):
            raise ValueError("rank 0 sends its buckets; every other rank receives (passes None)")
        filled = []
        for i, (meta, size) in enumerate(zip(header.shell.buckets, header.sizes, strict=True)):
            if self.rank == 0:
                assert buckets is not None
                data = torch.from_numpy(buckets[i].data)
            else:
                data = torch.empty(size, dtype=torch.uint8)
            on_device = data.to(self.device)
            self.group.broadcast(on_device, 0).wait()
            received = on_device.cpu().numpy() if on_device.device.type != "cpu" else data.numpy()
            filled.append(replace(meta, data=received))
        return replace(header.shell, buckets=filled)


@dataclass(frozen=True)
class UpdateHeader:
    """A `WeightUpdate` without its bytes (every bucket's data empty) plus each bucket's byte length: a few
    KB however large the weights are."""

    shell: WeightUpdate
    sizes: tuple[int, ...]

    @property
    def version(self) -> int:
        return self.shell.version


def header_of(update: WeightUpdate) -> UpdateHeader:
    shells = [replace(b, data=np.empty(0, dtype=np.uint8)) for b in update.buckets]
    return UpdateHeader(replace(update, buckets=shells), tuple(b.num_bytes for b in update.buckets))


class WeightReceiver(Protocol):
    """What a rollout actor or a live self-judge answers to the learner's pushes (through Ray actor calls).

    Versions count the learner's optimizer steps; a receiver refuses an update that is not newer than its
    own (`rayunify.weights.StaleUpdateError`) or that does not cover exactly its trainable tensors, and
    leaves its weights untouched when it refuses. Seconds are the receiver's own cost, apart from waiting.
    """

    def apply_weight_update(self, update: WeightUpdate) -> tuple[int, float]:
        """Object-store transport: check and copy `update`; (new version, seconds)."""
        ...

    def join_push_channel(self, spec: ChannelSpec, rank: int) -> None:
        """Broadcast transport: join a (re-)formed push group as `rank`; blocks until every member joined."""
        ...

    def receive_weight_broadcast(self, header: UpdateHeader) -> tuple[int, float]:
        """Broadcast transport: receive the bytes `header` describes, then check and copy them as above."""
        ...

    def get_version(self) -> int: ...


class ModuleReceiver:
    """`WeightReceiver` for an actor holding one module (model-holding actors subclass it; so do the tests'
    stand-ins, so the push path under test is the one real actors run)."""

    def __init__(self, module: torch.nn.Module, expected_names: Iterable[str] | None = None) -> None:
        self.receiving_module = module
        # A push must cover exactly these tensors: a subset would leave the actor half-updated.
        self.expected_names = None if expected_names is None else set(expected_names)
        self.version = 0
        self.push_channel: BroadcastChannel | None = None

    def apply_weight_update(self, update: WeightUpdate) -> tuple[int, float]:
        started = time.perf_counter()
        self.version = apply_update(self.receiving_module, update, self.version, expected_names=self.expected_names)
        return self.version, time.perf_counter() - started

    def join_push_channel(self, spec: ChannelSpec, rank: int) -> None:
        self.push_channel = BroadcastChannel(spec, rank)

    def receive_weight_broadcast(self, header: UpdateHeader) -> tuple[int, float]:
        if self.push_channel is None:
            raise RuntimeError("receive_weight_broadcast before join_push_channel")
        started = time.perf_counter()
        self.apply_weight_update(self.push_channel.broadcast_buckets(header))
        return self.version, time.perf_counter() - started

    def get_version(self) -> int:
        return self.version
