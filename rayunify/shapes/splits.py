"""ShapesWorld's test and validation splits: both carved from the meanings the base model never trained on.

The base trains on the train side of the 2 : 1 split of meanings (`held_out_split`); its held-out third is
cut again by meaning, two thirds to *test* (the figures reported) and one third to *validation* (any choice
of settings), so train, validation and test are disjoint by text and by meaning, and neither evaluation
split holds a prompt the base trained on.

The small categories cannot give each split 30 distinct prompts: the whole world holds 3 single-object
texts, 6 two-object texts (3 meanings), 9 counting and 18 colour texts, and a third of each is held out.
So a category with fewer than `min_per_category` texts on its side repeats its whole list until it has
that many; every repeat is a prompt of its own (id `<id>~<k>`, drawn with its own images) but says
nothing new about *other* prompts: an interval over such a category is over its images and its few
held-out meanings, not over 30 independent prompts. Intervals should resample by text (or meaning), not
by prompt id (`eval_job` resamples by text). A category with one held-out meaning (single object, two
objects) gives it to test; validation then has no prompt of that category.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from rayunify.shapes.world import (
    CATEGORIES,
    Spec,
    check_categories,
    draw_round_robin,
    held_out_split,
    spec_prompt,
    split_meaning_groups,
)
from rayunify.types import Prompt

EVAL_SPLITS = ("test", "validation")
MIN_PROMPTS_PER_CATEGORY = 30
VALIDATION_SHARE = 1 / 3  # of each category's held-out meanings; test keeps the rest, and at least one
REPEAT_MARK = "~"  # prompt ids of repeats: "<id>~<k>", k >= 1


def prompt_split(
    n_train: int,
    n_eval: int,
    seed: int,
    categories: Sequence[str] | None = None,
    eval_split: str | None = None,
    min_per_category: int = MIN_PROMPTS_PER_CATEGORY,
) -> tuple[list[Prompt], list[Prompt]]:
    """Train prompts as `held_out_split` gives them, and n_eval evaluation prompts: `held_out_split`'s list
    (eval_split None: the split every run before issue 18 used), or the first n_eval of the test or
    validation split (`evaluation_pools`), taking categories in turn so every prefix is balanced. With
    `categories`, n_train and n_eval are upper bounds."""
    if eval_split is None:
        return held_out_split(n_train, n_eval, seed, categories)
    train, _ = held_out_split(n_train, 0, seed, categories)
    pools = evaluation_pools(eval_split, seed, min_per_category)
    if categories is not None:
        wanted = set(check_categories(categories))
        pools = {c: ps for c, ps in pools.items() if c in wanted}
        n_eval = min(n_eval, sum(map(len, pools.values())))
    return train, draw_round_robin(pools, n_eval, f"{eval_split} (prompts.eval_split)", "prompts")


def evaluation_pools(eval_split: str, seed: int, min_per_category: int = MIN_PROMPTS_PER_CATEGORY) -> dict[str, list[Prompt]]:
    """Each category's prompts of the test or validation split, in order: every text once (in the seeded
    order of meanings), then repeats of the whole list until the category has `min_per_category`."""
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"unknown ShapesWorld eval split {eval_split!r}; choose one of: {', '.join(EVAL_SPLITS)}")
    if min_per_category < 0:
        raise ValueError(f"min_per_category must be >= 0, got {min_per_category}")
    _, held_out = split_meaning_groups(1 / 3, seed)  # the base's held-out third, as held_out_split cuts it
    pools = {}
    for category in CATEGORIES:
        test_groups, validation_groups = _cut(held_out[category])
        groups = test_groups if eval_split == "test" else validation_groups
        pools[category] = _with_repeats([spec_prompt(s, category) for g in groups for s in g], min_per_category)
    return pools


def _cut(groups: list[list[Spec]]) -> tuple[list[list[Spec]], list[list[Spec]]]:
    """(test, validation) meaning groups: validation the last VALIDATION_SHARE, test at least one."""
    n_validation = min(round(len(groups) * VALIDATION_SHARE), max(len(groups) - 1, 0))
    return groups[: len(groups) - n_validation], groups[len(groups) - n_validation :]


def _with_repeats(prompts: list[Prompt], at_least: int) -> list[Prompt]:
    if not prompts or len(prompts) >= at_least:
        return prompts
    copies = math.ceil(at_least / len(prompts))
    return prompts + [replace(p, prompt_id=f"{p.prompt_id}{REPEAT_MARK}{k}") for k in range(1, copies) for p in prompts]


def split_sizes(seed: int = 0, min_per_category: int = MIN_PROMPTS_PER_CATEGORY) -> dict[str, dict[str, tuple[int, int]]]:
    """{split: {category: (prompts, distinct texts)}}: what each split holds, for notes and tests."""
    sizes: dict[str, dict[str, tuple[int, int]]] = {}
    for name in EVAL_SPLITS:
        pools = evaluation_pools(name, seed, min_per_category)
        sizes[name] = {c: (len(ps), len({p.text for p in ps})) for c, ps in pools.items()}
    return sizes
