"""The whole run's config: model, judge, algorithm, curriculum, prompts, sampling, resources, guard, logger,
trainer and Ray sections."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rayunify.builtins import PROMPT_SOURCES, prompt_source
from rayunify.config.algorithms import AlgorithmConfig, DPOConfig
from rayunify.config.base import Strict, variants
from rayunify.config.divergence import DivergenceConfig
from rayunify.config.health import HealthConfig
from rayunify.config.judges import (
    HFVLMJudgeConfig,
    JudgeConfig,
    PythonJudgeConfig,
    SelfJudgeConfig,
    ShapesCheckerJudgeConfig,
    VLLMJudgeConfig,
)
from rayunify.config.models import JanusModelConfig, ModelConfig
from rayunify.config.resources import (
    _CUSTOM_RESOURCES_HELP,
    JudgeResources,
    RolloutResources,
    _check_custom_resources,
)
from rayunify.config.transport import push_backend
from rayunify.types import SamplingSettings


# ---------------------------------------------------------------------------------------------- curriculum
class CurriculumConfig(Strict):
    type: Literal["none", "replay", "adaptive"] = Field(
        "none",
        description="none; replay: the paper's discard-pool replay at `replay_at`; adaptive: replay plus "
        "difficulty-ranked sampling and an admission schedule for harder prompts.",
    )
    replay_at: list[int] = Field(default_factory=list, description="Epochs (offline) or steps (online) to replay.")
    priority_alpha: float = Field(1.0, ge=0, description="Pair sampling priority ∝ (difficulty + eps)^alpha.")
    admit_threshold: float = Field(0.5, gt=0, lt=1, description="Pass rate that admits the next level.")
    smoothing: float = Field(0.3, gt=0, le=1, description="EMA weight of the newest pass-rate observation.")
    levels: list[str] | None = Field(
        None,
        description="adaptive: the prompt categories in admission order, easiest first (every training category must "
        "be listed). None: ordered by the start evaluation's acceptance rate (the model's own judge), highest "
        "first; the order the training prompts first name them breaks ties, unmeasured categories come last.",
    )


# ---------------------------------------------------------------------------------------------- the rest
class PromptsConfig(Strict):
    source: str = Field(
        "shapes", description="file: prompt files; hf_dataset: a `datasets` dataset; or a prompt source a plugin "
        "registers (shapes: ShapesWorld's generator).",
    )
    path: str | None = Field(
        None, description="source=file: a prompt file, a directory of them or a glob (e.g. dataset/*_train.txt)."
    )
    eval_path: str | None = Field(
        None, description="Like path, for evaluation; None: a seeded, category-stratified held-out split of the "
        "training prompts (removed from training)."
    )
    format: Literal["auto", "jsonl", "txt", "t2i_compbench", "geneval"] = Field(
        "auto",
        description="txt: a prompt per line; jsonl: {'prompt', 'category'?}; t2i_compbench: a prompt per line, "
        "category from the file name (color_val.txt → color); geneval: evaluation_metadata.jsonl (category = tag); "
        "auto: by suffix and content. Applies to `path` only.",
    )
    eval_format: Literal["auto", "jsonl", "txt", "t2i_compbench", "geneval"] = Field(
        "auto", description="Like format, for eval_path."
    )
    overlap: Literal["drop", "refuse", "keep"] = Field(
        "drop",
        description="Prompts in both the training and the eval source (the official T2I-CompBench files share two "
        "spatial prompts between train and val). drop: removed from training, each text reported; refuse: an "
        "error when a sampled eval prompt is also a sampled training prompt; keep: trained on and evaluated "
        "(the figures then partly measure memorisation), reported.",
    )
    dataset: str | None = Field(None, description="source=hf_dataset: a `datasets` name or a local dataset path.")
    split: str = Field("train", description="source=hf_dataset: the training split.")
    eval_split: str | None = Field(
        None,
        description="source=hf_dataset: the eval split (None: as eval_path). source=shapes: test (the reported "
        "figures) or validation (choosing settings), both held out from the base by meaning and disjoint from each "
        "other; None: the held-out list runs used before them. source=shapes_v2: validation (the default) or test.",
    )
    column: str = Field("prompt", description="source=hf_dataset: the column that holds the prompt text.")
    category_column: str | None = Field(None, description="source=hf_dataset: a column holding the category.")
    n_train: int = Field(256, gt=0, description="At most this many training prompts (a seeded subset of larger sources).")
    n_eval: int = Field(64, gt=0, description="At most this many evaluation prompts.")
    seed: int = Field(0, description="Seeds the subset and the held-out split of the prompts.")
    categories: list[str] | None = Field(
        None,
        description="source=shapes: only these ShapesWorld categories (e.g. [single_object, colour]); n_train and "
        "n_eval are then upper bounds. None: all.",
    )

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in ("file", "hf_dataset"):
            prompt_source(value)  # raises, naming the sources there are
        return value

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        source = info.data.get("source")  # None: the source was invalid (reported on its own)
        if value is None or source in (None, "file", "hf_dataset"):
            return value
        check = prompt_source(source).check_categories
        if check is None:
            raise ValueError(f"source={source} has no categories")
        return check(value)

    @model_validator(mode="before")
    @classmethod
    def _renamed_allow_overlap(cls, data: Any) -> Any:
        if isinstance(data, dict) and "allow_overlap" in data:
            raise ValueError("prompts.allow_overlap was replaced by prompts.overlap: drop (the default), refuse, "
                             "or keep (what allow_overlap=true did)")  # fmt: skip
        return data

    @model_validator(mode="after")
    def _source_needs_its_location(self) -> PromptsConfig:
        if self.source == "file" and not self.path:
            raise ValueError("prompts.path is required when prompts.source=file")
        if self.source == "hf_dataset" and not self.dataset:
            raise ValueError("prompts.dataset is required when prompts.source=hf_dataset")
        if self.categories is not None and self.source in ("file", "hf_dataset"):
            raise ValueError("prompts.categories applies to source=shapes only (other sources: filter the files)")
        if self.source == "file" and self.eval_split is not None:
            raise ValueError("prompts.eval_split applies to source=shapes, shapes_v2 or hf_dataset (files: prompts.eval_path)")
        if self.source not in ("file", "hf_dataset") and self.eval_split is not None:
            splits = prompt_source(self.source).eval_splits
            if self.eval_split not in splits:
                raise ValueError(
                    f"prompts.eval_split={self.eval_split!r} is not a split of source={self.source!r}; "
                    f"choose one of: {', '.join(splits)} (or null)"
                )
        return self


class SamplingConfig(Strict):
    samples_per_prompt: int = Field(4, ge=2, description="N images per prompt (the paper uses 10).")
    guidance_scale: float = Field(
        5.0, ge=1, description="Classifier-free guidance s: uncond + s · (cond − uncond); 1: no guidance (one pass)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of image tokens.")
    top_k: int | None = Field(None, gt=0, description="Sample from the k likeliest tokens (Janus only). None: all.")
    geometry: Literal["conditional", "cfg"] = Field(
        "conditional", description="Which distribution log-probs are taken under, for policy and reference alike."
    )

    def settings(self) -> SamplingSettings:
        """What every sample records about how it was drawn."""
        return SamplingSettings(self.guidance_scale, self.temperature, self.top_k, self.geometry)

    def rows_per_prompt(self, n: int | None = None) -> int:
        """Rows one prompt takes in a generate call: its n samples, doubled by CFG's unconditional twins."""
        return (n or self.samples_per_prompt) * (2 if self.guidance_scale > 1 else 1)


