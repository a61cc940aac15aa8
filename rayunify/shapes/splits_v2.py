"""ShapesWorld v2's three splits: train, validation and test, disjoint by meaning (so by text too).

Each category's meanings (`world_v2.meaning_key_v2`: every wording, object order and mirrored relation
of one statement is one meaning) are shuffled with the split seed and cut: *test* takes the first
`test_meaning_count(n)` (at least MIN_TEST_MEANINGS, each with at least two texts, so at least 30 distinct
texts a category), *validation* the next `validation_meaning_count(n)`, and *train* the rest. Test is for
the figures reported and nothing else; every choice of settings (learning rate, beta, epochs, the base
recipe) is made on validation; the base trains on train. No prompt repeats: every text appears once.

The smallest categories (single object, two objects, counting: 21 meanings each) give 15 meanings to test,
3 to validation and 3 to train; the larger ones give about 2/9 of their meanings to test and 1/9 to
validation, as v1 cut its held-out third 2 : 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rayunify.shapes.world import CATEGORIES, check_categories, draw_round_robin, shapes_prompt_id
from rayunify.shapes.world_v2 import SpecV2, all_specs_v2, make_prompt_text_v2, meaning_key_v2
from rayunify.types import Prompt

SPLITS_V2 = ("train", "validation", "test")
EVAL_SPLITS_V2 = ("validation", "test")
DEFAULT_EVAL_SPLIT_V2 = "validation"  # a run that names no split never sees the test texts
MIN_TEST_MEANINGS = 15
MIN_VALIDATION_MEANINGS = 3
TEST_SHARE = 2 / 9
VALIDATION_SHARE = 1 / 9
SPLIT_SEED_V2 = 0  # the split the v2 documentation counts; prompts.seed picks another


def test_meaning_count(n_meanings: int) -> int:
    return max(MIN_TEST_MEANINGS, round(n_meanings * TEST_SHARE))


def validation_meaning_count(n_meanings: int) -> int:
    return max(MIN_VALIDATION_MEANINGS, round(n_meanings * VALIDATION_SHARE))


def spec_prompt_v2(spec: SpecV2, category: str) -> Prompt:
    text = make_prompt_text_v2(spec)
    return Prompt(prompt_id=shapes_prompt_id(text), text=text, category=category, spec=spec.to_dict())


def meaning_groups_v2(category: str) -> list[list[SpecV2]]:
    """The category's specs grouped by meaning, in a fixed order."""
    groups: dict[tuple[Any, ...], list[SpecV2]] = {}
    for spec in all_specs_v2(category):
        groups.setdefault(meaning_key_v2(spec), []).append(spec)
    return list(groups.values())


def split_groups_v2(seed: int) -> dict[str, dict[str, list[list[SpecV2]]]]:
    """{split: {category: meaning groups}}: each category's meanings shuffled with `seed` and cut."""
    rng = np.random.default_rng(seed)
    splits: dict[str, dict[str, list[list[SpecV2]]]] = {name: {} for name in SPLITS_V2}
    for category in CATEGORIES:
        groups = meaning_groups_v2(category)
        shuffled = [groups[i] for i in rng.permutation(len(groups))]
        n_test, n_validation = test_meaning_count(len(groups)), validation_meaning_count(len(groups))
        if n_test + n_validation >= len(groups):
            raise ValueError(f"category {category} has {len(groups)} meanings: too few for three splits")
        splits["test"][category] = shuffled[:n_test]
        splits["validation"][category] = shuffled[n_test : n_test + n_validation]
        splits["train"][category] = shuffled[n_test + n_validation :]
    return splits


def split_pools_v2(split: str, seed: int = SPLIT_SEED_V2) -> dict[str, list[Prompt]]:
    """Each category's prompts of one split, in the seeded order of meanings, every text once."""
    if split not in SPLITS_V2:
        raise ValueError(f"unknown ShapesWorld v2 split {split!r}; choose one of: {', '.join(SPLITS_V2)}")
    groups = split_groups_v2(seed)[split]
    return {c: [spec_prompt_v2(s, c) for group in gs for s in group] for c, gs in groups.items()}


def prompt_split_v2(
    n_train: int, n_eval: int, seed: int, categories: Sequence[str] | None = None, eval_split: str | None = None
) -> tuple[list[Prompt], list[Prompt]]:
    """The first n_train train prompts and n_eval prompts of `eval_split` (None: validation), categories
    in turn so every prefix is balanced. With `categories`, n_train and n_eval are upper bounds."""
    eval_split = DEFAULT_EVAL_SPLIT_V2 if eval_split is None else eval_split
    if eval_split not in EVAL_SPLITS_V2:
        raise ValueError(f"unknown ShapesWorld v2 eval split {eval_split!r}; choose one of: {', '.join(EVAL_SPLITS_V2)}")
    all_groups = split_groups_v2(seed)
    lists = []
    for split, n in (("train", n_train), (eval_split, n_eval)):
        pools = {c: [spec_prompt_v2(s, c) for g in gs for s in g] for c, gs in all_groups[split].items()}
        if categories is not None:
            wanted = set(check_categories(categories))
            pools = {c: ps for c, ps in pools.items() if c in wanted}
            n = min(n, sum(map(len, pools.values())))
        lists.append(draw_round_robin(pools, n, f"ShapesWorld v2 {split}"))
    return lists[0], lists[1]


def split_counts_v2(seed: int = SPLIT_SEED_V2) -> dict[str, dict[str, tuple[int, int]]]:
    """{split: {category: (meanings, distinct texts)}}: what each split holds, for the docs and tests."""
    return {
        split: {c: (len(gs), len({make_prompt_text_v2(s) for g in gs for s in g})) for c, gs in by_category.items()}
        for split, by_category in split_groups_v2(seed).items()
    }
