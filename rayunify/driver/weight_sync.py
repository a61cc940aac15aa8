"""The one weight-push path: from the learner's rank 0 to every receiver (rollout actors, live self-judges).

Rank 0 packs its trainable tensors once; the receivers check versions and names before they copy anything
(`rayunify.actors.collective.WeightReceiver`). Two transports:
  object_store  the packed update is one ObjectRef; one RPC per receiver carries the same ref. A receiver
                that dies during the push is restarted (given `restart_dead`) and handed the same ref.
  broadcast     the header by RPC, the bytes by a collective in a push group of their own (gloo on CPU,
                NCCL on GPUs), which is re-formed before the next push whenever a member was replaced.
                `timeout_s` bounds every collective of the group and the driver's wait for its members: a
                receiver that dies mid-broadcast is noticed within it, and (given `restart_dead`) the dead
                one is restarted, the group re-formed and the push retried once for whoever still lacks it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rayunify.driver.runtime import ActorDied, ray_get
from rayunify.weights import DEFAULT_BUCKET_MB

TRANSPORTS = ("object_store", "broadcast")


@dataclass(frozen=True)
class PushStats:
    """One push, as the driver logs it."""

    version: int
    num_tensors: int
    num_bytes: int
    pack_s: float  # rank 0: gather (ZeRO-3) and pack
    apply_s: float  # the slowest receiver: receive and copy
    wall_s: float  # in async mode also the wait for a rollout actor to finish its current generation

    def metrics(self) -> dict[str, float]:
        return {
            "time/push_s": self.pack_s + self.apply_s,  # the push's own cost, apart from waiting
            "time/push_wall_s": self.wall_s,
            "push/bytes": float(self.num_bytes),
            "push/tensors": float(self.num_tensors),
            "push/version": float(self.version),
        }


class PushMemberDied(ActorDied):
    """A member of the broadcast push group died; every other member's call has ended (failed or not)."""


