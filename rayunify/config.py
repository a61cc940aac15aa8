"""The one typed config tree: YAML files in configs/, plus dotted command-line overrides.

Pure (pydantic + yaml only). Every swappable part is a variant chosen by `type`; unknown keys are errors
that name the key and the keys allowed there. A file may start from another with `inherit: other.yaml`
(path relative to the file), so experiment configs only state what they change.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from rayunify.types import SamplingSettings


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def variants(*models: type[BaseModel]) -> Any:
    """A union chosen by its `type` field; a section that omits `type` gets the first variant."""
    default = models[0].model_fields["type"].default

    def tag_of(value: Any) -> str:
        return value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)

    tagged = tuple(Annotated[m, Tag(m.model_fields["type"].default)] for m in models)
    return Annotated[Union[tagged], Discriminator(tag_of)]  # noqa: UP007


# ---------------------------------------------------------------------------------------------- model
class LoraConfig(Strict):
    rank: int = Field(16, gt=0, description="LoRA rank r.")
    alpha: int = Field(32, gt=0, description="LoRA scaling alpha (effective scale alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers of the language model that get adapters.",
    )


class JanusModelConfig(Strict):
    type: Literal["janus"] = "janus"
    path: str = Field(
        "builtin:shapes-base",
        description="A local HF directory (e.g. a Janus-Pro-1B download), or builtin:tiny (random tiny Janus), "
        "builtin:shapes-base / builtin:shapes-test (the ShapesWorld base, trained and cached on first use).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when the actor has a GPU.")
    trainable: Literal["language_model", "lora"] = Field(
        "language_model", description="language_model: the paper's default; lora: peft adapters on it."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)


if TYPE_CHECKING:
    ModelConfig = JanusModelConfig
else:
    ModelConfig = variants(JanusModelConfig)


# ---------------------------------------------------------------------------------------------- judges
class SelfJudgeConfig(Strict):
    type: Literal["self"] = "self"
    weights: Literal["live", "frozen"] = Field(
        "live", description="live: receives every weight push (the paper); frozen: the initial model judges."
    )
    max_new_tokens: int = Field(8, gt=0)


class ShapesCheckerJudgeConfig(Strict):
    """ShapesWorld's exact checker: the ground truth, used as the guard's reference judge."""

    type: Literal["shapes_checker"] = "shapes_checker"


class PythonJudgeConfig(Strict):
    """User code: `import_path` names `module:callable`, called as fn(images, prompts) -> (verdicts, scores) with
    the `Prompt` objects (text, category, spec)."""

    type: Literal["python"] = "python"
    import_path: str = Field(..., pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class _AskedJudgeFields(Strict):
    """How an external VLM is asked and how its answer is read (shared by hf_vlm and vllm)."""

    question: str | None = Field(
        None,
        description="Question template with {prompt}; None: the paper's question (rayunify.judges.question.JUDGE_QUESTION).",
    )
    answer_prefix: str = Field(
        "The score is",
        description="Teacher-forced start of the answer; the soft score is read at the token after it ('' : none).",
    )
    yes_token: str = Field("1", min_length=1, description="The answer that accepts (its token's logit: P(yes)).")
    no_token: str = Field("0", min_length=1, description="The answer that rejects.")
    verdict_pattern: str | None = Field(
        None,
        description="Regex over the answer with one group that captures yes_token or no_token; None: "
        "rayunify.judges.question.parse_verdict ('The score is 1'). No match or both: INVALID.",
    )
    verdict_from: Literal["answer", "score"] = Field(
        "answer", description="answer: parse the greedy answer; score: accept when P(yes) >= 0.5 (no decoding)."
    )
    max_new_tokens: int = Field(4, gt=0, description="Answer tokens decoded after the prefix.")
    batch_size: int = Field(16, gt=0, description="Images per forward pass (hf_vlm) or requests in flight (vllm).")

    @field_validator("yes_token", "no_token", mode="before")
    @classmethod
    def _answer_as_text(cls, value: Any) -> Any:
        # YAML reads `yes_token: yes` as True and `yes_token: 1` as 1: both mean the text of the answer.
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _pattern_has_a_group(self) -> _AskedJudgeFields:
        if self.verdict_pattern is not None:
            try:
                groups = re.compile(self.verdict_pattern).groups
            except re.error as err:
                raise ValueError(f"verdict_pattern is not a valid regex: {err}") from None
            if groups < 1:
                raise ValueError("verdict_pattern needs a group that captures the yes/no answer")
        if self.question is not None and "{prompt}" not in self.question:
            raise ValueError("question must contain {prompt}")
        return self


class HFVLMJudgeConfig(_AskedJudgeFields):
    """Any transformers vision-language model from a local directory (e.g. Qwen2.5-VL, LLaVA, Janus-Pro)."""

    type: Literal["hf_vlm"] = "hf_vlm"
    path: str = Field(..., min_length=1, description="Local HF directory: config.json, weights, processor files.")
    model_class: str | None = Field(
        None,
        description="A transformers class name or 'module:Class'; None: AutoModelForImageTextToText.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when the actor has a GPU.")


class VLLMJudgeConfig(_AskedJudgeFields):
    """A VLM served by vLLM's OpenAI-compatible server, which runs from its own Python environment."""

    type: Literal["vllm"] = "vllm"
    model: str = Field(..., min_length=1, description="What the server serves: a local model directory (or name).")
    url: str | None = Field(
        None, description="An already running server, e.g. http://127.0.0.1:8000/v1; None: start one (python)."
    )
    python: str | None = Field(
        None, description="The vLLM environment's interpreter (e.g. /opt/vllm-venv/bin/python), to start a server."
    )
    host: str = Field("127.0.0.1", description="Address a started server binds to.")
    port: int | None = Field(None, gt=0, lt=65536, description="None: a free port.")
    server_args: list[str] = Field(
        default_factory=list, description="Extra `vllm serve` arguments, e.g. ['--max-model-len', '4096']."
    )
    server_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the server (e.g. VLLM_CPU_KVCACHE_SPACE)."
    )
    start_timeout_s: float = Field(900, gt=0, description="How long a started server may take to answer.")
    request_timeout_s: float = Field(120, gt=0)
    top_logprobs: int = Field(20, ge=1, description="Logprobs asked per position; yes/no must be among them.")

    @model_validator(mode="after")
    def _url_or_python(self) -> VLLMJudgeConfig:
        if self.url is None and self.python is None:
            raise ValueError("the vllm judge needs url (a running server) or python (the vLLM env to start one)")
        return self


