"""The `Judge` protocol and the one factory for `judge.type`.

External judges load lazily, on the first `judge` call: building one (as the dry run does) only checks its
directory or interpreter.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rayunify.builtins import build_builtin_judge
from rayunify.types import Judge, Prompt

if TYPE_CHECKING:
    from rayunify.config import NoisyJudgeConfig, PythonJudgeConfig
    from rayunify.models.base import UnifiedModel

__all__ = ["JUDGE_TYPES", "Judge", "as_pil", "build_judge", "check_pairs", "load_callable"]
JUDGE_TYPES = ("self", "shapes_checker", "python", "noisy", "hf_vlm", "vllm")


def build_judge(cfg: Any, model_factory: Callable[[], UnifiedModel] | None = None) -> Judge:
    """The judge for `cfg.type` (also used for the guard's reference judge); `model_factory` gives the
    unified model to a self-judge."""
    from rayunify.judges.inprocess import NoisyJudge, PythonJudge, SelfJudge

    kind = getattr(cfg, "type", None)
    if kind == "self":
        if model_factory is None:
            raise ValueError("judge.type=self needs the unified model; no model factory was given")
        return SelfJudge(model_factory(), max_new_tokens=cfg.max_new_tokens, accept_threshold=cfg.accept_threshold)
    builtin = build_builtin_judge(kind, cfg) if kind else None
    if builtin is not None:
        return builtin
    if kind == "python":
        py: PythonJudgeConfig = cfg
        return PythonJudge(py.import_path, py.kwargs)
    if kind == "noisy":
        noisy: NoisyJudgeConfig = cfg
        base = build_judge(noisy.base, model_factory)
        return NoisyJudge(base, noisy.flip_fraction, noisy.random_fraction, noisy.always_accept, noisy.seed)
    if kind == "hf_vlm":
        from rayunify.judges.hf_vlm import HFVLMJudge

        return HFVLMJudge(cfg)
    if kind == "vllm":
        from rayunify.judges.vllm import VLLMJudge

        return VLLMJudge(cfg)
    raise ValueError(f"judge.type={kind!r}: choose one of {', '.join(JUDGE_TYPES)}")


def load_callable(import_path: str) -> Callable[..., Any]:
    """`package.module:attr` → the object, with errors that say which half failed."""
    module_name, _, attr = import_path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"import path {import_path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import module {module_name!r} for {import_path!r}: {err}") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"{module_name!r} has no attribute {attr!r} (from {import_path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{import_path!r} is not callable")
    return obj


# ---------------------------------------------------------------------------------- shared by external judges
def as_pil(image: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.asarray(image, dtype=np.uint8))


def check_pairs(images: Sequence[Any], prompts: Sequence[Prompt], name: str) -> None:
    if len(images) != len(prompts):
        raise ValueError(f"judge {name} got {len(images)} images for {len(prompts)} prompts")
