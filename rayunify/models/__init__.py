"""Unified models: the interface and shared parts (`base`), the families (`janus/`, `showo/`), the models
shipped without weights (`plugin`), and `build_model`, the one factory for `model.type`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rayunify.builtins import resolve_model_path

if TYPE_CHECKING:
    from rayunify.config import ModelConfig
    from rayunify.models.base import UnifiedModel

__all__ = ["build_model", "resolve_model_path"]


def build_model(cfg: ModelConfig, device: str | None = None) -> UnifiedModel:
    """The one factory for `model.type`: a local directory or a built-in model, wrapped for training."""
    import torch

    from rayunify.models.base import LoraSettings
    from rayunify.models.janus.model import JanusUnifiedModel

    if cfg.type not in ("janus", "showo"):
        raise ValueError(f"model.type={cfg.type!r} is not supported; choose one of: janus, showo")
    if device is None:
        device = "cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, cfg.dtype)
    lora = LoraSettings(**cfg.lora.model_dump())
    path = resolve_model_path(cfg.path, seed=cfg.builtin_seed)
    if cfg.type == "showo":
        from rayunify.models.showo.model import ShowoUnifiedModel

        return ShowoUnifiedModel.from_pretrained(
            path, cfg.tokenizer_path, cfg.vq_path, dtype=dtype, device=device, trainable=cfg.trainable, lora=lora,
            estimator=cfg.logprob_estimator, steps=cfg.steps,
        )  # fmt: skip
    return JanusUnifiedModel.from_pretrained(path, dtype=dtype, device=device, trainable=cfg.trainable, lora=lora)