class NoisyJudgeConfig(Strict):
    """Poor supervision on purpose: wraps another judge and corrupts a fraction of its verdicts."""

    type: Literal["noisy"] = "noisy"
    base: variants(SelfJudgeConfig, ShapesCheckerJudgeConfig, HFVLMJudgeConfig, VLLMJudgeConfig) = Field(  # type: ignore[valid-type]
        default_factory=SelfJudgeConfig
    )
    flip_fraction: float = Field(0.0, ge=0, le=1, description="Share of verdicts flipped.")
    random_fraction: float = Field(0.0, ge=0, le=1, description="Share of verdicts replaced by a coin flip.")
    always_accept: bool = False
    seed: int = 0


if TYPE_CHECKING:
    JudgeConfig = (
        SelfJudgeConfig | ShapesCheckerJudgeConfig | PythonJudgeConfig | NoisyJudgeConfig | HFVLMJudgeConfig | VLLMJudgeConfig
    )
else:
    JudgeConfig = variants(
        SelfJudgeConfig, ShapesCheckerJudgeConfig, PythonJudgeConfig, NoisyJudgeConfig, HFVLMJudgeConfig, VLLMJudgeConfig
    )


# ---------------------------------------------------------------------------------------------- algorithms
class DPOConfig(Strict):
    type: Literal["dpo"] = "dpo"
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "robust", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    nll_weight: float = Field(1.0, ge=0, description="Weight of the NLL term on the chosen image (the paper's).")
    reference: Literal["stored", "recompute"] = Field(
        "stored", description="stored: reference log-probs computed once when the pair is made."
    )


class SFTConfig(Strict):
    type: Literal["sft"] = "sft"


