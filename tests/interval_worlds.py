"""Simulated worlds with the findings suite's split structure, for checking what rayunify.intervals promises.

A world: every test text has a true pass rate (its category's base rate, spread by text on the logit scale);
a trained arm moves each text's logit by a true effect plus a training-seed shift (shared by the seed's texts)
plus a seed-by-text shift; every image passes with its (seed, text) probability. The judge set: fixed images,
each with a margin; a seed's judge gets it right when margin + the seed's shifts > 0, the base judge when the
margin alone is. The truth an interval must cover is the expectation over seeds and images on the split's
texts and the judge set's images (docs/intervals.md). `python tests/interval_worlds.py` prints the figures
the docs quote.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayunify.intervals import JUDGE_SET_LEVELS, LEVELS, ArmRecords, contrast_interval  # noqa: E402
from rayunify.metrics import count_rows  # noqa: E402

# The shipped base's pass rate per category on the test split (README's base table); 4 images a prompt.
BASE_RATES = {
    "single_object": 0.70, "colour": 0.41, "two_objects": 0.10,
    "counting": 0.15, "colour_attribution": 0.10, "position": 0.08,
}  # fmt: skip
# The shipped v2 base's checker pass@1 per category on v2's test split (docs/shapes-v2.md): rarer passes.
BASE_RATES_V2 = {
    "single_object": 0.11, "colour": 0.28, "two_objects": 0.075,
    "counting": 0.033, "colour_attribution": 0.042, "position": 0.013,
}  # fmt: skip
IMAGES_PER_PROMPT = 4
PROMPTS_PER_CATEGORY = 30
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(40)  # E[f(Z)], Z ~ N(0, 1)


def split_structure(texts_at_least: int = 0) -> dict[str, list[int]]:
    """{category: images per distinct text} of the findings' evaluation (the test split's first 30 prompts
    of each category, 4 images each); with texts_at_least, every category as if it had that many texts."""
    from rayunify.shapes.splits import evaluation_pools

    structure = {}
    for category, prompts in evaluation_pools("test", seed=0).items():
        per_text: dict[str, int] = {}
        for prompt in prompts[:PROMPTS_PER_CATEGORY]:
            per_text[prompt.text] = per_text.get(prompt.text, 0) + IMAGES_PER_PROMPT
        structure[category] = list(per_text.values())
        if len(structure[category]) < texts_at_least:
            structure[category] = [IMAGES_PER_PROMPT] * max(texts_at_least, PROMPTS_PER_CATEGORY)
    return structure


def split_structure_v2() -> dict[str, list[int]]:
    """{category: images per distinct text} of the findings_v2 evaluation: v2's test split, 180 prompts drawn
    in turn by category (30 distinct texts each), 4 images a prompt."""
    from rayunify.shapes.splits_v2 import prompt_split_v2

    _, evaluation = prompt_split_v2(0, 6 * PROMPTS_PER_CATEGORY, seed=0, eval_split="test")
    structure: dict[str, dict[str, int]] = {}
    for prompt in evaluation:
        per_text = structure.setdefault(prompt.category, {})
        per_text[prompt.text] = per_text.get(prompt.text, 0) + IMAGES_PER_PROMPT
    return {category: list(per_text.values()) for category, per_text in structure.items()}


@dataclass(frozen=True)
class Spread:
    """Logit-scale standard deviations: between texts of a category, of a training seed's shift (all texts),
    of a seed-by-text shift; and of the judge's margins and a seed's shift of them."""

    text: float = 1.0
    seed: float = 0.15
    seed_text: float = 0.3
    judge_seed: float = 0.05
    judge_seed_image: float = 0.1


class World:
    def __init__(
        self,
        structure: dict[str, list[int]],
        spread: Spread,
        rng: np.random.Generator,
        base_rates: dict[str, float] = BASE_RATES,
    ):
        self.structure, self.spread, self.rng = structure, spread, rng
        self.categories = sorted(structure)
        self.text_category = np.array([c for c in self.categories for _ in structure[c]])
        self.images_per_text = np.array([n for c in self.categories for n in structure[c]])
        rates = np.array([base_rates[c] for c in self.text_category])
        self.base = np.log(rates / (1 - rates)) + rng.normal(0, spread.text, len(rates))

    def arm(self, seeds: int, effect: float = 0.0, trained: bool = True) -> ArmRecords:
        """One arm's images: `seeds` runs, each text moved by `effect` (logit) and, if trained, seed shifts."""
        n_texts = len(self.base)
        logits = np.tile(self.base + effect, (seeds, 1))
        if trained:
            logits += self.rng.normal(0, self.spread.seed, (seeds, 1))
            logits += self.rng.normal(0, self.spread.seed_text, (seeds, n_texts))
        seed = np.repeat(np.arange(seeds), self.images_per_text.sum())
        text = np.tile(np.repeat(np.arange(n_texts), self.images_per_text), seeds)
        passed = self.rng.random(len(seed)) < 1 / (1 + np.exp(-logits[seed, text]))
        return _records(passed, passed, seed, text, self.text_category, seeds)

    def truth(self, effect: float = 0.0, trained: bool = True) -> float:
        """Category mean pass rate expected over seeds and images, on these texts."""
        sd = math.hypot(self.spread.seed, self.spread.seed_text) if trained else 0.0
        logits = self.base[:, None] + effect + sd * _NODES[None, :]
        rate = (1 / (1 + np.exp(-logits))) @ _WEIGHTS / _WEIGHTS.sum()
        means = [np.average(rate[self.text_category == c], weights=self.images_per_text[self.text_category == c])
                 for c in self.categories]  # fmt: skip
        return float(np.mean(means))


