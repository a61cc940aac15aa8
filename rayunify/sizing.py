"""Memory a run needs per GPU, estimated from the model's shape and the config before anything is loaded.

Pure arithmetic (no torch, ray or deepspeed), so the dry run can answer "does a 7B full fine-tune with ZeRO-2
fit on 80 GB cards?" in seconds. The terms follow the usual mixed-precision accounting for DeepSpeed ZeRO:
parameters in the model dtype, gradients in the same dtype, AdamW's two fp32 moments plus an fp32 master copy
when training in bf16; stage 1 shards the optimizer state over the learner ranks, stage 2 also the gradients,
stage 3 also the parameters. Activations are an estimate (about 34 bytes per token, hidden unit and layer at
16 bits for a transformer layer without recomputation); the KV cache is exact for the configured batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

GIB = 2**30
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_ACTIVATION_BYTES_PER_TOKEN_UNIT_LAYER_16BIT = 34


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model (read from its config on the meta device)."""

    total_params: int
    language_model_params: int
    trainable_params: int
    num_layers: int
    hidden_size: int
    num_kv_heads: int
    head_dim: int
    num_image_tokens: int
    prompt_tokens: int = 96  # chat template + a CompBench-length prompt


@dataclass(frozen=True)
class RunShape:
    """The config's numbers that size memory."""

    dtype: str  # the model's dtype on rollout and judge actors (and the learner's without bf16)
    learner_bf16: bool
    zero_stage: int
    learner_ranks: int
    micro_batch: int  # pairs (DPO) or images (SFT) per rank per step
    sequences_per_item: int  # 2 for a DPO pair, 1 for SFT
    guided_logprobs: bool  # geometry=cfg: every sequence also runs unconditionally
    keeps_reference_copy: bool  # full fine-tuning DPO keeps a frozen copy of the language model
    rollout_rows: int  # sequences one rollout actor decodes at once (prompts x samples x 2 for CFG)


def _bytes(dtype: str) -> int:
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(_DTYPE_BYTES)}")
    return _DTYPE_BYTES[dtype]


def learner_memory(model: ModelShape, run: RunShape) -> dict[str, float]:
    """GiB per learner rank, by term."""
    param_bytes = 2 if run.learner_bf16 else _bytes(run.dtype)
    ranks = run.learner_ranks
    shard = {name: ranks if run.zero_stage >= stage else 1 for name, stage in (("opt", 1), ("grad", 2), ("param", 3))}
    optimizer_bytes = 8 + (4 if param_bytes < 4 else 0)  # two fp32 moments (+ fp32 master weights)
    rows = run.micro_batch * run.sequences_per_item * (2 if run.guided_logprobs else 1)
    tokens = rows * (model.prompt_tokens + model.num_image_tokens)
    activation = tokens * model.hidden_size * model.num_layers * _ACTIVATION_BYTES_PER_TOKEN_UNIT_LAYER_16BIT
    terms = {
        "weights": model.total_params * param_bytes / shard["param"],
        "gradients": model.trainable_params * param_bytes / shard["grad"],
        "optimizer": model.trainable_params * optimizer_bytes / shard["opt"],
        "reference_copy": model.language_model_params * param_bytes if run.keeps_reference_copy else 0,
        "activations": activation * param_bytes / 2,
    }
    return {name: value / GIB for name, value in terms.items()}


def kv_cache_bytes(model: ModelShape, rows: int, dtype: str) -> int:
    """Keys and values of every layer for `rows` sequences of prompt + image tokens."""
    length = model.prompt_tokens + model.num_image_tokens
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * length * rows * _bytes(dtype)


def rollout_memory(model: ModelShape, run: RunShape) -> dict[str, float]:
    """GiB per rollout actor: its model copy and the KV cache of one generate call."""
    return {
        "weights": model.total_params * _bytes(run.dtype) / GIB,
        "kv_cache": kv_cache_bytes(model, run.rollout_rows, run.dtype) / GIB,
    }


def total(terms: dict[str, float]) -> float:
    return math.fsum(terms.values())


def describe(terms: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {value:.1f}" for name, value in terms.items() if value > 0)
    return f"{total(terms):.1f} GiB ({parts})"


# ---------------------------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class RoleRequest:
    """`count` actors of one role, each needing one bundle of `cpus`, `gpus` and custom `resources` on a
    single node."""

    role: str
    count: int
    cpus: float
    gpus: float
    resources: Mapping[str, float] = field(default_factory=dict)

    def per_actor(self) -> dict[str, float]:
        return {"CPU": self.cpus, "GPU": self.gpus, **self.resources}


def placement_problems(requests: list[RoleRequest], nodes: list[dict[str, float]]) -> list[str]:
    """Why the requested actors can never be placed on these nodes (their total resources), or [] if they
    can. Ray would otherwise wait for resources that never come, with no message."""
    problems = []
    kinds = ["CPU", "GPU", *sorted({name for r in requests for name in r.resources})]
    for kind in kinds:
        need = math.fsum(r.count * r.per_actor().get(kind, 0.0) for r in requests)
        have = math.fsum(n.get(kind, 0.0) for n in nodes)
        if need > have + 1e-9:
            asked = " + ".join(f"{r.role} {r.count} x {r.per_actor()[kind]:g}" for r in requests if r.per_actor().get(kind))
            problems.append(f"the run asks for {need:g} {kind} ({asked}) but the cluster has {have:g}")
    for r in requests:
        fits = any(all(n.get(kind, 0.0) >= amount for kind, amount in r.per_actor().items()) for n in nodes)
        if not fits and any(r.per_actor().values()):
            extra = "".join(f", {amount:g} {kind}" for kind, amount in r.resources.items())
            problems.append(
                f"no node can hold one {r.role} actor ({r.cpus:g} CPU, {r.gpus:g} GPU{extra}); nodes have "
                + ", ".join(_node_summary(n, r.resources) for n in nodes)
            )
    return problems


def _node_summary(node: dict[str, float], custom: Mapping[str, float]) -> str:
    return f"{node.get('CPU', 0):g} CPU / {node.get('GPU', 0):g} GPU" + "".join(
        f" / {node.get(kind, 0):g} {kind}" for kind in custom
    )
