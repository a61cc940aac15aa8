"""Size limits that keep the code readable: every module of the package at most 400 lines, and the driver's
`Trainer` (the loop as Algorithm 1 reads) at most 250."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_TRAINER_LINES = 250


def test_no_module_is_over_400_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / "rayunify").rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by what they do): {long}"


def test_the_trainer_class_is_at_most_250_lines():
    tree = ast.parse((ROOT / "rayunify" / "driver" / "trainer.py").read_text())
    trainer = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Trainer")
    assert trainer.end_lineno is not None
    lines = trainer.end_lineno - trainer.lineno + 1
    assert lines <= MAX_TRAINER_LINES, f"Trainer is {lines} lines; move a collaborator's work out of it"
