"""`rayunify report RUN_DIR [RUN_DIR …]`: PNG plots and a markdown summary, runs side by side."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from rayunify.intervals import PromptTable, bootstrap_arms, interval, point, read_eval_records

# (metric key in metrics.jsonl, panel title); a run that lacks a key simply has no line in that panel.
PANELS = [
    ("eval/gen_accuracy", "generation accuracy (reference judge, eval prompts)"),
    ("eval/category_mean/gen_accuracy", "generation accuracy, mean over categories"),
    ("eval/nonunified", "non-unification (own judge rejects own images)"),
    ("eval/judge_fpr", "judge false-positive rate vs reference"),
    ("fixed/judge_fpr", "judge false-positive rate, start images"),
    ("guard/agreement", "judge–reference agreement (training samples)"),
    ("train/loss", "learner loss"),
    ("train/reward_margin", "DPO reward margin"),
    ("probe/p_yes", "false-positive probe: judge P(yes)"),
]
# (metric key, column label) of the markdown summary, start → end of each run
SUMMARY = [
    ("eval/gen_accuracy", "gen_accuracy"),
    ("eval/nonunified", "nonunified"),
    ("eval/judge_accuracy", "judge_accuracy"),
    ("eval/judge_fpr", "judge_fpr"),
    ("fixed/judge_fpr", "judge_fpr on the start images"),
    ("eval/weak_generation", "weak_generation"),
]


def read_run(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: is it a rayunify run directory?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def plot_runs(runs: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows_n = math.ceil(len(PANELS) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
    for ax, (key, title) in zip(axes.flat, PANELS, strict=False):
        for index, (name, rows) in enumerate(runs.items()):
            xs, ys = series(rows, key)
            if xs:  # one colour per run in every panel, also where some runs have no line
                ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, markersize=3, label=name, color=f"C{index % 10}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(PANELS) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(runs: dict[str, list[dict]]) -> str:
    header = "| run | " + " | ".join(f"{label} (start → end)" for _, label in SUMMARY) + " |"
    lines = [header, "|" + "---|" * (len(SUMMARY) + 1)]
    for name, rows in runs.items():
        cells = []
        for key, _ in SUMMARY:
            _, ys = series(rows, key)
            cells.append(f"{ys[0]:.3f} → {ys[-1]:.3f}" if ys else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# (records, metric, group, label) of the interval tables, the figures a finding is read from: records "eval"
# are the model's own images, "judgeset" the fixed judge set (trainer.judge_set_size; no column where a run
# lacks it)
INTERVAL_COLUMNS = [
    ("eval", "gen_accuracy", "overall", "gen_accuracy"),
    ("eval", "gen_accuracy", "category_mean", "gen_accuracy, category mean"),
    ("eval", "nonunified", "overall", "nonunified"),
    ("eval", "judge_accuracy", "overall", "judge_accuracy"),
    ("judgeset", "balanced_accuracy", "overall", "judge set balanced accuracy"),
]
SEED_SUFFIX = re.compile(r"_s\d+$")


def recipes_of(run_dirs: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Run directories grouped by recipe: the seeds of one recipe are named <recipe>_s<seed>."""
    grouped: dict[str, list[Path]] = {}
    for run_dir in map(Path, run_dirs):
        grouped.setdefault(SEED_SUFFIX.sub("", run_dir.name), []).append(run_dir)
    return grouped


