"""`rayunify report`: runs side by side, from their metrics.jsonl alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayunify.report import write_report


def fake_run(root: Path, name: str, gen: list[float | None]) -> Path:
    run = root / name
    run.mkdir()
    rows = [{"step": 10 * i, "eval/gen_accuracy": g, "fixed/judge_fpr": 0.2} for i, g in enumerate(gen)]
    rows.insert(1, {"step": 1, "train/loss": 0.7})  # a training row between evaluations
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run


def test_report_tabulates_start_and_end_and_draws_the_curves(tmp_path):
    a = fake_run(tmp_path, "sft", [0.2, 0.25, 0.3])
    b = fake_run(tmp_path, "dpo", [0.2, None, 0.4])  # NaN logged as null: skipped, not plotted as 0
    report = write_report([str(a), str(b)], str(tmp_path / "out"))
    text = report.read_text()
    assert "| sft | 0.200 → 0.300 |" in text and "| dpo | 0.200 → 0.400 |" in text
    assert "judge_fpr on the start images (start → end)" in text and "0.200 → 0.200" in text
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000


def test_report_on_a_directory_without_metrics_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        write_report([str(tmp_path)])
