"""Run the ShapesWorld experiments through `rayunify train` and write the results table.

    python examples/run_shapes_experiments.py --jobs 2             # README's findings: findings_v2, seeds 0-4
    python examples/run_shapes_experiments.py --suite findings --seeds 0 1 2 --jobs 2   # v1's findings
    python examples/run_shapes_experiments.py --suite findings sft dpo --seeds 0   # some of a suite's runs
    python examples/run_shapes_experiments.py sft dpo --out runs/shapes/results    # configs/shapes/<name>.yaml
    python examples/run_shapes_experiments.py --suite objects      # single objects from the noisy-caption base
    python examples/run_shapes_experiments.py --suite grpo --seeds 0 1 2 --baseline online_dpo

Each experiment is a normal training run (same trainer, same configs users get). Before/after numbers are
the run's own evaluations at the start and the end (`eval_start.json`, `eval_final.json`: the model's
images on held-out prompts, its own verdicts, and ShapesWorld's checker as the truth). Writes
results.md, results.json and curves.png (via `rayunify report`).

With `--seeds`, every run repeats once per fine-tuning seed (`trainer.seed`; the base model stays the same,
`model.builtin_seed`), and results.md adds each recipe's figures with intervals from a hierarchical
bootstrap over seeds, texts and images (rayunify.intervals), with `--baseline` each recipe's end figures
minus the baseline's, and the suite's COMPARISONS, paired the same way; changes.png draws each recipe's
change with its interval. The suite's PRIMARY contrasts (at most six, declared here before the runs) come
first, at 95% with their minimum detectable effects; the rest at Holm-adjusted levels (docs/intervals.md). `--jobs N` runs N at a time, each its own local Ray cluster
(README states the findings suite's wall clock).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "shapes"
KEYS = ["gen_accuracy", "nonunified", "judge_fpr", "judge_accuracy"]
SUMMARIES = ("overall", "category_mean")  # report groups that are not categories

# Named sets of runs, each (run name, config name, its overrides), for experiments whose runs differ in more
# than the config. "objects": single objects and colours from the noisy-caption base (README), the offline
# recipes drawing 32 images per prompt (with 8 each of the 14 prompts gives DPO one best-of-8 pair).
_OBJECTS = (
    "model.path=builtin:shapes-noisy",
    "prompts.categories=[single_object,colour]",
    "trainer.eval_samples_per_prompt=32",
    "trainer.steps=100",
    "trainer.epochs=20",
    "trainer.output_dir=runs/shapes_objects",
)
# "grpo": single objects and colours from the default base (shipped: nothing to train first), scored on the
# base's whole held-out list of those categories (7 prompts × 32 images) as the "objects" suite is.
_GRPO = (
    "model.path=builtin:shapes-base",
    "prompts.categories=[single_object,colour]",
    "prompts.eval_split=null",
    "prompts.n_eval=96",
    "trainer.eval_prompts=96",
    "trainer.judge_set_size=0",
    "trainer.eval_samples_per_prompt=32",
    "trainer.steps=60",
    "trainer.output_dir=runs/shapes_grpo",
)
# "findings" (the default): every recipe on the default base, scored on the test split (30 prompts a category
# × 4 images) and the fixed judge set, three seeds each. Offline runs evaluate at the start and the end only
# (their figures are before → after); online runs every 20 steps, for the curves.
_OFFLINE = ("trainer.eval_every=1000",)
_ONLINE = ("trainer.eval_every=20",)
_FINDINGS = [
    *((name, name, [*_OFFLINE]) for name in ("sft", "dpo", "c_sft", "c_dpo")),
    # curriculum at the plain recipe's step budget: the replayed data shares it instead of lengthening epochs
    *(
        (
            f"{name}_matched",
            name,
            [*_OFFLINE, "trainer.epoch_steps=first", f"trainer.run_name={name}_matched"],
        )
        for name in ("c_sft", "c_dpo")
    ),
    (
        "sft_conditional",
        "sft",
        [*_OFFLINE, "sampling.geometry=conditional", "trainer.run_name=sft_conditional"],
    ),
    ("online_dpo", "online_dpo", [*_ONLINE]),
    (
        "online_dpo_conditional",
        "online_dpo",
        [*_ONLINE, "sampling.geometry=conditional", "trainer.run_name=online_dpo_conditional"],
    ),
    ("co_degradation", "co_degradation", [*_ONLINE]),
    # the laxest threshold of the validation sweep, with SFT: it trains on every image its judge accepts
    (
        "co_degradation_sft",
        "sft",
        [*_OFFLINE, "judge.accept_threshold=0.01", "trainer.run_name=co_degradation_sft"],
    ),
    ("online_grpo", "online_grpo", [*_ONLINE]),
]
# "findings_v2": the findings on ShapesWorld v2's base, scored on v2's test split (which no setting was chosen
# on) and on fixed judge sets of the test and the training prompts. Beside each self-judged primary recipe
# the same recipe with the exact checker as its judge (the oracle: what the algorithm reaches with perfect
# verdicts), the lax-threshold self-judge (the paper's co-degradation case) and flipped verdicts (a positive
# control: supervision known to be wrong must degrade). Five seeds (`--seeds 0 1 2 3 4`).
_V2 = (
    "model.path=builtin:shapes-v2",
    "prompts.source=shapes_v2",
    "prompts.eval_split=test",
    "prompts.n_eval=180",
    "trainer.eval_prompts=180",
    "trainer.judge_set_size=600",
    "trainer.judge_set_train_size=600",
    "trainer.output_dir=runs/shapes_v2",
)
_ORACLE = ("judge.type=shapes_checker",)
_FLIPPED = ("judge.type=noisy", "judge.base.type=self", "judge.flip_fraction=1.0")
_FINDINGS_V2 = [
    ("sft", "sft", [*_V2, *_OFFLINE]),
    ("sft_oracle", "sft", [*_V2, *_OFFLINE, *_ORACLE, "trainer.run_name=sft_oracle"]),
    ("online_dpo", "online_dpo", [*_V2, *_ONLINE]),
    ("online_dpo_oracle", "online_dpo", [*_V2, *_ONLINE, *_ORACLE, "trainer.run_name=online_dpo_oracle"]),
    ("c_dpo", "c_dpo", [*_V2, *_OFFLINE]),
    ("dpo", "dpo", [*_V2, *_OFFLINE]),
    ("lax_sft", "sft", [*_V2, *_OFFLINE, "judge.accept_threshold=0.01", "trainer.run_name=lax_sft"]),
    ("flipped_sft", "sft", [*_V2, *_OFFLINE, *_FLIPPED, "trainer.run_name=flipped_sft"]),
]
# What each findings table compares (recipe, against), paired over prompts with the seeds pooled.
COMPARISONS = {
    "findings": [
        ("dpo", "sft"),
        ("online_dpo", "dpo"),
        ("c_sft", "sft"),
        ("c_dpo", "dpo"),
        ("c_sft_matched", "sft"),
        ("c_dpo_matched", "dpo"),
        ("sft_conditional", "sft"),
        ("online_dpo_conditional", "online_dpo"),
        ("co_degradation", "online_dpo"),
        ("co_degradation_sft", "sft"),
        ("online_grpo", "online_dpo"),
    ],
    "findings_v2": [
        ("sft_oracle", "sft"),
        ("online_dpo_oracle", "online_dpo"),
        ("c_dpo", "dpo"),
        ("lax_sft", "sft"),
        ("flipped_sft", "sft"),
    ],
}
# The findings suite's primary contrasts, declared before its runs (recipe, against, report column; against
# "start": the recipe's own change). They are read at 95% with their minimum detectable effect; every other
# contrast the report prints is read at Holm-adjusted levels (docs/intervals.md). One per claim of the paper:
PRIMARY = {
    "findings": (
        ("online_dpo", "start", "gen_accuracy, category mean"),  # self-improvement
        ("online_dpo", "start", "judge set balanced accuracy"),  # co-improvement of understanding
        ("co_degradation_sft", "sft", "gen_accuracy, category mean"),  # co-degradation: generation
        ("co_degradation_sft", "sft", "judge set balanced accuracy"),  # co-degradation: the judge
        ("c_dpo", "dpo", "gen_accuracy, category mean"),  # curriculum, as the paper runs it
        ("c_dpo_matched", "dpo", "gen_accuracy, category mean"),  # curriculum at DPO's step budget
    ),
    # Declared before any v2 run: one per claim, each against its own start or its control arm.
    "findings_v2": (
        ("online_dpo", "start", "gen_accuracy, category mean"),  # self-improvement
        ("online_dpo", "start", "training-prompt judge set balanced accuracy"),  # co-improvement, where it acts
        ("sft_oracle", "sft", "gen_accuracy, category mean"),  # what the self-judge's errors cost
        ("lax_sft", "sft", "judge set balanced accuracy"),  # co-degradation, the paper's case: the judge
        ("flipped_sft", "sft", "gen_accuracy, category mean"),  # co-degradation's positive control
        ("c_dpo", "dpo", "gen_accuracy, category mean"),  # curriculum
    ),
}
SUITES: dict[str, list[tuple[str, str, list[str]]]] = {
    "findings": _FINDINGS,
    "findings_v2": _FINDINGS_V2,
    "objects": [
        *((name, name, [*_OBJECTS, "sampling.samples_per_prompt=32"]) for name in ("sft", "dpo", "c_sft", "c_dpo")),
        ("online_dpo", "online_dpo", [*_OBJECTS]),
        ("online_dpo_frozen", "online_dpo", [*_OBJECTS, "judge.weights=frozen", "trainer.run_name=online_dpo_frozen"]),
        ("online_dpo_no_curriculum", "online_dpo", [*_OBJECTS, "curriculum.type=none", "trainer.run_name=online_dpo_no_curriculum"]),
        ("poor_supervision", "poor_supervision", [*_OBJECTS]),
    ],
    # GRPO beside online DPO from the same base at the same images (16 prompts × 8 a step, 60 steps): the
    # reward is the model's own judge's P(yes), or the exact checker's verdict (the oracle upper bound).
    "grpo": [
        ("online_dpo", "online_dpo", [*_GRPO]),
        ("online_grpo", "online_grpo", [*_GRPO]),
        (
            "online_grpo_checker",
            "online_grpo",
            [*_GRPO, "judge.type=shapes_checker", "algorithm.reward=verdict", "trainer.run_name=online_grpo_checker"],
        ),
    ],
}


def run_dir_of(config: Path, overrides: list[str]) -> Path:
    from rayunify.config import load_config

    cfg = load_config(config, overrides)
    return ROOT / cfg.trainer.output_dir / cfg.trainer.run_name


def with_seeds(runs: list[tuple[str, str, list[str]]], seeds: list[int] | None) -> list[tuple[str, str, list[str]]]:
    """Each run once per seed, as its own run directory (<name>_s<seed>); seed by seed, so that a suite cut
    short still has every recipe at the first seeds."""
    if not seeds:
        return runs
    return [
        (f"{name}_s{seed}", config, [*overrides, f"trainer.seed={seed}", f"trainer.run_name={name}_s{seed}"])
        for seed in seeds
        for name, config, overrides in runs
    ]


def run_experiment(name: str, overrides: list[str], config_name: str | None = None, log: Path | None = None) -> dict:
    """One training run; its output goes to `log` where given (runs side by side), else to this terminal."""
    config = CONFIGS / f"{config_name or name}.yaml"
    started = time.perf_counter()
    # --overwrite: a suite run that is not reused (--skip-existing) starts its run directory over.
    cmd = [sys.executable, "-m", "rayunify.train", "--config", str(config), "--overwrite", *overrides]
    print(f"== {name}: {' '.join(cmd)}" + (f" > {log}" if log else ""), flush=True)
    if log is None:
        code = subprocess.run(cmd, cwd=ROOT).returncode
    else:
        with open(log, "w") as stream:
            code = subprocess.run(cmd, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT).returncode
        print(f"== {name}: exit {code} after {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return summarize(name, run_dir_of(config, overrides), code, (time.perf_counter() - started) / 60)


def run_all(runs: list[tuple[str, str, list[str]]], jobs: int, skip_existing: bool, out: Path) -> list[dict]:
    """Every run, `jobs` at a time (each its own local Ray cluster; with more than one, each run's output
    goes to out/logs/<name>.log). Results keep the order of `runs`."""
    logs = out / "logs" if jobs > 1 else None
    if logs:
        logs.mkdir(parents=True, exist_ok=True)

    def one(run: tuple[str, str, list[str]]) -> dict:
        name, config, overrides = run
        log = logs / f"{name}.log" if logs else None
        return (skip_existing and reuse(name, config, overrides)) or run_experiment(name, overrides, config, log)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, runs))


def reuse(name: str, config_name: str, overrides: list[str]) -> dict | None:
    """A finished run's result without running it again (its eval_final.json exists)."""
    run_dir = run_dir_of(CONFIGS / f"{config_name}.yaml", overrides)
    return summarize(name, run_dir, 0, float("nan")) if (run_dir / "eval_final.json").is_file() else None


