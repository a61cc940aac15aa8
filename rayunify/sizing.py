"""Memory a run needs per GPU, estimated from the model's shape and the config before anything is loaded.

Pure arithmetic (no torch, ray or deepspeed), so the dry run can answer "does a 7B full fine-tune with ZeRO-2
fit on 80 GB cards?" in seconds. The learner's terms follow mixed-precision DeepSpeed ZeRO: parameters and
gradients in the model dtype, the fp32 gradient copy, master weights and AdamW's two moments, DeepSpeed's own
buckets and partitions; stage 1 shards the optimizer state over the ranks, stage 2 also the gradients,
stage 3 also the parameters. Activations, the KV cache, the VQ decode and the judge's passes are per token,
hidden unit and layer (or per logit, per pixel), with constants measured at Janus-Pro-1B's real width by
benchmarks/bench_real_scale.py (docs/real-scale.md has the table). `with_gpu_margin` adds what a CPU
cannot measure (CUDA context, allocator fragmentation, NCCL buffers); `fit_problem` is the dry run's verdict
against the GPUs' memory, with the changes that would fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

GIB = 2**30
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Constants measured at Janus-Pro-1B's real width on CPU (benchmarks/bench_real_scale.py, docs/real-scale.md).
_TRAIN_BYTES_PER_TOKEN_UNIT_LAYER = 58  # saved for backward per token, hidden unit and layer, at 16 bits
_TRAIN_HEAD_BYTES_PER_LOGIT = 18  # image-head logits: bf16 out, fp32 log-softmax kept, and their gradients
_NO_GRAD_BYTES_PER_TOKEN_UNIT_LAYER = 6  # keys and values the language model caches (4), and the step transient
_NO_GRAD_HEAD_BYTES_PER_LOGIT = 10  # bf16 logits, their fp32 copy and fp32 log-softmax
# The VQ decoder's peak is in a resnet block at full resolution, where four maps of its 128 channels are alive
# at once (the block's input kept for the residual, the norm's output, the sigmoid's temporary, the sum): 4.24
# maps per pixel measured at 384 px in bfloat16.
_VQ_DECODER_CHANNELS = 128
_VQ_DECODER_LIVE_MAPS = 4.25
# The decode loop embeds each sampled token through a table of every image token's embedding (codebook x
# hidden), built once and kept between calls; while the aligner builds it, its hidden layer is a second copy.
# (Janus's; Show-o's decode reads its embedding directly, so its estimate is high by the table.)
_IMAGE_TABLE_BUILD_COPIES = 2
_JUDGE_VISION_BYTES_PER_TOKEN_UNIT = 120  # the vision tower's transient per patch and hidden unit
_REDUCE_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's reduce_bucket_size default
_ZERO3_PREFETCH_ELEMENTS = 50_000_000  # DeepSpeed's stage3_prefetch_bucket_size default
_ZERO3_EXTRA_BYTES = 10  # ZeRO-3's flat partitions per trainable parameter beyond ZeRO-2's terms


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
    lora_params: int = 0  # what LoRA adapters at the configured rank would train (0: unknown)
    image_vocab: int = 16384  # the image head's codebook size
    vision_hidden: int = 1024  # the understanding encoder's width
    image_pixels: int = 384 * 384


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
    judge_rows: int = 64  # images one judge call reads
    rollout_prompts: int = 1  # prompts in one generate call (rollout_rows / rows per prompt)


def _bytes(dtype: str) -> int:
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(_DTYPE_BYTES)}")
    return _DTYPE_BYTES[dtype]


def learner_memory(model: ModelShape, run: RunShape) -> dict[str, float]:
    """GiB per learner rank, by term."""
    param_bytes = 2 if run.learner_bf16 else _bytes(run.dtype)
    ranks = run.learner_ranks
    shard = {name: ranks if run.zero_stage >= stage else 1 for name, stage in (("opt", 1), ("grad", 2), ("param", 3))}
    mixed = param_bytes < 4 and run.learner_bf16
    optimizer_bytes = 8 + (4 if mixed else 0)  # two fp32 moments (+ fp32 master weights)
    # Gradients in the model dtype, and in mixed precision the fp32 copy the optimizer steps on.
    gradient_bytes = param_bytes + (4 if mixed else 0)
    rows = learner_rows(run)
    tokens = rows * (model.prompt_tokens + model.num_image_tokens)
    layers = tokens * model.hidden_size * model.num_layers * _TRAIN_BYTES_PER_TOKEN_UNIT_LAYER * param_bytes / 2
    head = rows * model.num_image_tokens * model.image_vocab * _TRAIN_HEAD_BYTES_PER_LOGIT
    terms = {
        "weights": model.total_params * param_bytes / shard["param"],
        "gradients": model.trainable_params * gradient_bytes / shard["grad"],
        "optimizer": model.trainable_params * optimizer_bytes / shard["opt"],
        "reference_copy": model.language_model_params * param_bytes if run.keeps_reference_copy else 0,
        "buffers": _deepspeed_buffers(model, run, param_bytes, shard["grad"]),
        "activations": layers + head,
    }
    return {name: value / GIB for name, value in terms.items()}


def learner_rows(run: RunShape) -> int:
    return run.micro_batch * run.sequences_per_item * (2 if run.guided_logprobs else 1)


def _deepspeed_buffers(model: ModelShape, run: RunShape, param_bytes: int, grad_shard: int) -> float:
    """What DeepSpeed holds beyond the textbook terms, measured on one rank: ZeRO-1/2's reduce bucket (up to
    `reduce_bucket_size` elements) and flat gradient partition; ZeRO-3's flat parameter and gradient
    partitions beside the gathered parameters, and its prefetch bucket."""
    trainable = model.trainable_params
    if run.zero_stage == 3:
        return trainable * _ZERO3_EXTRA_BYTES / run.learner_ranks + min(trainable, _ZERO3_PREFETCH_ELEMENTS) * param_bytes
    return min(trainable, _REDUCE_BUCKET_ELEMENTS) * param_bytes + trainable * param_bytes / grad_shard


def kv_cache_bytes(model: ModelShape, rows: int, dtype: str, length: int | None = None) -> int:
    """Keys and values of every layer for `rows` sequences of prompt + image tokens."""
    length = length or model.prompt_tokens + model.num_image_tokens
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * length * rows * _bytes(dtype)


def no_grad_pass_bytes(model: ModelShape, rows: int, dtype: str) -> float:
    """A teacher-forced pass without gradients over prompt + image tokens: each layer's keys and values (the
    language model caches them) and its transient, plus the image-head logits with their float log-softmax."""
    tokens = rows * (model.prompt_tokens + model.num_image_tokens)
    layers = tokens * model.hidden_size * model.num_layers * _NO_GRAD_BYTES_PER_TOKEN_UNIT_LAYER * _bytes(dtype) / 2
    return layers + rows * model.num_image_tokens * model.image_vocab * _NO_GRAD_HEAD_BYTES_PER_LOGIT


def rollout_memory(model: ModelShape, run: RunShape) -> dict[str, float]:
    """GiB per rollout actor: its model copy, the image-token embedding table the decode loop reads, the
    decode loop's peak (one generate call's KV cache, beside the table's second copy while the first call
    builds it) and the VQ decoder turning the call's tokens into pixels, which starts once the cache is freed:
    the call's peak is the larger of the two."""
    images = run.rollout_rows // 2 if run.rollout_rows > 1 else 1  # CFG twins make no image
    dtype_bytes = _bytes(run.dtype)
    table = model.image_vocab * model.hidden_size * dtype_bytes
    loop = kv_cache_bytes(model, run.rollout_rows, run.dtype) + (_IMAGE_TABLE_BUILD_COPIES - 1) * table
    pixels = vq_decode_bytes(model, images, run.dtype)
    return {
        "weights": model.total_params * dtype_bytes / GIB,
        "image_embeddings": table / GIB,
        "decode_loop": loop / GIB,
        "vq_decode": max(0.0, pixels - loop) / GIB,  # what the pixels need beyond the freed loop's memory
    }


