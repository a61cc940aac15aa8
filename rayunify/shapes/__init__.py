"""ShapesWorld: a synthetic text-to-image world whose checker knows the truth for any 32x32 image.

Prompts (`world`), a renderer (`render`), an exact checker (`checker`) and a Janus VQ tokenizer trained on
rendered images (`vq`). The tokenizer's names load on first use, so importing this package pulls in neither
torch nor transformers (importing transformers' Janus takes seconds).

The base model trained from scratch on this world: its recipe (`recipe`), training data (`data`),
objectives (`objectives`), training loop (`base_training`) and cached copies (`cache`).
"""

from __future__ import annotations

import importlib
from typing import Any

from rayunify.shapes.checker import CheckResult, check, check_batch, match, perceive_batch
from rayunify.shapes.render import draw, render, render_with_objects, rendered_cases
from rayunify.shapes.world import (
    BACKGROUND,
    CATEGORIES,
    COLOURS,
    IMAGE_SIZE,
    PALETTE,
    RELATIONS,
    SHAPES,
    ObjectSpec,
    SceneObject,
    Spec,
    all_specs,
    generate_prompts,
    load_prompts_jsonl,
    make_prompt_text,
    meaning_key,
    save_prompts_jsonl,
    spec_prompt,
)

_LAZY_VQ_NAMES = ("VQTrainConfig", "decode_tokens", "encode_tokens", "random_training_images", "train_vq")

__all__ = [
    "BACKGROUND",
    "CATEGORIES",
    "COLOURS",
    "IMAGE_SIZE",
    "PALETTE",
    "RELATIONS",
    "SHAPES",
    "CheckResult",
    "ObjectSpec",
    "SceneObject",
    "Spec",
    "all_specs",
    "check",
    "check_batch",
    "draw",
    "generate_prompts",
    "load_prompts_jsonl",
    "make_prompt_text",
    "match",
    "meaning_key",
    "perceive_batch",
    "render",
    "render_with_objects",
    "rendered_cases",
    "save_prompts_jsonl",
    "spec_prompt",
    *_LAZY_VQ_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_VQ_NAMES:
        return getattr(importlib.import_module("rayunify.shapes.vq"), name)
    raise AttributeError(f"module 'rayunify.shapes' has no attribute {name!r}")
