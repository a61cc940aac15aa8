"""`rayunify report RUN_DIR [RUN_DIR …]`: PNG plots and a markdown summary, runs side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

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


def write_report(run_dirs: list[str], out: str | None = None) -> Path:
    runs = {Path(d).name: read_run(Path(d)) for d in run_dirs}
    out_dir = Path(out) if out else Path(run_dirs[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_runs(runs, out_dir / "curves.png")
    text = f"# rayunify report\n\n{summary_table(runs)}\n\n![curves]({plot.name})\n"
    (out_dir / "report.md").write_text(text)
    return out_dir / "report.md"