def vq_decode_bytes(model: ModelShape, images: int, dtype: str) -> float:
    """The VQ decoder's activations at its peak, turning `images` images' tokens into pixels at once."""
    return images * model.image_pixels * _VQ_DECODER_CHANNELS * _VQ_DECODER_LIVE_MAPS * _bytes(dtype)


def judge_memory(model: ModelShape, run: RunShape) -> dict[str, float]:
    """GiB per judge actor holding the model: its copy, and one judge call: the vision tower over each
    image, then the question and image tokens through the language model with their KV cache."""
    rows = run.judge_rows
    vision = rows * model.num_image_tokens * model.vision_hidden * _JUDGE_VISION_BYTES_PER_TOKEN_UNIT
    tokens = rows * (model.prompt_tokens + model.num_image_tokens)
    text = tokens * model.hidden_size * model.num_layers * _NO_GRAD_BYTES_PER_TOKEN_UNIT_LAYER * _bytes(run.dtype) / 2
    return {"weights": model.total_params * _bytes(run.dtype) / GIB, "activations": (vision + text) / GIB}


def reference_memory(model: ModelShape, run: RunShape) -> dict[str, float]:
    """GiB for one no-grad teacher-forced pass (reference log-probs) of a learner micro-batch."""
    return {
        "weights": model.total_params * _bytes(run.dtype) / GIB,
        "activations": no_grad_pass_bytes(model, learner_rows(run), run.dtype) / GIB,
    }