class JudgeWorld:
    """A fixed, balanced judge set: 20 positive and 20 negative images a category, 2 images a text."""

    def __init__(self, spread: Spread, rng: np.random.Generator, per_category: int = 40):
        self.spread, self.rng = spread, rng
        categories = sorted(BASE_RATES)
        self.category = np.repeat(categories, per_category)
        self.text = np.arange(len(self.category)) // 2
        self.label = np.tile([True, False], len(self.category) // 2)
        self.margin = rng.normal(1.0, 1.2, len(self.category))  # about 78% right, as the base judge

    def arm(self, seeds: int, shift: float = 0.0, trained: bool = True) -> ArmRecords:
        margins = np.tile(self.margin + shift, (seeds, 1))
        if trained:
            margins += self.rng.normal(0, self.spread.judge_seed, (seeds, 1))
            margins += self.rng.normal(0, self.spread.judge_seed_image, margins.shape)
        right = (margins > 0).ravel()
        label = np.tile(self.label, seeds)
        seed = np.repeat(np.arange(seeds), len(self.margin))
        text = np.tile(self.text, seeds)
        text_category = self.category[::2]
        return _records(right == label, label, seed, text, text_category, seeds)

    def truth(self, shift: float = 0.0, trained: bool = True) -> float:
        sd = math.hypot(self.spread.judge_seed, self.spread.judge_seed_image) if trained else 0.0
        margin = self.margin + shift
        right = np.array([_normal_cdf(m / sd) if sd else float(m > 0) for m in margin])
        tpr = right[self.label].mean()
        tnr = right[~self.label].mean()
        return float((tpr + tnr) / 2)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _records(own_accept, reference_accept, seed, text, text_category, seeds) -> ArmRecords:
    own = np.where(own_accept, 1, 0)
    rows = count_rows(own, own.astype(float), np.where(reference_accept, 1, 0))
    names = tuple(f"t{i:03d}" for i in range(len(text_category)))  # sorted as ArmRecords keeps texts
    return ArmRecords(rows, seed, text, names, tuple(text_category), seeds)


def coverage(
    worlds: int,
    seeds: int,
    spread: Spread = Spread(),
    structure: dict[str, list[int]] | None = None,
    levels: Sequence[str] = LEVELS,
    resamples: int = 100,
    seed: int = 0,
    base_rates: dict[str, float] = BASE_RATES,
) -> dict[str, float]:
    """Share of null worlds whose 95% interval covers the truth, for a recipe's change from the start, a
    recipe against another, a recipe's end figure, and the judge set's change."""
    rng = np.random.default_rng(seed)
    structure = structure or split_structure()
    hits = {"change": 0, "recipe_vs_recipe": 0, "end_figure": 0, "judge_set_change": 0}
    for index in range(worlds):
        world, judges = World(structure, spread, rng, base_rates), JudgeWorld(spread, rng)
        arms = {"start": world.arm(seeds, trained=False), "a": world.arm(seeds), "b": world.arm(seeds)}
        truth = {"start": world.truth(trained=False), "a": world.truth()}
        found = {
            "change": (contrast_interval(arms, {"a": 1, "start": -1}, "gen_accuracy", "category_mean", levels,
                                         resamples, index), truth["a"] - truth["start"]),
            "recipe_vs_recipe": (contrast_interval(arms, {"a": 1, "b": -1}, "gen_accuracy", "category_mean",
                                                   levels, resamples, index), 0.0),
            "end_figure": (contrast_interval(arms, {"a": 1}, "gen_accuracy", "category_mean", levels, resamples,
                                             index), truth["a"]),
        }  # fmt: skip
        judged = {"start": judges.arm(seeds, trained=False), "end": judges.arm(seeds)}
        judge_levels = JUDGE_SET_LEVELS if "seed" in levels else ("text",)
        found["judge_set_change"] = (
            contrast_interval(judged, {"end": 1, "start": -1}, "balanced_accuracy", "overall", judge_levels,
                              resamples, index),
            judges.truth() - judges.truth(trained=False),
        )  # fmt: skip
        for key, (interval, true) in found.items():
            hits[key] += interval.low <= true <= interval.high
    return {key: value / worlds for key, value in hits.items()}


def power(
    worlds: int,
    seeds: int,
    effect: float,
    spread: Spread = Spread(),
    resamples: int = 100,
    seed: int = 1,
    structure: dict[str, list[int]] | None = None,
    base_rates: dict[str, float] = BASE_RATES,
):
    """Share of worlds where recipe a, `effect` logits above b on every text, clears above b; and the median
    minimum detectable effect (percentage points of the category mean) the intervals state."""
    from rayunify.power import minimum_detectable_effect

    rng = np.random.default_rng(seed)
    structure = structure or split_structure()
    found, mdes, true = 0, [], []
    for index in range(worlds):
        world = World(structure, spread, rng, base_rates)
        arms = {"a": world.arm(seeds, effect), "b": world.arm(seeds)}
        interval = contrast_interval(
            arms, {"a": 1, "b": -1}, "gen_accuracy", "category_mean", LEVELS, resamples, index
        )
        found += interval.low > 0
        if index % 10 == 0:  # the MDE solves for a power 40 times: a sample of the worlds states it
            mdes.append(minimum_detectable_effect(interval.components, seeds))
        true.append(world.truth(effect) - world.truth())
    return found / worlds, float(np.median(mdes)), float(np.mean(true))


def main(worlds: int = 600) -> None:
    """The coverage table of docs/intervals.md: each scenario with and without the seed level."""
    import time

    wide = Spread(seed=0.4, seed_text=0.5, judge_seed=0.15, judge_seed_image=0.2)
    print(f"{worlds} null worlds a row; Monte-Carlo error at 0.95: {math.sqrt(0.95 * 0.05 / worlds):.3f}")
    print(
        "| structure | seeds | spread | levels | change | recipe vs recipe | end figure | judge set change | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for structure_name, structure, rates in (
        ("test split", split_structure(), BASE_RATES),
        ("30 texts a category", split_structure(30), BASE_RATES),
        ("v2 test split", split_structure_v2(), BASE_RATES_V2),
    ):
        for seeds in (3, 5):
            for spread_name, spread in (("typical", Spread()), ("wide", wide)):
                if structure_name == "30 texts a category" and (spread_name == "wide" or seeds == 5):
                    continue
                if structure_name == "v2 test split" and seeds == 3:  # findings_v2 runs five seeds
                    continue
                for levels in (LEVELS, ("text", "image")):
                    started = time.process_time()
                    found = coverage(worlds, seeds, spread, structure, levels, base_rates=rates)
                    cells = " | ".join(f"{v:.3f}" for v in found.values())
                    print(f"| {structure_name} | {seeds} | {spread_name} | {', '.join(levels)} | {cells} "
                          f"| {time.process_time() - started:.0f} |", flush=True)  # fmt: skip
    for seeds in (3, 5):
        for effect in (0.5, 1.0):
            found, mde, true = power(200, seeds, effect)
            print(
                f"power: {seeds} seeds, true effect {true:+.3f}: found {found:.3f}, median stated MDE {mde:.3f}"
            )
    for effect in (0.5, 1.0):
        found, mde, true = power(200, 5, effect, structure=split_structure_v2(), base_rates=BASE_RATES_V2)
        print(f"power (v2): 5 seeds, true effect {true:+.3f}: found {found:.3f}, median stated MDE {mde:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600)
