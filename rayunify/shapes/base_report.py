"""A base model against the preconditions its self-improvement needs, on a split no choice has seen.

The self-improvement recipes only have something to learn when (i) the judge is clearly stronger than the
generator, (ii) the generator fails often enough for the judge to matter, (iii) the failures are ones that
sampling can fix and the judge can see. This report measures each on the named split:
- the judge on the fixed judge set (`judge_set.build_judge_set`): balanced accuracy and AUROC of P(yes);
- generation: per category the share of images the checker accepts (pass@1), and best-of-n, the share of
  prompts whose image with the judge's highest P(yes) among n samples the checker accepts (what a self-judge
  can reach by choosing), beside the oracle's any-of-n (what choosing could reach at best);
`targets` says which of the preconditions hold (the thresholds are the project's, see docs/shapes-v2.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayunify.shapes.judge_set import distinct_prompts_by_category
from rayunify.types import Prompt, SamplingSettings

# The preconditions (docs/shapes-v2.md, "A base with headroom").
MIN_BALANCED_ACCURACY = 0.89
MIN_AUROC = 0.95
GENERATION_BAND = (0.25, 0.45)
MIN_BEST_OF_N_GAIN = 2.0  # best-of-n at least this many times pass@1


@dataclass(frozen=True)
class ReportSettings:
    judge_set_size: int = 600  # 50 images per (category, label)
    texts_per_category: int = 30  # distinct texts sampled for generation
    samples: int = 16  # n of best-of-n
    guidance_scale: float = 3.0
    seed: int = 0


def judge_figures(model: Any, prompts: Sequence[Prompt], settings: ReportSettings) -> dict[str, dict[str, float]]:
    """The self-judge on the fixed judge set of `prompts`: `metrics.judge_set_report`'s layout."""
    from rayunify.judges.inprocess import SelfJudge
    from rayunify.metrics import judge_set_report
    from rayunify.shapes.judge_set import build_judge_set

    sampling = SamplingSettings(guidance_scale=settings.guidance_scale)
    judge_set = build_judge_set(model, prompts, settings.judge_set_size, settings.seed, sampling)
    by_text = {p.text: p for p in prompts}
    judged = SelfJudge(model).judge(list(judge_set.images), [by_text[t] for t in judge_set.texts])
    return judge_set_report(judge_set.categories, judge_set.labels.tolist(), [j.score for j in judged], [j.verdict for j in judged])


def generation_figures(model: Any, prompts: Sequence[Prompt], settings: ReportSettings) -> dict[str, dict[str, float]]:
    """pass@1, the judge's best-of-n and the oracle's any-of-n, per category and as the category mean."""
    from rayunify.evaluation import evaluate
    from rayunify.shapes.judge import ShapesCheckerJudge

    chosen = texts_per_category(prompts, settings.texts_per_category, settings.seed)
    result = evaluate(model, chosen, ShapesCheckerJudge(), n_per_prompt=settings.samples,
                      settings=SamplingSettings(guidance_scale=settings.guidance_scale), seed=settings.seed)  # fmt: skip
    by_prompt: dict[str, list[tuple[float, bool, bool]]] = defaultdict(list)
    category = {p.text: p.category for p in chosen}
    for item in result.items:
        by_prompt[item.prompt.text].append((item.own.score, item.own.accepted, item.reference.accepted))
    return best_of_n_report(category, by_prompt)


def best_of_n_report(category: dict[str, str], by_prompt: dict[str, list[tuple[float, bool, bool]]]) -> dict[str, dict[str, float]]:
    """From (judge P(yes), judge accepts, checker accepts) per image, grouped by prompt text. Ties in P(yes)
    go to the first sample, as a fixed rule must."""
    rows: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for text, images in by_prompt.items():
        right = np.array([ok for _, _, ok in images], float)
        best = int(np.argmax([score for score, _, _ in images]))
        own_yes = np.array([yes for _, yes, _ in images], float)
        rows[category[text]].append((right.mean(), right[best], right.max(), own_yes.mean()))
    report = {c: _summary(np.array(r)) for c, r in sorted(rows.items())}
    report["category_mean"] = {k: float(np.mean([r[k] for r in report.values()])) for k in next(iter(report.values()))}
    return report


def _summary(rows: np.ndarray) -> dict[str, float]:
    return {"pass_at_1": rows[:, 0].mean(), "judge_best_of_n": rows[:, 1].mean(), "oracle_any_of_n": rows[:, 2].mean(),
            "judge_accepts": rows[:, 3].mean(), "texts": float(len(rows))}  # fmt: skip


def texts_per_category(prompts: Sequence[Prompt], k: int, seed: int) -> list[Prompt]:
    """k distinct texts of each category (all of them where it has fewer), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    chosen = []
    for pool in distinct_prompts_by_category(prompts).values():
        chosen += [pool[i] for i in sorted(rng.permutation(len(pool))[:k])]
    return chosen


def targets(judge: dict[str, dict[str, float]], generation: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Each precondition: its figure, its threshold and whether it holds."""
    overall, mean = judge["overall"], generation["category_mean"]
    gain = mean["judge_best_of_n"] / mean["pass_at_1"] if mean["pass_at_1"] > 0 else float("inf")
    low, high = GENERATION_BAND
    return {
        "judge_balanced_accuracy": {"value": overall["balanced_accuracy"], "target": f">= {MIN_BALANCED_ACCURACY}",
                                    "holds": overall["balanced_accuracy"] >= MIN_BALANCED_ACCURACY},
        "judge_auroc": {"value": overall["auroc"], "target": f">= {MIN_AUROC}", "holds": overall["auroc"] >= MIN_AUROC},
        "generation_category_mean": {"value": mean["pass_at_1"], "target": f"{low}-{high}", "holds": low <= mean["pass_at_1"] <= high},
        "best_of_n_over_pass_at_1": {"value": gain, "target": f">= {MIN_BEST_OF_N_GAIN}", "holds": gain >= MIN_BEST_OF_N_GAIN},
    }  # fmt: skip
