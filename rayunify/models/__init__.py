"""Unified models: the interface (`base`), Janus on transformers (`janus`), offline factories (`factory`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rayunify.config import JanusModelConfig
    from rayunify.models.base import UnifiedModel

BUILTIN_PREFIX = "builtin:"


def build_model(cfg: JanusModelConfig, device: str | None = None, seed: int = 0) -> UnifiedModel:
    """The one factory for `model.type`: a local HF directory or a built-in model, wrapped for training."""
    import torch

    from rayunify.models.janus import JanusUnifiedModel, LoraSettings

    if cfg.type != "janus":
        raise ValueError(f"model.type={cfg.type!r} is not supported; choose one of: janus")
    if device is None:
        device = "cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, cfg.dtype)
    lora = LoraSettings(**cfg.lora.model_dump())
    path = resolve_model_path(cfg.path, seed=seed)
    return JanusUnifiedModel.from_pretrained(path, dtype=dtype, device=device, trainable=cfg.trainable, lora=lora)


def resolve_model_path(path: str, seed: int = 0) -> str:
    """builtin:tiny / builtin:shapes-base / -noisy / -test → a cached local directory (built on first use)."""
    if not path.startswith(BUILTIN_PREFIX):
        return path
    name = path[len(BUILTIN_PREFIX) :]
    if name == "tiny":
        from rayunify.models.factory import cached_tiny_dir

        return str(cached_tiny_dir(seed=seed))
    if name in ("shapes-base", "shapes-noisy", "shapes-test"):
        from rayunify.shapes.base import cached_base_dir

        return str(cached_base_dir(name.removeprefix("shapes-"), seed=seed))
    raise ValueError(f"model.path={path!r}: unknown built-in model; choose builtin:tiny, builtin:shapes-base, builtin:shapes-noisy or builtin:shapes-test")
