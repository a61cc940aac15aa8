"""The unified-model interface every model family implements (Janus today).

A unified model both draws images (as VQ tokens, autoregressively, with classifier-free guidance) and
judges them (its understanding branch answers the paper's question). The trainer only talks to this
interface, so another family (Show-o, Emu3, ...) is a new subclass, not a change to the loop.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rayunify.types import Geometry, Judgement, SamplingSettings


@dataclass
class LoraSettings:
    """peft adapters on the language model (`model.lora`); both families take the same settings."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def cache_root() -> Path:
    """Where built-in models are cached: $RAYUNIFY_CACHE, else ~/.cache/rayunify."""
    return Path(os.environ.get("RAYUNIFY_CACHE", Path.home() / ".cache" / "rayunify"))


def token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Padding-aware positions: 0 at each row's first real token (left padding keeps position 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


@dataclass
class GenerationOutput:
    """Images for prompts × n samples, rows grouped by prompt (p0s0, p0s1, …, p1s0, …)."""

    image_tokens: torch.Tensor  # (B*n, T) int64
    logprobs: torch.Tensor  # (B*n, T) behaviour log-probs of the drawn tokens, at temperature 1
    images: np.ndarray | None = None  # (B*n, H, W, 3) uint8, only when decoding was asked for
    # (B*n, T) int64, families that commit tokens out of order (Show-o): the step that committed each token.
    commit_steps: torch.Tensor | None = None


@dataclass
class TeacherForcedJudge:
    """One forward over the judge's question about each (image, prompt) followed by a given answer."""

    logits: torch.Tensor  # (B, last, V) at the sequence's last positions, with gradients
    vision_features: torch.Tensor  # (B, patches, width) the understanding image encoder's output, with gradients


class UnifiedModel(abc.ABC):
    """One model, two branches: generation (text → image tokens) and understanding (image → verdict)."""

    num_image_tokens: int
    end_of_answer: str  # the text that ends an answer of the understanding branch (its EOS token)

    @property
    @abc.abstractmethod
    def device(self) -> torch.device: ...

    @abc.abstractmethod
    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        settings: SamplingSettings | None = None,
        seed: int | Sequence[int] | None = None,
        decode: bool = False,
    ) -> GenerationOutput:
        """n samples per prompt. `seed`: one for the whole call, or one per prompt (its n samples draw from it,
        so a prompt's images do not depend on which other prompts share the call)."""

    @abc.abstractmethod
    def decode_images(self, image_tokens: torch.Tensor) -> np.ndarray: ...

    @abc.abstractmethod
    def judge(
        self, images: Sequence[np.ndarray], prompts: Sequence[str], max_new_tokens: int = 8
    ) -> list[Judgement]: ...

    @abc.abstractmethod
    def image_logprobs(
        self,
        prompts: Sequence[str],
        image_tokens: torch.Tensor,
        geometry: Geometry = "conditional",
        guidance_scale: float = 5.0,
        drop_prompt: torch.Tensor | None = None,
        commit_steps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced per-token log-probs (B, T) of `image_tokens` given `prompts`, with gradients;
        `drop_prompt` (B,) bool puts the unconditional prompt in those rows (training classifier-free
        guidance's unconditional branch); `commit_steps` (B, T): the sampler's path, for families that draw
        tokens out of order (`GenerationOutput.commit_steps`)."""

    @abc.abstractmethod
    def module(self) -> torch.nn.Module:
        """The torch module holding every weight: what the learner registers and trains, and what weight
        pushes and checkpoints copy tensor by tensor, by its parameter names."""

    @abc.abstractmethod
    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]: ...

    @abc.abstractmethod
    def save_pretrained(self, path: str | Path) -> None: ...

    @abc.abstractmethod
    def make_reference_copy(self) -> torch.nn.Module | None:
        """A frozen copy of the trained part, for reference log-probs while everything in it trains (TRL's
        ref_model); None where the family gets its reference without one (LoRA: the adapter disabled)."""

    def reference(self, frozen: torch.nn.Module | None = None) -> contextlib.AbstractContextManager[None]:
        """Context in which the model computes reference log-probs: with `frozen` (from `make_reference_copy`)
        standing in for the trained part, else the family's own reference (LoRA: adapter disabled)."""
        if frozen is not None:
            raise NotImplementedError(f"{type(self).__name__} keeps no reference copies")
        return contextlib.nullcontext()

    # Needed only to train a base model from scratch (the ShapesWorld base): the understanding branch
    # teacher-forced and its image encoder on its own. A family that is never trained so may leave them.
    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        raise NotImplementedError(f"{type(self).__name__} does not support base training")

    def judge_inputs(
        self, images: Sequence[np.ndarray], prompts: Sequence[str], answers: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The model's inputs for the judge's question about each (image, prompt), followed by `answers`;
        "input_ids" (B, L) among them."""
        raise NotImplementedError(f"{type(self).__name__} does not support base training")

    def judge_teacher_forced(self, inputs: dict[str, torch.Tensor], last: int) -> TeacherForcedJudge:
        """`judge_inputs` through the model, logits kept at the `last` positions."""
        raise NotImplementedError(f"{type(self).__name__} does not support base training")

    def vision_features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, patches, width): the understanding branch's image encoder alone on `images`, with gradients."""
        raise NotImplementedError(f"{type(self).__name__} does not support base training")

    def vision_features_shape(self) -> tuple[int, int]:
        """(patches per image side, feature width) of `vision_features`."""
        raise NotImplementedError(f"{type(self).__name__} does not support base training")

    def vision_parameters(self) -> list[torch.nn.Parameter]:
        """The understanding branch's image encoder's parameters (pretrained alone before joint training)."""
        raise NotImplementedError(f"{type(self).__name__} does not support base training")

    # ------------------------------------------------------------------ argument checks every family shares
    def checked_image_tokens(self, prompts: Sequence[str], image_tokens: torch.Tensor, geometry: str) -> torch.Tensor:
        """`image_tokens` on this model's device, after checking the geometry and the (B, N) shape."""
        if geometry not in ("conditional", "cfg"):
            raise ValueError(f"geometry={geometry!r}: choose 'conditional' or 'cfg'")
        image_tokens = image_tokens.to(self.device)
        if image_tokens.shape != (len(prompts), self.num_image_tokens):
            raise ValueError(
                f"image_tokens has shape {tuple(image_tokens.shape)}; expected ({len(prompts)}, {self.num_image_tokens})"
            )
        return image_tokens


def check_judge_batch(images: Sequence[np.ndarray], prompts: Sequence[str]) -> None:
    """A judge call needs one prompt per image, and at least one image."""
    if len(images) != len(prompts):
        raise ValueError(f"judge got {len(images)} images for {len(prompts)} prompts")
    if len(images) == 0:
        raise ValueError("judge got no images")
