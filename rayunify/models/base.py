"""The unified-model interface every model family implements (Janus today).

A unified model both draws images (as VQ tokens, autoregressively, with classifier-free guidance) and
judges them (its understanding branch answers the paper's question). The trainer only talks to this
interface, so another family (Show-o, Emu3, ...) is a new subclass, not a change to the loop.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rayunify.types import Geometry, Judgement, SamplingSettings


@dataclass
class GenerationOutput:
    """Images for prompts × n samples, rows grouped by prompt (p0s0, p0s1, …, p1s0, …)."""

    image_tokens: torch.Tensor  # (B*n, T) int64
    logprobs: torch.Tensor  # (B*n, T) behaviour log-probs of the drawn tokens, at temperature 1
    images: np.ndarray | None = None  # (B*n, H, W, 3) uint8, only when decoding was asked for


class UnifiedModel(abc.ABC):
    """One model, two branches: generation (text → image tokens) and understanding (image → verdict)."""

    num_image_tokens: int

    @abc.abstractmethod
    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        settings: SamplingSettings | None = None,
        seed: int | None = None,
        decode: bool = False,
    ) -> GenerationOutput: ...

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
    ) -> torch.Tensor:
        """Teacher-forced per-token log-probs (B, T) of `image_tokens` given `prompts`, with gradients."""

    @abc.abstractmethod
    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]: ...

    @abc.abstractmethod
    def save_pretrained(self, path: str | Path) -> None: ...

    def reference(self) -> contextlib.AbstractContextManager[None]:
        """Context in which the model computes reference log-probs (LoRA: adapter disabled)."""
        return contextlib.nullcontext()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a weight push carries: only the trainable tensors (the LoRA adapter when LoRA is on)."""
        return {name: p.detach() for name, p in self.trainable_named_parameters()}

    @torch.no_grad()
    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.trainable_named_parameters())
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(
                f"trainable state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for name, tensor in state.items():
            if params[name].shape != tensor.shape:
                raise ValueError(f"shape mismatch for {name}: {tuple(tensor.shape)} vs {tuple(params[name].shape)}")
        for name, tensor in state.items():
            params[name].copy_(tensor)

    def iter_trainable(self) -> Iterator[torch.nn.Parameter]:
        return (p for _, p in self.trainable_named_parameters())
