"""README's commands work as written."""

from __future__ import annotations

import shlex
from pathlib import Path

from rayunify.train import main

ROOT = Path(__file__).resolve().parents[1]
DRY_RUN = (
    "rayunify train --config examples/janus_pro_7b_sft.yaml --dry-run model.path=builtin:janus-pro-7b-shape \\\n"
    "  prompts.path='tests/fixtures/prompts/T2I-CompBench/examples/dataset/*_train.txt' \\\n"
    "  prompts.eval_path='tests/fixtures/prompts/T2I-CompBench/examples/dataset/*_val.txt' guard.reference.type=self"
)


def test_the_readme_dry_run_runs_as_written_in_a_fresh_clone(capsys, monkeypatch):
    assert DRY_RUN in (ROOT / "README.md").read_text()
    monkeypatch.chdir(ROOT)
    args = shlex.split(DRY_RUN.replace("\\\n", " "))[2:]  # after `rayunify train`
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dry run OK" in out and "memory per learner GPU" in out and "byte-order mark stripped" in out
