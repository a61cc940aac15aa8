"""The learner: K DeepSpeed ZeRO ranks, one Ray actor each (`LearnerWorker`), generic over the model;
`rayunify.actors.learner_group.LearnerGroup` starts them and is the driver's handle on them.

`LearnerWorker` knows nothing about Janus: it gets a *model factory* (returns the nn.Module and which
parameters train) and a *loss callable* (engine, batch) -> loss. Each rank sets the torch.distributed
environment itself, so the same code runs with K = 1 on a laptop and K = 8 on a GPU node.

Two choices keep CPU start-up in seconds: DeepSpeed's shared-memory comm op is switched off before
`init_distributed` (it would JIT-compile first), and the optimizer is `torch.optim.AdamW` (DeepSpeed's CPU
Adam JIT-compiles for minutes). `deepspeed` is imported inside the worker only, so importing this module
stays cheap; `ray` only where a rank needs its node's address, so the GPU suite can drive a rank in one
process on a machine without Ray (benchmarks/gpu_online_steps.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch

from rayunify.actors import name_cpu_accelerator
from rayunify.algos import check_finite
from rayunify.procs import free_port
from rayunify.weights import DEFAULT_BUCKET_MB, Bucket, WeightUpdate, pack_buckets, tensors_checksum

# Which parameters train: a predicate on the parameter name, an explicit set of names, or None for all.
TrainableSpec = Callable[[str], bool] | Collection[str] | None
# Builds the model on each rank; called after seeding, so every rank starts from the same weights.
# Returning a bare module means "train everything".
ModelFactory = Callable[[], tuple[torch.nn.Module, TrainableSpec] | torch.nn.Module]
# (engine, batch) -> loss or (loss, extra scalar metrics). The engine behaves like the module: calling it
# runs forward (with ZeRO-3 gathering), and attribute access falls through to the module's methods.
LossFn = Callable[[torch.nn.Module, Any], torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]]

_DS_DEFAULTS: dict[str, Any] = {
    "train_micro_batch_size_per_gpu": 1,
    "gradient_accumulation_steps": 1,
    "steps_per_print": 10**9,  # the driver logs; DeepSpeed's own step prints would only add noise
    "wall_clock_breakdown": False,
}


def _is_trainable(spec: TrainableSpec) -> Callable[[str], bool]:
    if spec is None:
        return lambda name: True
    if callable(spec):
        return spec
    names = set(spec)
    return lambda name: name in names


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _size_groups(named: Sequence[tuple[str, torch.nn.Parameter]], max_bytes: int, numel: Callable) -> list:
    """Split parameters into consecutive groups of at most `max_bytes` (a bigger one alone)."""
    groups: list[list[tuple[str, torch.nn.Parameter]]] = [[]]
    size = 0
    for name, p in named:
        n = numel(p) * p.element_size()
        if groups[-1] and size + n > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, p))
        size += n
    return [g for g in groups if g]


class LearnerWorker:
    """One data-parallel rank. Wrapped as a Ray actor by `LearnerGroup`; usable in-process for tests."""

    def __init__(
        self,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        model_factory: ModelFactory,
        loss_fn: LossFn,
        ds_config: Mapping[str, Any],
        optimizer_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.rank, self.world_size = rank, world_size
        self.master_addr, self.master_port = master_addr, master_port
        self.model_factory, self.loss_fn = model_factory, loss_fn
        self.ds_config = {**_DS_DEFAULTS, **dict(ds_config)}
        if "optimizer" in self.ds_config:
            raise ValueError(
                "ds_config must not contain 'optimizer': the learner passes torch.optim.AdamW "
                "(DeepSpeed's CPU Adam JIT-compiles for minutes); give its settings as optimizer_kwargs"
            )
        self.optimizer_kwargs = dict(optimizer_kwargs or {"lr": 1e-5})
        self.seed = seed
        self.version = 0  # optimizer steps taken; receivers compare against it
        self.push_channel: Any = None  # rank 0, broadcast transport only
        self._pending_buckets: list[Bucket] | None = None
        self.engine: Any = None

    # ---- set-up -------------------------------------------------------------------------------------
    def setup(self) -> dict[str, Any]:
        """Join the process group and build the DeepSpeed engine. All ranks must call it concurrently."""
        os.environ.update(
            MASTER_ADDR=self.master_addr,
            MASTER_PORT=str(self.master_port),
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            # Ray gives each GPU actor only its own device(s) in CUDA_VISIBLE_DEVICES: it is always cuda:0.
            LOCAL_RANK="0",
        )
        use_cuda = torch.cuda.is_available()
        name_cpu_accelerator()
        t0 = time.perf_counter()
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # skip its JIT build (CPU start-up)
        t_import = time.perf_counter()
        deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
        t_dist = time.perf_counter()

        torch.manual_seed(self.seed)  # identical initial weights on every rank (ZeRO-3 shards local copies)
        built = self.model_factory()
        module, spec = (built, None) if isinstance(built, torch.nn.Module) else built
        trainable = _is_trainable(spec)
        for name, p in module.named_parameters():
            p.requires_grad_(trainable(name))
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model factory's trainable spec selects no parameter")
        optimizer = torch.optim.AdamW(params, **self.optimizer_kwargs)
        self.engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=self.ds_config)
        self.device = self.engine.device
        self.zero_stage = int(self.engine.zero_optimization_stage())
        t_init = time.perf_counter()
        return {
            "rank": self.rank,
            "zero_stage": self.zero_stage,
            "device": str(self.device),
            "num_trainable": sum(self._numel(p) for _, p in self._trainable_named()),
            "import_s": t_import - t0,
            "init_distributed_s": t_dist - t_import,
            "initialize_s": t_init - t_dist,
        }

    # ---- training -----------------------------------------------------------------------------------
    def train_step(self, batch: Any) -> dict[str, float]:
        """Forward, finiteness check, backward, step. A non-finite loss raises and changes no weight.

        With gradient_accumulation_steps > 1 DeepSpeed steps the optimizer every k-th call and `version`
        counts only those; keep it at 1 unless memory forces otherwise.
        """
        start = time.perf_counter()
        self.engine.train()
        out = self.loss_fn(self.engine, _to_device(batch, self.device))
        loss, extra = out if isinstance(out, tuple) else (out, {})
        self._check_finite(loss)
        self.engine.backward(loss)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        if boundary:
            self.version += 1
        metrics = {"loss": float(loss.detach()), **{k: float(v) for k, v in extra.items()}}
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        metrics.update(version=self.version, step_s=time.perf_counter() - start)
        return metrics

    def compute(self, fn: Callable[[Any, Any], Any], batch: Any) -> Any:
        """Run `fn(engine, batch)` without gradients, e.g. reference log-probs for new DPO pairs."""
        self.engine.eval()
        with torch.no_grad():
            return fn(self.engine, _to_device(batch, self.device))

    def _check_finite(self, loss: torch.Tensor) -> None:
        """`rayunify.algos.check_finite` on this rank's loss, then agreement across ranks: every rank must
        take the same branch, since a rank that raised while the others entered backward would leave them
        waiting in a collective forever."""
        error: FloatingPointError | None = None
        try:
            check_finite(loss, "learner")
        except FloatingPointError as err:
            error = err
        bad = torch.tensor([float(error is not None)], device=self.device)
        if self.world_size > 1:
            torch.distributed.all_reduce(bad)
        if bad.item() > 0:
            here = str(error) if error is not None else "this rank's loss is finite"
            raise FloatingPointError(
                f"non-finite loss on {int(bad.item())} of {self.world_size} ranks at learner version "
                f"{self.version}: step skipped before backward, weights unchanged. This rank: {here}"
            )

    # ---- weights ------------------------------------------------------------------------------------
    def _trainable_named(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad]

    def _numel(self, p: torch.nn.Parameter) -> int:
        return int(p.ds_numel) if hasattr(p, "ds_numel") else p.numel()  # ZeRO-3 params hold one shard

    def _gathered_groups(self, named: Sequence[tuple[str, torch.nn.Parameter]], bucket_bytes: int):
        """Yield groups of full parameters; under ZeRO-3 each group is all-gathered only while in use.

        A collective under ZeRO-3: every rank must iterate it.
        """
        if self.zero_stage < 3:
            yield list(named)
            return
        import deepspeed

        for group in _size_groups(named, bucket_bytes, self._numel):
            with deepspeed.zero.GatheredParameters([p for _, p in group], modifier_rank=None):
                yield group

    def get_trainable_state(self, bucket_mb: float = DEFAULT_BUCKET_MB) -> list[Bucket]:
        """Rank 0: its trainable parameters packed into buckets; other ranks: [] (they help gather)."""
        bucket_bytes = int(bucket_mb * 2**20)
        buckets: list[Bucket] = []
        for group in self._gathered_groups(self._trainable_named(), bucket_bytes):
            if self.rank == 0:
                buckets.extend(pack_buckets(group, bucket_bytes))
        return buckets

    def build_update(
        self, bucket_mb: float = DEFAULT_BUCKET_MB
    ) -> tuple[WeightUpdate | None, dict[str, Any]]:
        """(update, small metadata). Called with num_returns=2 so the driver reads the metadata only."""
        start = time.perf_counter()
        buckets = self.get_trainable_state(bucket_mb)
        if self.rank != 0:
            return None, {}
        update = WeightUpdate.from_buckets(self.version, buckets)
        meta = {
            "version": update.version,
            "num_tensors": update.total_count,
            "num_bytes": update.num_bytes,
            "pack_s": time.perf_counter() - start,
        }
        return update, meta

    # ---- broadcast push (rayunify.actors.collective) -------------------------------------------------
    def push_channel_address(self) -> tuple[str, int]:
        return node_ip_and_free_port()

    def join_push_channel(self, spec: Any) -> None:
        """Rank 0 only: become the root of a (re-)formed push group; blocks until every member joins."""
        from rayunify.actors.collective import BroadcastChannel

        self.push_channel = BroadcastChannel(spec, rank=0)

    def prepare_broadcast(self, bucket_mb: float = DEFAULT_BUCKET_MB) -> tuple[Any, dict[str, Any]]:
        """Every rank calls (ZeRO-3 gathers); rank 0 keeps the packed buckets and returns (header, metadata)."""
        from rayunify.actors.collective import header_of

        update, meta = self.build_update(bucket_mb)
        if update is None:
            return None, {}
        self._pending_buckets = update.buckets
        return header_of(update), meta

    def send_broadcast(self, header: Any) -> float:
        """Rank 0: broadcast the buckets `prepare_broadcast` packed; returns the seconds it took."""
        start = time.perf_counter()
        if self.push_channel is None or self._pending_buckets is None:
            raise RuntimeError("send_broadcast before join_push_channel and prepare_broadcast")
        self.push_channel.broadcast_buckets(header, self._pending_buckets)
        self._pending_buckets = None
        return time.perf_counter() - start

    def param_checksum(self, trainable_only: bool = True) -> str:
        """sha256 of the full parameters (gathered under ZeRO-3: every rank must call it)."""
        named = self._trainable_named() if trainable_only else list(self.engine.module.named_parameters())
        copies: list[tuple[str, torch.Tensor]] = []
        for group in self._gathered_groups(named, 64 * 2**20):
            copies.extend((n, p.detach().cpu().clone()) for n, p in group)
        return tensors_checksum(copies)

    def get_version(self) -> int:
        return self.version

    # ---- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, save_dir: str, tag: str, client_state: Mapping[str, Any] | None = None) -> str:
        """DeepSpeed engine checkpoint (weights, optimizer, ZeRO shards) plus our version. All ranks call."""
        state = {**dict(client_state or {}), "learner_version": self.version}
        self.engine.save_checkpoint(save_dir, tag=tag, client_state=state)
        return os.path.join(save_dir, tag)

    def load_checkpoint(self, load_dir: str, tag: str | None = None) -> dict[str, Any]:
        """Restore weights, optimizer and version; returns the client_state that was saved. All ranks call."""
        path, client_state = self.engine.load_checkpoint(load_dir, tag=tag)
        if path is None:
            # DeepSpeed only warns and loads nothing: a silent no-op resume is the bug users report most.
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {load_dir!r} (tag {tag!r})")
        client_state = dict(client_state or {})
        # A checkpoint saved by plain DeepSpeed (e.g. an SFT warm start) has no version of ours.
        self.version = int(client_state.pop("learner_version", self.engine.global_steps))
        # The optimizer's state came back with the learning rate it was saved with; a resumed run may change
        # it (and the weight decay), so this run's settings apply from here on.
        for group in self.engine.optimizer.param_groups:
            group.update({k: v for k, v in self.optimizer_kwargs.items() if k in ("lr", "weight_decay")})
        return client_state

    def learning_rates(self) -> list[float]:
        return [float(group["lr"]) for group in self.engine.optimizer.param_groups]


def node_ip_and_free_port() -> tuple[str, int]:
    """Runs on rank 0's node: the address the other ranks dial, and a port free there right now."""
    import ray  # here, not at module level: the GPU suite drives LearnerWorker in one process without Ray

    ip = ray.util.get_node_ip_address()
    return ip, free_port(ip)