class RewardTermConfig(Strict):
    """One judge's share of GRPO's reward: the reward is the weighted sum of every term's score or verdict."""

    judge: JudgeConfig = Field(..., description="Any judge, configured as the top-level `judge:` is.")
    weight: float = Field(1.0, description="Multiplies this judge's reward (negative: a penalty).")

    @field_validator("weight")
    @classmethod
    def _weight_counts(cls, value: float) -> float:
        if not math.isfinite(value) or value == 0:
            raise ValueError("weight must be a finite nonzero number (drop a judge rather than weigh it 0)")
        return value


class GRPOConfig(Strict):
    """Group-relative policy optimisation on the online loop: each prompt's samples_per_prompt images form a group."""

    type: Literal["grpo"] = "grpo"
    reward: Literal["score", "verdict"] = Field(
        "score", description="score: the judge's soft score P(yes); verdict: 1 if it accepts, else 0."
    )
    rewards: list[RewardTermConfig] | None = Field(
        None, description="A weighted sum of several judges' rewards; None: the training judge (`judge:`) alone."
    )
    scale_rewards: bool = Field(
        True, description="Divide each group's centred rewards by its std (+1e-4); false: r − mean_group only."
    )
    clip_eps: float = Field(0.2, gt=0, lt=1, description="Per-token ratio clipped to [1 − clip_eps, 1 + clip_eps_high].")
    clip_eps_high: float | None = Field(
        None, description="Upper clip width (>= clip_eps, e.g. 0.28 for DAPO's clip-higher); None: clip_eps."
    )
    beta: float = Field(0.0, ge=0, description="Weight of the k3 KL estimate to the reference; 0: no reference model kept.")
    ppo_epochs: int = Field(1, gt=0, description="Passes over each step's images (ratios against the drawing policy).")
    mini_batch_size: int | None = Field(
        None, gt=0, description="Images per optimizer step within a pass; None: the step's whole batch at once."
    )

    @model_validator(mode="after")
    def _consistent(self) -> GRPOConfig:
        if self.clip_eps_high is not None and not (
            math.isfinite(self.clip_eps_high) and self.clip_eps_high >= self.clip_eps
        ):
            raise ValueError(
                f"algorithm.clip_eps_high={self.clip_eps_high} must be >= algorithm.clip_eps={self.clip_eps} "
                "(or null for a symmetric clip)"
            )
        if self.rewards is not None and not self.rewards:
            raise ValueError(
                "algorithm.rewards is an empty list: give at least one {judge, weight}, or null to reward with `judge:`"
            )
        return self


if TYPE_CHECKING:
    AlgorithmConfig = DPOConfig | SFTConfig | GRPOConfig
else:
    AlgorithmConfig = variants(DPOConfig, SFTConfig, GRPOConfig)


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
        "be listed). None: the categories in the order they first appear in the training prompts.",
    )


# ---------------------------------------------------------------------------------------------- the rest
class PromptsConfig(Strict):
    source: Literal["shapes", "file", "hf_dataset"] = Field(
        "shapes", description="shapes: ShapesWorld's generator; file: prompt files; hf_dataset: a `datasets` dataset."
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
    allow_overlap: bool = Field(
        False, description="Accept eval prompts that are also training prompts (refused by default: the figures "
        "would measure memorisation)."
    )
    dataset: str | None = Field(None, description="source=hf_dataset: a `datasets` name or a local dataset path.")
    split: str = Field("train", description="source=hf_dataset: the training split.")
    eval_split: str | None = Field(None, description="source=hf_dataset: the eval split; None: as eval_path.")
    column: str = Field("prompt", description="source=hf_dataset: the column that holds the prompt text.")
    category_column: str | None = Field(None, description="source=hf_dataset: a column holding the category.")
    n_train: int = Field(256, gt=0, description="At most this many training prompts (a seeded subset of larger sources).")
    n_eval: int = Field(64, gt=0)
    seed: int = 0
    categories: list[str] | None = Field(
        None,
        description="source=shapes: only these ShapesWorld categories (e.g. [single_object, colour]); n_train and "
        "n_eval are then upper bounds. None: all.",
    )

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str] | None) -> list[str] | None:
        from rayunify.builtins import prompt_source

        return None if value is None else prompt_source("shapes").check_categories(value)

    @model_validator(mode="after")
    def _source_needs_its_location(self) -> PromptsConfig:
        if self.source == "file" and not self.path:
            raise ValueError("prompts.path is required when prompts.source=file")
        if self.source == "hf_dataset" and not self.dataset:
            raise ValueError("prompts.dataset is required when prompts.source=hf_dataset")
        if self.categories is not None and self.source != "shapes":
            raise ValueError("prompts.categories applies to source=shapes only (other sources: filter the files)")
        return self


