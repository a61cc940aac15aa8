"""The `model` section: which unified model, where its weights are, and what of it trains."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from rayunify.config.base import Strict, variants


class LoraConfig(Strict):
    rank: int = Field(16, gt=0, description="LoRA rank r.")
    alpha: int = Field(32, gt=0, description="LoRA scaling alpha (effective scale alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers of the language model that get adapters.",
    )


class ModelCommon(Strict):
    """What every model family's section has."""

    builtin_seed: int = Field(
        0, description="Which seed's model builtin:NAME is (the built-in bases are trained per seed). Not "
        "trainer.seed, so runs with several fine-tuning seeds start from one base.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="The dtype the model loads and trains in (bfloat16 on GPUs that have it)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when the actor has a GPU.")


class JanusModelConfig(ModelCommon):
    type: Literal["janus"] = "janus"
    path: str = Field(
        "builtin:shapes-base",
        description="A local HF directory (e.g. a Janus-Pro-1B download), or builtin:tiny (random tiny Janus), "
        "builtin:shapes-base / builtin:shapes-test (the ShapesWorld base, trained and cached on first use).",
    )
    trainable: Literal["language_model", "lora"] = Field(
        "language_model", description="language_model: the paper's default; lora: peft adapters on it."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Adapters when trainable=lora.")


class ShowoModelConfig(ModelCommon):
    type: Literal["showo"] = "showo"
    path: str = Field(
        "builtin:showo-tiny",
        description="A Show-o folder (config.json + showo.* safetensors, e.g. showlab/show-o-512x512), or "
        "builtin:showo-tiny (a tiny random Show-o for tests).",
    )
    tokenizer_path: str | None = Field(None, description="Phi-1.5's config and tokenizer (default: path/llm).")
    vq_path: str | None = Field(None, description="MAGVIT-v2's folder (default: path/vq).")
    variant: Literal["magvit", "clip"] = Field(
        "magvit", description="magvit: understanding reads MAGVIT-v2 codes; clip (CLIP-ViT features) is not supported yet."
    )
    logprob_estimator: Literal["trajectory", "masked"] = Field(
        "trajectory",
        description="trajectory: sum over sampling steps of log p of the tokens committed at that step (replays the "
        "recorded path, one forward per step); masked: one forward under a cosine-schedule mask seeded by the prompt.",
    )
    steps: int | None = Field(None, gt=0, description="Sampling steps T (None: 50 at 1,024 image tokens, else 18).")
    trainable: Literal["language_model", "lora"] = Field(
        "language_model", description="language_model: the whole Phi backbone; lora: peft adapters on it."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Targets default to q_proj, k_proj, v_proj, dense, fc1, fc2.")

    @model_validator(mode="after")
    def _supported_variant(self) -> ShowoModelConfig:
        if self.variant == "clip":
            raise ValueError("model.variant=clip: Show-o's CLIP-ViT variant is not supported yet (use magvit)")
        if "target_modules" not in self.lora.model_fields_set:  # LoraConfig's default names Janus's layers
            targets = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]
            object.__setattr__(self, "lora", LoraConfig(**{**self.lora.model_dump(), "target_modules": targets}))
        return self


if TYPE_CHECKING:
    ModelConfig = JanusModelConfig | ShowoModelConfig
else:
    ModelConfig = variants(JanusModelConfig, ShowoModelConfig)
