"""Scores a ShapesWorld base model against the preconditions of self-improvement on a split no choice has
seen (`rayunify.shapes.base_report`), and writes `<out>/base_report.json` and a Markdown table.

    python examples/shapes_base_report.py --model DIR --split test --out runs/base_report

The world (v1 or v2) is the base's own (`shapes_base.json`). v2 takes `--split validation|test`; v1 has
one held-out split (its base's eval list is the one the v1 findings tuned on).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path


def prompts_for(model_dir: Path, split: str):
    info = json.loads((model_dir / "shapes_base.json").read_text())
    if info["config"].get("world", "v1") == "v2":
        from rayunify.shapes.splits_v2 import split_pools_v2

        return [p for pool in split_pools_v2(split, info["config"]["prompt_seed"]).values() for p in pool]
    from rayunify.shapes.world import load_prompts_jsonl

    return load_prompts_jsonl(model_dir / "eval_prompts.jsonl")


def main() -> None:
    from rayunify.config import JanusModelConfig
    from rayunify.models import build_model
    from rayunify.shapes.base_report import ReportSettings, generation_figures, judge_figures, targets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--judge-set-size", type=int, default=ReportSettings.judge_set_size)
    parser.add_argument("--texts", type=int, default=ReportSettings.texts_per_category)
    parser.add_argument("--samples", type=int, default=ReportSettings.samples)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = ReportSettings(args.judge_set_size, args.texts, args.samples, seed=args.seed)
    model = build_model(JanusModelConfig(path=str(args.model), device="cpu"))
    prompts = prompts_for(args.model, args.split)
    started = time.perf_counter()
    judge = judge_figures(model, prompts, settings)
    generation = generation_figures(model, prompts, settings)
    report = {"model": str(args.model), "split": args.split, "settings": asdict(settings), "judge": judge,
              "generation": generation, "targets": targets(judge, generation),
              "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "base_report.json").write_text(json.dumps(report, indent=2))
    print(table(report))


def table(report: dict) -> str:
    lines = ["| category | judge BA | judge AUROC | pass@1 | judge's best-of-n | any-of-n |", "|---|---|---|---|---|---|"]
    for category, g in report["generation"].items():
        j = report["judge"].get("overall" if category == "category_mean" else category, {})
        cells = [j.get("balanced_accuracy", float("nan")), j.get("auroc", float("nan")), g["pass_at_1"], g["judge_best_of_n"], g["oracle_any_of_n"]]
        lines.append(f"| {category} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += [f"{name}: {t['value']:.3f} (target {t['target']}): {'holds' if t['holds'] else 'does not hold'}" for name, t in report["targets"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