def summarize(name: str, run_dir: Path, exit_code: int, minutes: float) -> dict:
    result = {"name": name, "exit_code": exit_code, "minutes": minutes, "run_dir": str(run_dir)}
    for tag in ("start", "final"):
        path = run_dir / f"eval_{tag}.json"
        result[tag] = json.loads(path.read_text()) if path.is_file() else None
    rows = read_metrics(run_dir)
    result["guard_alarms"] = int(max((r.get("guard/alarms_total") or 0 for r in rows), default=0))
    # The judge on the start evaluation's images, at the start and the end (trainer.eval_fixed_images)
    fixed = [r["fixed/judge_fpr"] for r in rows if r.get("fixed/judge_fpr") is not None]
    result["fixed_judge_fpr"] = [fixed[0], fixed[-1]] if fixed else None
    return result


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def cell(result: dict, key: str, group: str = "overall") -> str:
    if not result["start"] or not result["final"]:
        return "–"
    a, b = result["start"][group].get(key), result["final"][group].get(key)
    if a is None or b is None:
        return "–"
    return f"{a:.3f} → {b:.3f}"


def markdown(results: list[dict]) -> str:
    header = " | ".join(KEYS) + " | judge_fpr on the start images | gen_accuracy, category mean"
    lines = [f"| run | {header} | guard alarms | minutes |", "|" + "---|" * (len(KEYS) + 5)]
    for r in results:
        fixed = "–" if not r.get("fixed_judge_fpr") else "{:.3f} → {:.3f}".format(*r["fixed_judge_fpr"])
        cells = " | ".join([*(cell(r, k) for k in KEYS), fixed, cell(r, "gen_accuracy", "category_mean")])
        lines.append(f"| {r['name']} | {cells} | {r['guard_alarms']} | {r['minutes']:.1f} |")
    categories = sorted({c for r in results if r["final"] for c in r["final"] if c not in SUMMARIES})
    lines += ["", "Generation accuracy per category (start → end):", ""]
    lines.append("| run | " + " | ".join(categories) + " |")
    lines.append("|" + "---|" * (len(categories) + 1))
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(cell(r, "gen_accuracy", c) for c in categories) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help="experiments: config names in configs/shapes/, or with --suite its runs"
    )
    parser.add_argument("--out", help="default: runs/shapes/results, or runs/shapes_<suite>/results")
    parser.add_argument("--override", action="append", default=[], help="extra key=value for every run")
    parser.add_argument(
        "--suite", choices=sorted(SUITES), help="a named set of runs (default: findings_v2, seeds 0-4)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds: every run once per seed")
    parser.add_argument("--baseline", help="with --seeds: the recipe the others are compared with")
    parser.add_argument(
        "--skip-existing", action="store_true", help="reuse runs whose eval_final.json exists"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each its own local Ray cluster)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: at least 1")
    if not args.suite and not args.names:
        args.suite, args.seeds = "findings_v2", args.seeds or [0, 1, 2, 3, 4]
    runs = selected_runs(parser, args)
    out = Path(args.out or ROOT / "runs" / (f"shapes_{args.suite}" if args.suite else "shapes") / "results")
    out.mkdir(parents=True, exist_ok=True)
    results = run_all(runs, args.jobs, args.skip_existing, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    if args.seeds:
        from rayunify.report import interval_tables, plot_changes, recipes_of

        recipes = recipes_of([r["run_dir"] for r in results])
        pairs = [(a, b) for a, b in COMPARISONS.get(args.suite or "", []) if a in recipes and b in recipes]
        primary = primary_of(args.suite, recipes, pairs)
        text += "\n\n" + interval_tables(recipes, args.baseline, comparisons=pairs, primary=primary)
        text += f"\n\n![changes]({plot_changes(recipes, out / 'changes.png').name})"
    (out / "results.md").write_text(text + "\n")
    from rayunify.report import write_report

    write_report([r["run_dir"] for r in results if Path(r["run_dir"], "metrics.jsonl").is_file()], str(out))
    print(text)
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'}, {out / 'curves.png'}")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


def primary_of(suite: str | None, recipes: dict, pairs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """The suite's declared primary contrasts among the recipes run (a suite run in part has fewer)."""
    wanted = PRIMARY.get(suite or "", ())
    return [(r, a, label) for r, a, label in wanted if r in recipes and (a == "start" or (r, a) in pairs)]


def selected_runs(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[tuple[str, str, list[str]]]:
    """The suite's runs (only those named, where names are given), or the named configs, once per seed."""
    if args.suite:
        runs = [
            (name, config, [*overrides, *args.override]) for name, config, overrides in SUITES[args.suite]
        ]
        unknown = sorted(set(args.names) - {name for name, *_ in runs})
        if unknown:
            parser.error(f"suite {args.suite!r} has no run {', '.join(unknown)}")
        runs = [run for run in runs if not args.names or run[0] in args.names]
    else:
        names = args.names or sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "base")
        runs = [(name, name, args.override) for name in names]
    return with_seeds(runs, args.seeds)


if __name__ == "__main__":
    raise SystemExit(main())
