"""`rayunify report RUN_DIR [RUN_DIR …]`: PNG plots and a markdown summary, runs side by side."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from rayunify.intervals import (
    JUDGE_SET_LEVELS,
    LEVELS,
    MIN_TEXTS_FOR_SPREAD,
    ArmRecords,
    Interval,
    contrast_interval,
    point,
    read_eval_records,
    seed_points,
)
from rayunify.power import holm, holm_levels, minimum_detectable_effect

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
    points = [
        (r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])
    ]
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
                ax.plot(
                    xs,
                    ys,
                    marker="o" if len(xs) < 12 else None,
                    markersize=3,
                    label=name,
                    color=f"C{index % 10}",
                )
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
# are the model's own images, "judgeset" the fixed judge set (trainer.judge_set_size), "judgeset_train" the
# one on the training prompts (trainer.judge_set_train_size); no column where a run lacks it
INTERVAL_COLUMNS = [
    ("eval", "gen_accuracy", "overall", "gen_accuracy"),
    ("eval", "gen_accuracy", "category_mean", "gen_accuracy, category mean"),
    ("eval", "nonunified", "overall", "nonunified"),
    ("eval", "judge_accuracy", "overall", "judge_accuracy"),
    ("judgeset", "balanced_accuracy", "overall", "judge set balanced accuracy"),
    ("judgeset_train", "balanced_accuracy", "overall", "training-prompt judge set balanced accuracy"),
]
SEED_SUFFIX = re.compile(r"_s\d+$")
START = "start"  # `against` of a contrast that is a recipe's change from its own start
ALPHA = 0.05
Column = tuple[str, str, str, str]
Key = tuple[str, str, str]  # (recipe, against, column label)


def recipes_of(run_dirs: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Run directories grouped by recipe: the seeds of one recipe are named <recipe>_s<seed>."""
    grouped: dict[str, list[Path]] = {}
    for run_dir in map(Path, run_dirs):
        grouped.setdefault(SEED_SUFFIX.sub("", run_dir.name), []).append(run_dir)
    return grouped


def eval_table(run_dirs: Sequence[Path], tag: str, records: str = "eval") -> ArmRecords:
    return _eval_table(tuple(map(Path, run_dirs)), tag, records)


