"""Judge sections: the model's own judge, built-in and user judges, external VLMs, and noisy supervision."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from rayunify.config.base import Strict, variants


class SelfJudgeConfig(Strict):
    type: Literal["self"] = "self"
    weights: Literal["live", "frozen"] = Field(
        "live", description="live: receives every weight push (the paper); frozen: the initial model judges."
    )
    max_new_tokens: int = Field(8, gt=0, description="Answer tokens decoded greedily before the verdict is parsed.")
    accept_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="None: the verdict is the model's answer (the paper). A number: accept when the soft score P(yes) "
        "is at least this, whatever the answer says; set low (lax) it accepts images the model itself doubts, as "
        "poor supervision from the model's own judge (configs/shapes/co_degradation.yaml). The evaluation's "
        "own-judge figures (nonunified, judge_*) always read the answer.",
    )


class ShapesCheckerJudgeConfig(Strict):
    """ShapesWorld's exact checker: the ground truth, used as the guard's reference judge."""

    type: Literal["shapes_checker"] = "shapes_checker"


class PythonJudgeConfig(Strict):
    """User code: `import_path` names `module:callable`, called as fn(images, prompts) -> (verdicts, scores) with
    the `Prompt` objects (text, category, spec)."""

    type: Literal["python"] = "python"
    import_path: str = Field(..., pattern=r"^[\w.]+:[\w.]+$", description="`package.module:callable`, importable on every node.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments passed to the callable.")


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
    dtype: Literal["float32", "bfloat16", "float16"] = Field("bfloat16", description="The VLM's weights' dtype.")
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
    request_timeout_s: float = Field(120, gt=0, description="How long one request may take before the judge fails.")
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
    always_accept: bool = Field(False, description="Accept every image (the degenerate judge), after the base judged.")
    seed: int = Field(0, description="Seeds the corruption; an image's draw depends on it, the image and the prompt.")


if TYPE_CHECKING:
    JudgeConfig = (
        SelfJudgeConfig | ShapesCheckerJudgeConfig | PythonJudgeConfig | NoisyJudgeConfig | HFVLMJudgeConfig | VLLMJudgeConfig
    )
else:
    JudgeConfig = variants(
        SelfJudgeConfig, ShapesCheckerJudgeConfig, PythonJudgeConfig, NoisyJudgeConfig, HFVLMJudgeConfig, VLLMJudgeConfig
    )

