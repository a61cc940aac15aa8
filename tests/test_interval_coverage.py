"""The intervals keep their promise: in simulated worlds with the findings suite's real split structure (the
test split's texts per category and images per text), a nominal 95% interval covers the truth at least 93%
of the time, and a known effect is found. tests/interval_worlds.py builds the worlds; docs/intervals.md
gives the figures at larger simulation sizes.

Monte-Carlo error of a coverage near 0.95 from n worlds: sqrt(0.95 · 0.05 / n), 1.1 points at 400, 1.3 at
300; the assertion (>= 0.93) sits about two of them below the nominal level.
"""

from __future__ import annotations

import math

import pytest
from interval_worlds import (
    BASE_RATES,
    BASE_RATES_V2,
    Spread,
    coverage,
    power,
    split_structure,
    split_structure_v2,
)

WIDE = Spread(seed=0.4, seed_text=0.5, judge_seed=0.15, judge_seed_image=0.2)  # one seed can drive a contrast


def test_the_worlds_have_the_test_splits_structure():
    structure = split_structure()
    texts = {category: len(images) for category, images in structure.items()}
    assert texts == {"single_object": 1, "colour": 4, "two_objects": 2, "counting": 2,
                     "colour_attribution": 30, "position": 30}  # fmt: skip
    assert all(sum(images) == 120 for images in structure.values())  # 30 prompts × 4 images a category


def test_the_v2_worlds_have_30_texts_a_category():
    structure = split_structure_v2()
    assert {category: len(images) for category, images in structure.items()} == dict.fromkeys(BASE_RATES, 30)
    assert all(set(images) == {4} for images in structure.values())


@pytest.mark.parametrize(
    ("seeds", "spread", "worlds", "world"),
    [(3, Spread(), 400, "v1"), (5, WIDE, 300, "v1"), (5, WIDE, 300, "v2")],
)
def test_nominal_95_percent_intervals_cover_at_least_93_percent(seeds, spread, worlds, world):
    """v1: the findings suite's split; v2: findings_v2's (30 texts a category, the v2 base's rarer passes)."""
    structure, rates = (split_structure(), BASE_RATES) if world == "v1" else (split_structure_v2(), BASE_RATES_V2)
    found = coverage(worlds, seeds, spread, structure, base_rates=rates)
    error = math.sqrt(0.95 * 0.05 / worlds)
    # the intervals the report prints; a recipe's end figure alone (printed without an interval) is in the
    # docs' table for information: skewed per-seed figures put it near 92% with five widely spread seeds
    for kind in ("change", "recipe_vs_recipe", "judge_set_change"):
        share = found[kind]
        assert share >= 0.93, f"{kind}: {share:.3f} of {worlds} worlds (Monte-Carlo error {error:.3f})"


def test_without_the_seed_level_the_intervals_overstate():
    """The check can fail: resampling texts and images only (the seeds pooled, as the suite did before)
    misses the training spread, and coverage falls far below 93%."""
    found = coverage(150, 3, WIDE, levels=("text", "image"))
    assert found["recipe_vs_recipe"] < 0.8 and found["change"] < 0.85


def test_a_known_effect_is_found_and_the_stated_mde_is_about_right():
    found, mde, true = power(100, 5, effect=1.0)  # about 14 points of the category mean, five seeds
    assert true > 0.1 and found >= 0.95
    # at a true effect near the MDE the intervals state, about 80% of worlds find it (the stated MDE is from
    # each world's own noisy variance, so its median sits a little below the true MDE)
    found_at_mde, stated, true_at_mde = power(150, 5, effect=0.5)
    assert abs(true_at_mde - stated) < 0.25 * stated, (true_at_mde, stated)
    assert 0.6 <= found_at_mde <= 0.95