@lru_cache(maxsize=256)
def _eval_table(run_dirs: tuple[Path, ...], tag: str, records: str) -> ArmRecords:
    paths = [d / f"{records}_{tag}_records.jsonl" for d in run_dirs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no per-image {records} records (written by every run's evaluation): {', '.join(missing)}"
        )
    return read_eval_records(paths)


def _columns(run_dirs: Sequence[Path]) -> list[Column]:
    """INTERVAL_COLUMNS whose records every run has (a run without a judge set has no judgeset column)."""
    return [
        c for c in INTERVAL_COLUMNS if all((d / f"{c[0]}_final_records.jsonl").is_file() for d in run_dirs)
    ]


def contrast(
    recipes: Mapping[str, Sequence[Path]], recipe: str, against: str, column: Column, resamples: int
) -> Interval:
    """The 95% interval of a recipe's end figure minus its start (against START) or minus another recipe's
    end. The judge set resamples seeds only (fixed images, a deterministic judge); the model's own images
    resample seeds, texts and images (rayunify.intervals)."""
    records, metric, group, _ = column
    levels = JUDGE_SET_LEVELS if records.startswith("judgeset") else LEVELS
    if against == START:
        arms = {
            "end": eval_table(recipes[recipe], "final", records),
            "start": eval_table(recipes[recipe], "start", records),
        }
    else:
        arms = {
            "end": eval_table(recipes[recipe], "final", records),
            "start": eval_table(recipes[against], "final", records),
        }
    return contrast_interval(arms, {"end": 1.0, "start": -1.0}, metric, group, levels, resamples)


def interval_tables(
    recipes: Mapping[str, Sequence[Path]],
    baseline: str | None = None,
    resamples: int = 2000,
    comparisons: Sequence[tuple[str, str]] = (),
    primary: Sequence[Key] = (),
) -> str:
    """Markdown: the primary contrasts (recipe, against, column label; against "start": the recipe's change)
    at 95% with their minimum detectable effects; then each recipe's start → end, with `baseline` each
    recipe's end minus the baseline's, and each of `comparisons`, the contrasts not primary at Holm-adjusted
    levels (one family per column)."""
    columns = _columns([d for dirs in recipes.values() for d in dirs])
    pairs = [(name, START) for name in recipes]
    if baseline is not None:
        pairs += [(name, baseline) for name in recipes if name != baseline]
    pairs += [pair for pair in comparisons if pair not in pairs]
    for name in {n for pair in pairs for n in pair} - {*recipes, START}:
        raise ValueError(f"recipe {name!r} to compare is not among the recipes ({', '.join(recipes)})")
    labels = {c[3]: c for c in columns}
    for recipe, against, label in primary:
        if (recipe, against) not in pairs or label not in labels:
            raise ValueError(
                f"primary contrast {recipe} − {against} on {label!r} is not among those tabulated"
            )
    found = {(r, a, c[3]): contrast(recipes, r, a, c, resamples) for r, a in pairs for c in columns}
    shown = adjusted(found, set(primary))
    lines = _primary_lines(found, primary) if primary else []
    lines += _change_lines(recipes, columns, shown)
    if baseline is not None:
        lines += ["", f"End figures minus {baseline}'s:", ""]
        lines += _difference_lines([(n, baseline) for n in recipes if n != baseline], columns, shown)
    if comparisons:
        lines += ["", "End figures, recipe minus recipe:", ""]
        lines += _difference_lines(comparisons, columns, shown)
    return "\n".join(lines + ["", *_notes(recipes, columns, primary, shown)])


def adjusted(found: Mapping[Key, Interval], primary: set[Key]) -> dict[Key, tuple[Interval, float | None]]:
    """Each interval as printed: a primary one at 95%; the others, per column, at the level of Holm's step
    that decides them (so an interval clears zero exactly when Holm rejects), with Holm's adjusted p."""
    shown: dict[Key, tuple[Interval, float | None]] = {k: (found[k], None) for k in primary if k in found}
    for label in {k[2] for k in found}:
        family = [k for k in found if k[2] == label and k not in primary]
        levels = holm_levels([found[k].p_value() for k in family], ALPHA)
        adjusted_p = holm([found[k].p_value() for k in family])
        for key, level, p in zip(family, levels, adjusted_p, strict=True):
            shown[key] = (found[key].at(level), p)
    return shown


def _cell(interval: Interval) -> str:
    # a difference of two shares lies in [-1, 1]: few seeds at a Holm level can reach past it
    low, high = max(interval.low, -1.0), min(interval.high, 1.0)
    text = f"{interval.estimate:+.3f} [{low:+.3f}, {high:+.3f}]"
    return f"**{text}**" if interval.clears() else text


def _primary_lines(found: Mapping[Key, Interval], primary: Sequence[Key]) -> list[str]:
    lines = [
        "Primary contrasts (declared before the runs), 95% intervals, and the minimum detectable effect (MDE)"
        " at 80% power:",
        "",
        "| contrast | figure | estimate [95% interval] | seeds | df | MDE | MDE at 5 seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in primary:
        recipe, against, label = key
        i = found[key]
        name = f"{recipe}: end − start" if against == START else f"{recipe} − {against}"
        mde, mde5 = (minimum_detectable_effect(i.components, n) for n in (i.seeds, 5))
        lines.append(f"| {name} | {label} | {_cell(i)} | {i.seeds} | {i.df:.1f} | {mde:.3f} | {mde5:.3f} |")
    return [*lines, ""]


def _change_lines(
    recipes: Mapping[str, Sequence[Path]],
    columns: Sequence[Column],
    shown: Mapping[Key, tuple[Interval, float | None]],
) -> list[str]:
    head = " | ".join(label for *_, label in columns)
    lines = [
        "Start → end, and the change with its interval:",
        "",
        f"| recipe | seeds | {head} | gen_accuracy at the end, each seed |",
        "|" + "---|" * (len(columns) + 3),
    ]
    for name, dirs in recipes.items():
        cells = []
        for records, metric, group, label in columns:
            start = point(eval_table(dirs, "start", records), metric, group)
            end = point(eval_table(dirs, "final", records), metric, group)
            cells.append(f"{start:.3f} → {end:.3f} ({_cell(shown[(name, START, label)][0])})")
        per_seed = ", ".join(f"{v:.3f}" for v in seed_points(eval_table(dirs, "final"), "gen_accuracy"))
        lines.append(f"| {name} | {len(dirs)} | " + " | ".join(cells) + f" | {per_seed} |")
    return lines


def _difference_lines(
    pairs: Sequence[tuple[str, str]],
    columns: Sequence[Column],
    shown: Mapping[Key, tuple[Interval, float | None]],
) -> list[str]:
    head = " | ".join(label for *_, label in columns)
    lines = [f"| recipe | against | {head} |", "|" + "---|" * (len(columns) + 2)]
    for name, against in pairs:
        cells = [_cell(shown[(name, against, c[3])][0]) for c in columns]
        lines.append(f"| {name} | {against} | " + " | ".join(cells) + " |")
    return lines


def _notes(
    recipes: Mapping[str, Sequence[Path]],
    columns: Sequence[Column],
    primary: Sequence[Key],
    shown: Mapping[Key, tuple[Interval, float | None]],
) -> list[str]:
    family = {label: sum(k[2] == label and k not in primary for k in shown) for *_, label in columns}
    sizes = ", ".join(f"{n} ({label})" for label, n in family.items())
    lines = [
        "Intervals: estimate ± t(df) · SE from a hierarchical bootstrap (seeds, texts within category, images"
        " within text; the judge set: seeds only), docs/intervals.md. "
        + (
            "Primary contrasts at 95%; the others "
            if primary
            else "No primary contrast declared: every contrast "
        )
        + f"at the level of the Holm step that decides it, one family per column ({sizes}). Bold: clears zero.",
    ]
    arm = eval_table(next(iter(recipes.values())), "final")
    few = {
        c: len(arm.texts_of(c))
        for c in sorted(set(arm.categories))
        if len(arm.texts_of(c)) < MIN_TEXTS_FOR_SPREAD
    }
    if few:
        listed = ", ".join(f"{c} ({n})" for c, n in few.items())
        lines.append(
            f"Categories with fewer than {MIN_TEXTS_FOR_SPREAD} texts (texts): {listed}. Their figures are about "
            "those texts: no interval here includes how much other meanings of the category would differ."
        )
    one_seed = [n for n, dirs in recipes.items() if len(dirs) < 2]
    if one_seed:
        lines.append(
            f"One seed only ({', '.join(one_seed)}): the training seed's spread is not in their intervals."
        )
    return lines


def change_interval(
    start: ArmRecords, end: ArmRecords, metric: str, group: str, resamples: int, levels=LEVELS
) -> tuple[float, float, float, float]:
    """(start, end, low, high): the two figures and the 95% interval of end − start."""
    i = contrast_interval(
        {"start": start, "end": end}, {"end": 1.0, "start": -1.0}, metric, group, levels, resamples
    )
    return point(start, metric, group), point(end, metric, group), i.low, i.high


def plot_changes(recipes: Mapping[str, Sequence[Path]], path: Path, resamples: int = 2000) -> Path:
    """One panel per interval column: each recipe's start → end change with its 95% interval, unadjusted (the
    tables hold exploratory contrasts at Holm-adjusted levels, so a point coloured here may not clear there)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns([d for dirs in recipes.values() for d in dirs])
    size = (3.3 * len(columns), 0.45 * len(recipes) + 1.2)
    fig, grid = plt.subplots(1, len(columns), figsize=size, sharey=True, squeeze=False)
    axes, ys = grid[0], range(len(recipes))
    for ax, column in zip(axes, columns, strict=True):
        for y, name in zip(ys, recipes, strict=True):
            i = contrast(recipes, name, START, column, resamples)
            colour = (
                "C2" if i.low > 0 else "C3" if i.high < 0 else "C7"
            )  # clears above zero, below zero, or not
            ax.errorbar(
                i.estimate,
                y,
                xerr=[[i.estimate - i.low], [i.high - i.estimate]],
                fmt="o",
                color=colour,
                capsize=3,
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{column[3]}\nchange, 95% interval (unadjusted)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_yticks(list(ys), list(recipes), fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    run_dirs: list[str],
    out: str | None = None,
    intervals: bool = False,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] = (),
    primary: Sequence[Key] = (),
) -> Path:
    runs = {Path(d).name: read_run(Path(d)) for d in run_dirs}
    out_dir = Path(out) if out else Path(run_dirs[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_runs(runs, out_dir / "curves.png")
    text = f"# rayunify report\n\n{summary_table(runs)}\n\n![curves]({plot.name})\n"
    if intervals:
        changes = plot_changes(recipes_of(run_dirs), out_dir / "changes.png")
        text += f"\n{interval_tables(recipes_of(run_dirs), baseline, comparisons=comparisons, primary=primary)}\n\n![changes]({changes.name})\n"
    (out_dir / "report.md").write_text(text)
    return out_dir / "report.md"