def eval_table(run_dirs: Sequence[Path], tag: str, records: str = "eval") -> PromptTable:
    paths = [d / f"{records}_{tag}_records.jsonl" for d in run_dirs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no per-image {records} records (written by every run's evaluation): {', '.join(missing)}"
        )
    return read_eval_records(paths)


def _columns(run_dirs: Sequence[Path]) -> list[tuple[str, str, str, str]]:
    """INTERVAL_COLUMNS whose records every run has (a run without a judge set has no judgeset column)."""
    return [
        c for c in INTERVAL_COLUMNS if all((d / f"{c[0]}_final_records.jsonl").is_file() for d in run_dirs)
    ]


def interval_tables(
    recipes: Mapping[str, Sequence[Path]],
    baseline: str | None = None,
    resamples: int = 2000,
    comparisons: Sequence[tuple[str, str]] = (),
) -> str:
    """Markdown: each recipe's start → end with the paired 95% interval of the change; with `baseline` each
    recipe's end minus the baseline's end, and for each (recipe, against) of `comparisons` that difference,
    paired over the same prompt draws. Seeds pool per prompt."""
    columns = _columns([d for dirs in recipes.values() for d in dirs])
    head = " | ".join(label for *_, label in columns)
    lines = [
        "Start → end, and the change with its 95% interval (paired bootstrap over prompts, seeds pooled):",
        "",
        f"| recipe | seeds | {head} | gen_accuracy at the end, each seed |",
        "|" + "---|" * (len(columns) + 3),
    ]
    for name, dirs in recipes.items():
        cells = [
            _change_cell(
                eval_table(dirs, "start", records),
                eval_table(dirs, "final", records),
                metric,
                group,
                resamples,
            )
            for records, metric, group, _ in columns
        ]
        per_seed = ", ".join(f"{point(eval_table([d], 'final'), 'gen_accuracy'):.3f}" for d in dirs)
        lines.append(f"| {name} | {len(dirs)} | " + " | ".join(cells) + f" | {per_seed} |")
    if baseline is not None:
        pairs = [(name, baseline) for name in recipes if name != baseline]
        lines += ["", f"End figures minus {baseline}'s, with 95% intervals (paired over prompts):", ""]
        lines += _difference_table(recipes, pairs, columns, resamples)
    if comparisons:
        lines += ["", "End figures, recipe minus recipe, with 95% intervals (paired over prompts):", ""]
        lines += _difference_table(recipes, comparisons, columns, resamples)
    return "\n".join(lines)


def change_interval(
    start: PromptTable, end: PromptTable, metric: str, group: str, resamples: int
) -> tuple[float, float, float, float]:
    """(start, end, low, high): the two figures and the paired 95% interval of end − start."""
    draws = bootstrap_arms({"start": start, "end": end}, metric, group, resamples)
    lo, hi = interval(draws["end"] - draws["start"])
    return point(start, metric, group), point(end, metric, group), lo, hi


def plot_changes(recipes: Mapping[str, Sequence[Path]], path: Path, resamples: int = 2000) -> Path:
    """One panel per interval column: each recipe's start → end change with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns([d for dirs in recipes.values() for d in dirs])
    size = (3.3 * len(columns), 0.45 * len(recipes) + 1.2)
    fig, grid = plt.subplots(1, len(columns), figsize=size, sharey=True, squeeze=False)
    axes, ys = grid[0], range(len(recipes))
    for ax, (records, metric, group, label) in zip(axes, columns, strict=True):
        for y, dirs in zip(ys, recipes.values(), strict=True):
            a, b, lo, hi = change_interval(
                eval_table(dirs, "start", records), eval_table(dirs, "final", records), metric, group, resamples
            )
            colour = "C2" if lo > 0 else "C3" if hi < 0 else "C7"  # clears above zero, below zero, or not
            ax.errorbar(b - a, y, xerr=[[b - a - lo], [hi - b + a]], fmt="o", color=colour, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{label}\nchange, 95% interval", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_yticks(list(ys), list(recipes), fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _change_cell(start: PromptTable, end: PromptTable, metric: str, group: str, resamples: int) -> str:
    a, b, lo, hi = change_interval(start, end, metric, group, resamples)
    return f"{a:.3f} → {b:.3f} ({b - a:+.3f} [{lo:+.3f}, {hi:+.3f}])"


def _difference_table(
    recipes: Mapping[str, Sequence[Path]],
    pairs: Sequence[tuple[str, str]],
    columns: Sequence[tuple[str, str, str, str]],
    resamples: int,
) -> list[str]:
    for name in {n for pair in pairs for n in pair} - set(recipes):
        raise ValueError(f"recipe {name!r} to compare is not among the recipes ({', '.join(recipes)})")
    head = " | ".join(label for *_, label in columns)
    lines = [f"| recipe | against | {head} |", "|" + "---|" * (len(columns) + 2)]
    for name, against in pairs:
        cells = []
        for records, metric, group, _ in columns:
            base, this = (
                eval_table(recipes[against], "final", records),
                eval_table(recipes[name], "final", records),
            )
            draws = bootstrap_arms({"base": base, "this": this}, metric, group, resamples)
            lo, hi = interval(draws["this"] - draws["base"])
            cells.append(
                f"{point(this, metric, group) - point(base, metric, group):+.3f} [{lo:+.3f}, {hi:+.3f}]"
            )
        lines.append(f"| {name} | {against} | " + " | ".join(cells) + " |")
    return lines


def write_report(
    run_dirs: list[str],
    out: str | None = None,
    intervals: bool = False,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] = (),
) -> Path:
    runs = {Path(d).name: read_run(Path(d)) for d in run_dirs}
    out_dir = Path(out) if out else Path(run_dirs[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_runs(runs, out_dir / "curves.png")
    text = f"# rayunify report\n\n{summary_table(runs)}\n\n![curves]({plot.name})\n"
    if intervals:
        changes = plot_changes(recipes_of(run_dirs), out_dir / "changes.png")
        text += f"\n{interval_tables(recipes_of(run_dirs), baseline, comparisons=comparisons)}\n\n![changes]({changes.name})\n"
    (out_dir / "report.md").write_text(text)
    return out_dir / "report.md"