# Ray's own names: asked for through num_cpus / num_gpus, or not per actor at all.
class LearnerConfig(Strict):
    num_ranks: int = Field(1, ge=1, description="DeepSpeed ranks (one Ray actor each); gloo on CPU, NCCL on GPUs.")
    num_cpus: float = Field(1, ge=0, description="CPUs per rank.")
    num_gpus: float = Field(0, ge=0, description="GPUs per rank.")
    resources: dict[str, float] = Field(default_factory=dict, description=_CUSTOM_RESOURCES_HELP)
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage: what the ranks shard.")
    lr: float = Field(1e-5, gt=0, allow_inf_nan=False, description="AdamW learning rate (finite, > 0).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clipping.")
    batch_size: int = Field(
        8, gt=0, description="Pairs (DPO) or images (SFT) per optimizer step, all ranks; GRPO: the most prompts' "
        "groups (× samples_per_prompt images) one step trains on, in ppo_epochs passes of mini_batch_size images."
    )  # fmt: skip
    bf16: bool = Field(False, description="DeepSpeed bf16 training (GPUs).")
    weight_transport: Literal["object_store", "broadcast"] = Field(
        "object_store",
        description="How pushes travel: one object in Ray's object store read by every receiver, or a "
        "broadcast in a process group of learner rank 0 and the receivers (nccl when each holds whole GPUs, gloo "
        "when any has none; fractional GPUs, which may share a device, are refused for broadcast).",
    )
    push_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Broadcast pushes: the most seconds a collective of the push group, or the driver's wait for "
        "its members, may take. A receiver that dies mid-push is noticed within it, restarted, and the push "
        "retried once.",
    )

    _custom = field_validator("resources")(_check_custom_resources)