class WeightSync:
    """Pushes the learner's weights to `receivers()` (asked at every push: a restart replaces a member).

    `restart_dead` (the collector's restarts) replaces dead receivers and calls `replaced` for each; without
    it a receiver that dies during a broadcast fails the push.
    """

    def __init__(
        self,
        learner: Any,  # rayunify.actors.learner.LearnerGroup
        receivers: Callable[[], Sequence[Any]],
        transport: str = "object_store",
        backend: str = "gloo",
        bucket_mb: float = DEFAULT_BUCKET_MB,
        timeout_s: float = 60.0,
        restart_dead: Callable[[], Any] | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"weight transport {transport!r}: choose one of {TRANSPORTS}")
        self.learner, self.receivers = learner, receivers
        self.transport, self.backend = transport, backend
        self.bucket_mb, self.timeout_s = bucket_mb, timeout_s
        self.restart_dead = restart_dead
        self.pushed_version = 0
        self.last_update_ref: Any = None  # object store: what a restarted receiver catches up with
        self.group_formed = False
        self.generation = 0

    def push(self) -> PushStats | None:
        """Bring every receiver to the learner's version; None when they already hold it (skipped steps)."""
        if self.learner.versions()[0] == self.pushed_version:
            return None
        started = time.perf_counter()
        if self.transport == "broadcast":
            update_ref, meta, applied = self._push_by_broadcast()
        else:
            update_ref, meta, applied = self._push_by_object_store()
        versions = [version for version, _ in applied]
        if any(v != meta["version"] for v in versions):
            raise RuntimeError(f"receivers report versions {versions} after a push of version {meta['version']}")
        self.last_update_ref = update_ref
        self.pushed_version = meta["version"]
        return PushStats(
            version=meta["version"],
            num_tensors=meta["num_tensors"],
            num_bytes=meta["num_bytes"],
            pack_s=meta["pack_s"],
            apply_s=max(seconds for _, seconds in applied),
            wall_s=time.perf_counter() - started,
        )

    def replaced(self, actor: Any, takes_push: bool) -> None:
        """A member was restarted: bring it to the pushed weights (if it takes pushes) and re-form the push
        group before the next broadcast, since the new actor is not in the old one."""
        if takes_push and self.pushed_version > 0:
            ray_get(actor.apply_weight_update.remote(self._catch_up_update()))
        self.group_formed = False

    def _catch_up_update(self) -> Any:
        """The last pushed update (object store), or with the broadcast transport, which keeps no copy, the
        learner's current weights (at most one step's staleness ahead of the others)."""
        if self.last_update_ref is not None:
            return self.last_update_ref
        return self.learner.async_build_update(self.bucket_mb)[0]

    def _push_by_object_store(self) -> tuple[Any, dict[str, Any], list[tuple[int, float]]]:
        update_ref, meta_refs = self.learner.async_build_update(self.bucket_mb)
        meta = ray_get(meta_refs)[0]
        try:
            applied = ray_get([r.apply_weight_update.remote(update_ref) for r in self.receivers()])
        except ActorDied:
            if self.restart_dead is None:
                raise
            applied = self._retry_object_store(update_ref, meta["version"])
        return update_ref, meta, applied

    def _retry_object_store(self, update_ref: Any, version: int) -> list[tuple[int, float]]:
        """A receiver died during the push (e.g. its node was lost): restart it (it catches up with the last
        push as it is replaced), then hand this update to whoever still lacks `version`."""
        assert self.restart_dead is not None
        self.restart_dead()
        receivers = list(self.receivers())
        have = ray_get([r.get_version.remote() for r in receivers])  # queued behind any apply still running
        behind = [i for i, v in enumerate(have) if v < version]
        retried = ray_get([receivers[i].apply_weight_update.remote(update_ref) for i in behind])
        by_index = dict(zip(behind, retried, strict=True))
        return [by_index[i] if i in behind else (v, 0.0) for i, v in enumerate(have)]

    def _push_by_broadcast(self) -> tuple[None, dict[str, Any], list[tuple[int, float]]]:
        receivers = list(self.receivers())
        meta, members = self._start_broadcast(receivers)
        try:
            applied = self._wait_for_members(members)[1:]
        except PushMemberDied:
            if self.restart_dead is None:
                raise
            applied = self._retry_broadcast(meta["version"])
        return None, meta, applied

    def _start_broadcast(self, receivers: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        """(metadata, [root's send ref, each receiver's ref]): the group formed if needed, the bytes in flight."""
        self._form_group(receivers)
        header_ref, meta_refs = self.learner.async_prepare_broadcast(self.bucket_mb)
        meta = ray_get(meta_refs)[0]
        send = self.learner.send_broadcast(header_ref)
        return meta, [send] + [r.receive_weight_broadcast.remote(header_ref) for r in receivers]

    def _retry_broadcast(self, version: int) -> list[tuple[int, float]]:
        """After a member died: restart it (it catches up with the learner's weights as it is replaced), then
        broadcast once more to the receivers that still lack `version`, in a group of their own."""
        assert self.restart_dead is not None
        self.group_formed = False
        self.restart_dead()
        receivers = list(self.receivers())
        have = ray_get([r.get_version.remote() for r in receivers])
        behind = [i for i, v in enumerate(have) if v < version]
        retried: dict[int, tuple[int, float]] = {}
        if behind:
            members = self._start_broadcast([receivers[i] for i in behind])[1]
            retried = dict(zip(behind, self._wait_for_members(members)[1:], strict=True))
        self.group_formed = False  # the retry's group may lack members: the next push forms a full one
        return [retried[i] if i in behind else (v, 0.0) for i, v in enumerate(have)]

    def _wait_for_members(self, refs: list[Any]) -> list[Any]:
        """Every member's result, in order. Once one fails, the others fail too within `timeout_s` (the
        group's collective timeout); the error is raised only after all have ended, so nobody is still
        inside the old group when it is re-formed. Members silent for `timeout_s` are a TimeoutError."""
        import ray

        results: dict[Any, Any] = {}
        errors: list[Exception] = []
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=self.timeout_s + 5.0)
            if not done:
                raise TimeoutError(
                    f"broadcast push: {len(pending)} of {len(refs)} members silent for {self.timeout_s:.0f} s "
                    "(learner.push_timeout_s)"
                )
            try:
                results[done[0]] = ray_get(done[0])
            except Exception as err:  # noqa: BLE001 - raised below, once every member has ended
                errors.append(err)
        died = [e for e in errors if isinstance(e, ActorDied)]
        if died:
            raise PushMemberDied(f"a push group member died during a broadcast: {died[0]}") from died[0]
        if errors:
            raise errors[0]
        return [results[r] for r in refs]

    def _form_group(self, receivers: list[Any]) -> None:
        if self.group_formed:
            return
        self.learner.form_push_channel(receivers, self.backend, self.generation, self.timeout_s)
        self.generation += 1
        self.group_formed = True
