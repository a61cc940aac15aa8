"""The two ShapesWorlds behind one interface, for the code that trains and scores a base model in either.

A base model's data (`data.ShapesData`) and the fixed judge set (`judge_set`) render specs, check images
and draw hard negatives; which world's functions they use follows the base recipe (`BaseConfig.world`) or,
for a prompt, its spec (a v2 spec's dict says `"world": "v2"`). v1's functions are its own, unchanged, so
every v1 base and judge set stays what it was. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayunify.types import Prompt


@dataclass(frozen=True)
class ShapesWorldOps:
    name: str
    spec_from_dict: Callable[[Any], Any]
    render: Callable[[Any, np.random.Generator], np.ndarray]
    check_batch: Callable[[Any, Sequence[Any]], list[Any]]
    one_attribute_away: Callable[..., Any]  # (spec, rng, by_kind=False) -> spec
    opposite_relation: Callable[[Any], Any]  # the spec with its two related objects' places swapped
    texts: Callable[[], list[str]]  # every prompt text of the world, sorted (the base's tokenizer corpus)
    vq_images: Callable[[int, np.random.Generator], np.ndarray]  # images the world's VQ tokenizer trains on


def _v1() -> ShapesWorldOps:
    from rayunify.shapes.checker import check_batch
    from rayunify.shapes.data import one_attribute_away
    from rayunify.shapes.render import render
    from rayunify.shapes.vq import random_training_images
    from rayunify.shapes.world import CATEGORIES, OPPOSITE_RELATION, Spec, all_specs, make_prompt_text

    return ShapesWorldOps(
        "v1", Spec.from_dict, render, check_batch, one_attribute_away,
        lambda spec: Spec(spec.objects, OPPOSITE_RELATION[spec.relation]),
        lambda: sorted({make_prompt_text(s) for c in CATEGORIES for s in all_specs(c)}), random_training_images,
    )  # fmt: skip


def _v2() -> ShapesWorldOps:
    from rayunify.shapes.checker_v2 import check_batch_v2
    from rayunify.shapes.render_v2 import random_training_images_v2, render_v2
    from rayunify.shapes.world import CATEGORIES, OPPOSITE_RELATION
    from rayunify.shapes.world_v2 import SpecV2, all_specs_v2, make_prompt_text_v2, one_attribute_away_v2

    return ShapesWorldOps(
        "v2", SpecV2.from_dict, render_v2, check_batch_v2, one_attribute_away_v2,
        lambda spec: SpecV2(spec.objects, OPPOSITE_RELATION[spec.relation], spec.template),
        lambda: sorted({make_prompt_text_v2(s) for c in CATEGORIES for s in all_specs_v2(c)}), random_training_images_v2,
    )  # fmt: skip


_BUILDERS = {"v1": _v1, "v2": _v2}
WORLD_NAMES = tuple(_BUILDERS)


def world_ops(name: str) -> ShapesWorldOps:
    if name not in _BUILDERS:
        raise ValueError(f"unknown ShapesWorld {name!r}; choose one of: {', '.join(WORLD_NAMES)}")
    return _BUILDERS[name]()


def world_of_prompts(prompts: Sequence[Prompt]) -> ShapesWorldOps:
    """The world the prompts' specs belong to; one list never mixes the two."""
    from rayunify.shapes.world_v2 import is_v2_spec

    names = {"v2" if is_v2_spec(p.spec) else "v1" for p in prompts}
    if len(names) > 1:
        raise ValueError("the prompts mix ShapesWorld v1 and v2 specs; use one world per list")
    return world_ops(names.pop() if names else "v1")