class GuardConfig(Strict):
    """The co-degradation guard: a reference judge re-scores a share of fresh samples every `every` steps."""

    enabled: bool = Field(True, description="Run the co-degradation guard (checks, alarms, the probe).")
    reference: variants(  # type: ignore[valid-type]
        ShapesCheckerJudgeConfig, SelfJudgeConfig, PythonJudgeConfig, HFVLMJudgeConfig, VLLMJudgeConfig
    ) = Field(
        default_factory=ShapesCheckerJudgeConfig
    )
    every: int = Field(1, gt=0, description="Online: steps between checks. Offline: the build and every epoch's end.")
    fraction: float = Field(0.25, gt=0, le=1, description="Share of a checked step's samples the reference re-scores.")
    min_agreement: float = Field(0.6, ge=0, le=1, description="Alarm below this judge-reference agreement.")
    window: int = Field(
        3, gt=0, description="Checks pooled for the agreement alarm; the trend compares the latest `window` "
        "checks with the `window` before them."
    )
    stop_on_alarm: bool = Field(False, description="On an alarm: save a checkpoint and stop, with the measurements.")
    probe_size: int = Field(16, ge=0, description="Size of the frozen false-positive probe set (0: off).")
    divergence: DivergenceConfig = Field(
        default_factory=DivergenceConfig, description="Stop on a gradient-norm spike or collapse (docs/operations.md)."
    )


class LoggerConfig(Strict):
    type: Literal["wandb", "jsonl"] = Field(
        "wandb", description="wandb (offline unless WANDB_API_KEY / WANDB_MODE say otherwise) besides metrics.jsonl, or jsonl only."
    )
    project: str = Field("rayunify", description="wandb project.")
    run_name: str | None = Field(None, description="wandb run name. None: trainer.run_name.")
    image_every: int = Field(5, gt=0, description="Steps between image grids with verdicts.")