def total(terms: dict[str, float]) -> float:
    return math.fsum(terms.values())


def describe(terms: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {value:.1f}" for name, value in terms.items() if value > 0)
    return f"{total(terms):.1f} GiB ({parts})"


# ---------------------------------------------------------------------------------------------- fitting a GPU
# What a CPU measurement cannot show, added per GPU process (docs/real-scale.md): the CUDA context with
# cuBLAS/cuDNN workspaces, the caching allocator's fragmentation (blocks held but not reusable at that size,
# a share of what is allocated) and, on learner ranks that talk to others, NCCL's buffers.
CUDA_CONTEXT_GIB = 0.75
FRAGMENTATION = 0.10
NCCL_GIB = 0.5


def with_gpu_margin(terms: dict[str, float], nccl: bool = False) -> dict[str, float]:
    margin = CUDA_CONTEXT_GIB + FRAGMENTATION * total(terms) + (NCCL_GIB if nccl else 0.0)
    return {**terms, "gpu_margin": margin}


@dataclass(frozen=True)
class GpuTenant:
    """One role's actors as Ray packs them onto GPUs: `count` actors of `fraction` GPU, `gib` each."""

    role: str
    count: int
    fraction: float
    gib: float


def worst_gpu(tenants: list[GpuTenant]) -> tuple[float, str]:
    """The most memory one GPU can be asked to hold (GiB) and by whom: Ray may put any set of actors whose
    GPU fractions add up to at most 1 on the same device; an actor of one GPU or more holds its own."""
    alone = [(t.gib, t.role) for t in tenants if t.fraction >= 1 and t.count > 0]
    shared = [t for t in tenants if 0 < t.fraction < 1 and t.count > 0]
    best = max(alone, default=(0.0, ""))

    def visit(i: int, room: float, gib: float, who: list[str]) -> None:
        nonlocal best
        if i == len(shared):
            best = max(best, (gib, " + ".join(who)))
            return
        t = shared[i]
        for k in range(min(t.count, int(room / t.fraction + 1e-9)) + 1):
            label = [f"{k} x {t.role} ({t.gib:.1f} GiB each)" if k > 1 else f"{t.role} ({t.gib:.1f} GiB)"] if k else []
            visit(i + 1, room - k * t.fraction, gib + k * t.gib, who + label)

    visit(0, 1.0, 0.0, [])
    return best


def over_memory(tenants: list[GpuTenant], gpu_gib: float) -> str | None:
    """Why the run does not fit GPUs of `gpu_gib`, or None when the worst-packed GPU fits."""
    need, who = worst_gpu(tenants)
    if need <= gpu_gib:
        return None
    return f"one GPU may hold {who}: {need:.1f} GiB (CUDA margin included) > {gpu_gib:g} GiB"


def role_tenants(cfg: Any, model: ModelShape, run: RunShape, judge_holds_model: bool) -> list[GpuTenant]:
    """Each GPU role's actors with their estimate plus the GPU margin (`cfg` is a rayunify Config)."""
    learner = with_gpu_margin(learner_memory(model, run), nccl=run.learner_ranks > 1)
    tenants = [
        GpuTenant("learner rank", cfg.learner.num_ranks, cfg.learner.num_gpus, total(learner)),
        GpuTenant("rollout actor", cfg.rollout.num_actors, cfg.rollout.num_gpus, total(with_gpu_margin(rollout_memory(model, run)))),
    ]  # fmt: skip
    if judge_holds_model:
        judge = total(with_gpu_margin(judge_memory(model, run)))
        tenants.append(GpuTenant("judge actor", cfg.judge_actors.num_actors, cfg.judge_actors.num_gpus, judge))
    return tenants


def _candidates(model: ModelShape, run: RunShape) -> list[tuple[str, ModelShape, RunShape]]:
    """Single changes that lower some role's memory, mildest of each kind first."""
    rows_per_prompt = max(1, run.rollout_rows // max(1, run.rollout_prompts))
    out: list[tuple[str, ModelShape, RunShape]] = []
    if model.lora_params and model.trainable_params > model.lora_params:
        out.append(("model.trainable=lora", replace(model, trainable_params=model.lora_params), replace(run, keeps_reference_copy=False)))
    if run.zero_stage < 3:
        out.append(("learner.zero_stage=3", model, replace(run, zero_stage=3)))
    for ranks in (2 * run.learner_ranks, 4 * run.learner_ranks):
        micro = -(-run.micro_batch * run.learner_ranks // ranks)
        out.append((f"learner.num_ranks={ranks}", model, replace(run, learner_ranks=ranks, micro_batch=micro)))
    for micro in _halvings(run.micro_batch):
        out.append((f"learner.batch_size={micro * run.learner_ranks}", model, replace(run, micro_batch=micro)))
    for prompts in _halvings(run.rollout_prompts):
        out.append((f"rollout.max_rows={prompts * rows_per_prompt}", model, replace(run, rollout_rows=prompts * rows_per_prompt, rollout_prompts=prompts)))
    for rows in _halvings(run.judge_rows):
        out.append((f"judge_actors.batch_size={rows}", model, replace(run, judge_rows=rows)))
    return out


def memory_fixes(cfg: Any, model: ModelShape, run: RunShape, judge_holds_model: bool, gpu_gib: float) -> list[str]:
    """Changes that would make the run fit, each with the worst GPU it leaves: every single change that
    fits alone (the mildest of each kind), else the smallest greedy combination that does."""
    need = lambda m, r: worst_gpu(role_tenants(cfg, m, r, judge_holds_model))[0]  # noqa: E731
    fixes, kinds = [], set()
    for label, m, r in _candidates(model, run):
        kind = label.split("=")[0]
        if kind not in kinds and need(m, r) <= gpu_gib:
            kinds.add(kind)
            fixes.append(f"{label} ({need(m, r):.1f} GiB)")
    if fixes:
        return fixes
    chosen: dict[str, str] = {}  # kind -> its latest value: a later pick of the same kind replaces it
    while need(model, run) > gpu_gib:
        best, label, m, r = min(((need(m, r), label, m, r) for label, m, r in _candidates(model, run)), key=lambda o: o[0])
        if best >= need(model, run):
            return []  # nothing the dry run knows of lowers the worst GPU further
        chosen[label.split("=")[0]] = label
        model, run = m, r
    return [" and ".join(chosen.values()) + f" together ({need(model, run):.1f} GiB)"]


def _halvings(value: int) -> list[int]:
    out = []
    while value > 1:
        value = max(1, value // 2)
        out.append(value)
    return out


def fit_problem(cfg: Any, model: ModelShape, run: RunShape, judge_holds_model: bool, gpu_gib: float) -> str | None:
    """The dry run's memory verdict: None when every GPU fits, else why not and which changes would fit."""
    problem = over_memory(role_tenants(cfg, model, run, judge_holds_model), gpu_gib)
    if problem is None:
        return None
    fixes = memory_fixes(cfg, model, run, judge_holds_model, gpu_gib)
    hint = "; no change the dry run knows of fits" if not fixes else (
        "; any one of these fits: " + ", ".join(fixes) if len(fixes) > 1 or "together" not in fixes[0] else "; this fits: " + fixes[0]
    )
    return problem + hint + " (activation checkpointing is not available yet; --allow-over-memory to go on anyway)"


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
