"""Did a run change its model's judge, or only the images it judges? Scores trained models' judges on fixed
image sets.

    python examples/probe_judge_drift.py --run runs/shapes_objects/online_dpo runs/shapes_objects/sft

A run's `eval/judge_fpr` is measured on the model's *current* images. When generation improves, the wrong
images left are near misses, harder to reject, so the false-positive rate can rise with an unchanged judge.
This script holds the images fixed: it draws them once from the start model and once from each run's final
model (the run's own eval prompts and sampling settings), then asks the start model's judge and each final
model's judge about every set, ShapesWorld's checker as the truth. Same set, different judge: the judge
changed. Same judge, different set: the images did. Prints a markdown table; writes it as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rayunify.config import load_config
from rayunify.metrics import VerdictRecord, unification_metrics
from rayunify.models import resolve_model_path
from rayunify.models.janus.model import JanusUnifiedModel
from rayunify.prompts import load_prompts
from rayunify.shapes.judge import ShapesCheckerJudge


def draw(model: JanusUnifiedModel, prompts, n: int, settings, seed: int):
    texts = [p.text for p in prompts]
    out = model.generate(texts, n=n, settings=settings, seed=seed, decode=True)
    expanded = [p for p in prompts for _ in range(n)]
    return list(out.images), expanded


def judge_metrics(model: JanusUnifiedModel, images, prompts) -> dict[str, float]:
    own = model.judge(images, [p.text for p in prompts])
    truth = ShapesCheckerJudge().judge(images, prompts)
    records = [VerdictRecord(p.category, o.verdict, o.score, t.verdict) for p, o, t in zip(prompts, own, truth, strict=True)]
    m = unification_metrics(records)
    return {k: m[k] for k in ("gen_accuracy", "judge_accuracy", "judge_fpr", "judge_fnr")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", required=True, help="run directories (config.yaml, final_model/)")
    parser.add_argument("--n-per-prompt", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1234, help="not the runs' eval seed: fresh images")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    for run in map(Path, args.run):
        cfg = load_config(run / "config.yaml")
        _, prompts = load_prompts(cfg.prompts)
        prompts = prompts[: cfg.trainer.eval_prompts]
        settings = cfg.sampling.settings()
        start = JanusUnifiedModel.from_pretrained(resolve_model_path(cfg.model.path))
        final = JanusUnifiedModel.from_pretrained(run / "final_model")
        for drawn_by, drawer in (("start", start), ("final", final)):
            images, expanded = draw(drawer, prompts, args.n_per_prompt, settings, args.seed)
            for judged_by, judge in (("start", start), ("final", final)):
                rows.append({"run": run.name, "images": drawn_by, "judge": judged_by, **judge_metrics(judge, images, expanded)})
    print("| run | images from | judge of | gen_accuracy | judge_accuracy | judge_fpr | judge_fnr |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['images']} | {r['judge']} | {r['gen_accuracy']:.3f} | {r['judge_accuracy']:.3f} "
              f"| {r['judge_fpr']:.3f} | {r['judge_fnr']:.3f} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