class TrainerConfig(Strict):
    mode: Literal["online", "offline"] = Field(
        "online", description="online: generate, judge and train every step; offline: build the data set once, then epochs."
    )
    sync: Literal["sync", "async"] = Field(
        "sync", description="sync: strictly on-policy; async: the next step's collection overlaps training."
    )
    max_staleness: int = Field(1, ge=0, description="Async: the most policy versions a sample may lag.")
    steps: int = Field(20, gt=0, description="Online: learner steps. Offline: ignored (epochs of full passes).")
    prompts_per_step: int = Field(
        8, gt=0, description="Online: prompts generated (× samples_per_prompt) per step. Offline: prompts of the "
        "guard's fresh sample at each epoch's end."
    )
    epochs: int = Field(
        1, gt=0, description="Offline: full passes (without replacement) over the data; a curriculum replay adds "
        "to it first (Algorithm 2), so its epoch and later ones are longer."
    )
    epoch_steps: Literal["all", "first"] = Field(
        "all",
        description="Offline: 'all' passes over everything held (a curriculum replay lengthens later epochs, as "
        "the paper trains on the enlarged set); 'first' keeps every epoch as long as the first, drawing that many "
        "items without replacement (a curriculum at the plain recipe's step budget).",
    )
    build_chunk_prompts: int | None = Field(
        256,
        gt=0,
        description="Offline: the build generates and judges this many prompts at a time, hands each chunk to the "
        "training data and checkpoints after it, so memory does not grow with the prompt count and a build that "
        "dies resumes (trainer.resume) from its last finished chunk. None: every prompt in one chunk.",
    )
    push_every: int = Field(1, gt=0, description="Learner steps between weight pushes to the rollout actors and live judges.")
    eval_every: int = Field(10, gt=0, description="Steps between evaluations (and probes, fixed-image and judge-set checks).")
    eval_prompts: int = Field(32, gt=0, description="Eval prompts used at each evaluation (from prompts' eval split).")
    eval_samples_per_prompt: int = Field(2, gt=0, description="Images per eval prompt at each evaluation.")
    eval_fixed_images: bool = Field(
        True, description="Re-judge the start evaluation's images at every evaluation (fixed/*): whether the judge "
        "itself changed, apart from the images it judges."
    )
    judge_set_size: int = Field(
        0, ge=0, description="Images of the fixed judge set (balanced accepted/rejected per category: renders and "
        "the starting model's own samples for the eval prompts, labelled by the prompt source's checker), re-judged "
        "at every evaluation (judgeset/*: AUROC of P(yes), balanced accuracy). 0: off. Sources with a checker only (shapes, shapes_v2)."
    )
    judge_set_train_size: int = Field(
        0, ge=0, description="Images of a second fixed judge set, built the same way on the run's training prompts "
        "(judgeset_train/*): where updates from the training pairs should move the judge first, beside the held-out "
        "set. 0: off. Sources with a checker only (shapes, shapes_v2)."
    )
    checkpoint_every: int = Field(10, gt=0, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(2, gt=0, description="Checkpoints kept; older ones are deleted.")
    resume: bool | Literal["auto"] = Field(
        False, description="true: continue from the newest intact checkpoint (refused if there is none); auto: the "
        "same, or start fresh when the run directory holds no checkpoint (`--resume` / `--resume=auto` set it)."
    )
    overwrite: bool = Field(
        False, description="A fresh start in a run directory that holds checkpoints deletes them (refused otherwise)."
    )
    seed: int = Field(0, description="Seeds sampling, pairing and the data order (not the built-in base: model.builtin_seed).")
    output_dir: str = Field("runs", description="Where run directories go.")
    run_name: str = Field("run", description="The run directory's name under output_dir.")

    @model_validator(mode="after")
    def _async_needs_staleness(self) -> TrainerConfig:
        if self.sync == "async" and self.max_staleness < 1:
            raise ValueError("trainer.sync=async needs trainer.max_staleness >= 1 (0 is the sync mode)")
        return self

    @model_validator(mode="after")
    def _pushes_keep_samples_fresh(self) -> TrainerConfig:
        # Samples older than the staleness bound are evicted unused: pushing less often than the bound allows
        # would silently skip batches.
        if self.mode == "online" and self.sync == "sync" and self.push_every > 1:
            raise ValueError(
                f"trainer.push_every={self.push_every} with trainer.sync=sync: sync is strictly on-policy, so every "
                "sample drawn between pushes would be stale and dropped; use push_every=1, or sync=async with "
                "max_staleness >= push_every"
            )
        if self.mode == "online" and self.sync == "async" and self.push_every > self.max_staleness:
            raise ValueError(
                f"trainer.push_every={self.push_every} exceeds trainer.max_staleness={self.max_staleness}: samples "
                "drawn between pushes would be dropped as stale; raise max_staleness or lower push_every"
            )
        return self


class RayConfig(Strict):
    address: str | None = Field(None, description="None: start a local cluster; 'auto' inside `ray job submit`.")
    num_cpus: int | None = Field(None, description="CPUs of a local cluster this run starts. None: the machine's.")
    connect_timeout_s: float = Field(
        15.0, gt=0, description="ray.address: the most seconds to wait for the cluster to answer before giving up."
    )
    gpu_memory_gib: float | None = Field(
        None,
        gt=0,
        description="Memory of each GPU the run will use, in GiB (an 80 GB H100 holds 79.6): the dry run fails "
        "when its estimate for the worst-packed GPU is above it (`--allow-over-memory` to go on). None: this "
        "machine's GPU, or no check without one.",
    )


class Config(Strict):
    """The whole run. `rayunify train --config FILE key=value …` builds it; the run directory keeps it."""

    model: ModelConfig = Field(default_factory=JanusModelConfig)
    judge: JudgeConfig = Field(default_factory=SelfJudgeConfig)
    algorithm: AlgorithmConfig = Field(default_factory=DPOConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rollout: RolloutResources = Field(default_factory=RolloutResources)
    judge_actors: JudgeResources = Field(default_factory=JudgeResources)  # where judging runs; `judge` what judges
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _judge_set_has_labels(self) -> Config:
        sizes = {"judge_set_size": self.trainer.judge_set_size, "judge_set_train_size": self.trainer.judge_set_train_size}
        source = PROMPT_SOURCES.get(self.prompts.source)
        for key, size in sizes.items():
            if size > 0 and (source is None or source.judge_set is None):
                raise ValueError(
                    f"trainer.{key}={size} needs a prompt source that labels images (prompts.source=shapes or "
                    f"shapes_v2); prompts.source={self.prompts.source!r} has no checker: set it to 0"
                )
        return self

    @model_validator(mode="after")
    def _max_rows_fits_a_prompt(self) -> Config:
        rows = self.sampling.rows_per_prompt()
        if self.rollout.max_rows is not None and self.rollout.max_rows < rows:
            raise ValueError(
                f"rollout.max_rows={self.rollout.max_rows} is less than one prompt's rows ({rows}: "
                f"samples_per_prompt={self.sampling.samples_per_prompt}"
                f"{', x2 for the CFG twins' if rows > self.sampling.samples_per_prompt else ''}); raise it to at least {rows}"
            )
        return self

    @model_validator(mode="after")
    def _broadcast_needs_distinct_gpus(self) -> Config:
        if self.learner.weight_transport == "broadcast":
            try:
                push_backend(self.learner.num_gpus, self.push_receiver_gpus())
            except ValueError as err:
                raise ValueError(f"learner.weight_transport=broadcast: {err}") from None
        return self

    def training_judges(self) -> list[Any]:
        """The judges the judge actors run for training: `judge:` and GRPO's reward judges."""
        rewards = getattr(self.algorithm, "rewards", None) or []
        return [self.judge, *(term.judge for term in rewards)]

    def has_live_judges(self) -> bool:
        """Whether a judge the judge actors run is the model itself with live weights (a wrapper judge, e.g.
        noisy, names the judge it wraps): then they take weight pushes too."""
        bases = [getattr(j, "base", j) for j in self.training_judges()]
        return any(j.type == "self" and j.weights == "live" for j in bases)

    def push_receiver_gpus(self) -> list[float]:
        """GPUs per actor of each role that takes weight pushes: rollout, and the judges when they are live."""
        return [self.rollout.num_gpus] + ([self.judge_actors.num_gpus] if self.has_live_judges() else [])