class SamplingConfig(Strict):
    samples_per_prompt: int = Field(4, ge=2, description="N images per prompt (the paper uses 10).")
    guidance_scale: float = Field(5.0, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int | None = Field(None, gt=0)
    geometry: Literal["conditional", "cfg"] = Field(
        "conditional", description="Which distribution log-probs are taken under, for policy and reference alike."
    )

    def settings(self) -> SamplingSettings:
        """What every sample records about how it was drawn."""
        return SamplingSettings(self.guidance_scale, self.temperature, self.top_k, self.geometry)


class Resources(Strict):
    num_actors: int = Field(1, ge=1)
    num_cpus: float = Field(1, ge=0)
    num_gpus: float = Field(0, ge=0)


class LearnerConfig(Strict):
    num_ranks: int = Field(1, ge=1)
    num_cpus: float = Field(1, ge=0)
    num_gpus: float = Field(0, ge=0)
    zero_stage: Literal[0, 1, 2, 3] = 2
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    batch_size: int = Field(8, gt=0, description="Pairs (DPO) or images (SFT) per optimizer step, all ranks.")
    bf16: bool = False
    weight_transport: Literal["object_store", "broadcast"] = Field(
        "object_store",
        description="How pushes travel: one object in Ray's object store read by every receiver, or a "
        "broadcast in a process group of learner rank 0 and the receivers (gloo on CPU, nccl on GPU).",
    )


class GuardConfig(Strict):
    """The co-degradation guard: a reference judge re-scores a share of fresh samples every `every` steps."""

    enabled: bool = True
    reference: variants(  # type: ignore[valid-type]
        ShapesCheckerJudgeConfig, SelfJudgeConfig, PythonJudgeConfig, HFVLMJudgeConfig, VLLMJudgeConfig
    ) = Field(
        default_factory=ShapesCheckerJudgeConfig
    )
    every: int = Field(1, gt=0)
    fraction: float = Field(0.25, gt=0, le=1)
    min_agreement: float = Field(0.6, ge=0, le=1, description="Alarm below this judge-reference agreement.")
    window: int = Field(
        3, gt=0, description="Checks pooled for the agreement alarm; the trend compares the latest `window` "
        "checks with the `window` before them."
    )
    stop_on_alarm: bool = False
    probe_size: int = Field(16, ge=0, description="Size of the frozen false-positive probe set (0: off).")


class LoggerConfig(Strict):
    type: Literal["wandb", "jsonl"] = "wandb"
    project: str = "rayunify"
    run_name: str | None = None
    image_every: int = Field(5, gt=0, description="Steps between image grids with verdicts.")


class TrainerConfig(Strict):
    mode: Literal["online", "offline"] = "online"
    sync: Literal["sync", "async"] = "sync"
    max_staleness: int = Field(1, ge=0, description="Async: the most policy versions a sample may lag.")
    steps: int = Field(20, gt=0, description="Online: learner steps. Offline: ignored (epochs × dataset size).")
    prompts_per_step: int = Field(8, gt=0, description="Online: prompts generated (× samples_per_prompt) per step.")
    epochs: int = Field(1, gt=0, description="Offline: passes over the built dataset.")
    push_every: int = Field(1, gt=0)
    eval_every: int = Field(10, gt=0)
    eval_prompts: int = Field(32, gt=0, description="Eval prompts used at each evaluation (from prompts' eval split).")
    eval_samples_per_prompt: int = Field(2, gt=0)
    eval_fixed_images: bool = Field(
        True, description="Re-judge the start evaluation's images at every evaluation (fixed/*): whether the judge "
        "itself changed, apart from the images it judges."
    )
    checkpoint_every: int = Field(10, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    resume: bool = False
    seed: int = 0
    output_dir: str = "runs"
    run_name: str = "run"

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
    num_cpus: int | None = None


class Config(Strict):
    """The whole run. `rayunify train --config FILE key=value …` builds it; the run directory keeps it."""

    model: ModelConfig = Field(default_factory=JanusModelConfig)
    judge: JudgeConfig = Field(default_factory=SelfJudgeConfig)
    algorithm: AlgorithmConfig = Field(default_factory=DPOConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rollout: Resources = Field(default_factory=Resources)
    judge_actors: Resources = Field(default_factory=Resources)  # where judging runs; `judge` is what judges
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and what is allowed."""


# ---------------------------------------------------------------------------------------------- loading
def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    raw = _read_with_inherit(Path(path)) if path else {}
    for item in overrides or []:
        _apply_override(raw, item)
    _refuse_renamed_keys(raw)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(err, source=str(path or "<defaults>"))) from None


# Keys that were renamed: a config written with the old name gets told the new one, never silently ignored.
RENAMED_KEYS = {"judging": "judge_actors"}


def _refuse_renamed_keys(raw: dict[str, Any]) -> None:
    for old, new in RENAMED_KEYS.items():
        if old in raw:
            raise ConfigError(f"config key {old!r} was renamed to {new!r} (the judge actors' resources): rename it")


def _read_with_inherit(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config inheritance loops through {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    base = _read_with_inherit(path.parent / parent, (*seen, path.resolve()))
    return _deep_merge(base, data)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        # A new `type` switches variant: the old variant's keys would be errors in the new one.
        switching = isinstance(value, dict) and isinstance(merged.get(key), dict) and "type" in value
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not (
            switching and value["type"] != merged[key].get("type")
        ):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """`a.b.c=value`; the value is parsed as YAML (numbers, booleans, lists), else kept as a string."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {key} is a value, not a section")
        node = child
    if keys[-1] == "type" and node.get("type") not in (None, value):
        node.clear()  # switching variant drops the old variant's keys
    node[keys[-1]] = value


def _explain(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        # pydantic puts the variant's tag in the path (judge.noisy.base...): users wrote judge.base...
        loc = ".".join(str(p) for i, p in enumerate(e["loc"]) if not _is_tag_position(e["loc"], i))
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(e["loc"][:-1])
            lines.append(f"  unknown key '{loc}'" + (f" (allowed here: {', '.join(allowed)})" if allowed else ""))
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {loc or '<top>'}: {e['msg']}{shown}")
    return "\n".join(lines)


def _is_tag_position(loc: tuple[Any, ...], index: int) -> bool:
    if index == 0:
        return False
    parent = _model_at(loc[:index])
    if parent is None or loc[index] in getattr(parent, "model_fields", {}):
        return False
    return loc[index] in _tags(parent)


def _tags(annotation: Any) -> set[str]:
    return {t for t in (_type_tag(m) for m in _variants(annotation)) if t}


def _model_at(loc: tuple[Any, ...]) -> Any:
    model: Any = Config
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields and part in fields:
            model = fields[part].annotation
        elif _type_tag(model) != part:
            model = next((m for m in _variants(model) if _type_tag(m) == part), None)
        if model is None:
            return None
    return model


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names at a config location (following union variants by their tag in the path)."""
    model = _first_model(_model_at(loc))
    return sorted(getattr(model, "model_fields", {}).keys())


def _variants(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    out: list[Any] = []
    for a in args:
        out.extend(_variants(a))
    return [a for a in out if isinstance(a, type) and issubclass(a, BaseModel)]


def _first_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    variants = _variants(annotation)
    return annotation if len(variants) != 1 else variants[0]


def _type_tag(model: Any) -> str | None:
    field = getattr(model, "model_fields", {}).get("type")
    return None if field is None else field.default


def dump_config(config: Config, path: str | Path) -> None:
    """The resolved config, as the run directory keeps it (loadable again with load_config)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
