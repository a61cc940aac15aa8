"""The adaptive curriculum's levels from the model: without `curriculum.levels`, categories ordered by the
start evaluation's acceptance rate (highest first), file order breaking ties, unmeasured ones last; the
order is said on stdout and logged; an explicit `curriculum.levels` still wins."""

from __future__ import annotations

import json
import math

import pytest
from tiny_runs import COIN_FLIP_TINY_RUN

from rayunify.config import CurriculumConfig
from rayunify.levels import acceptance_by_category, levels_by_acceptance
from rayunify.training_data import TrainingData
from rayunify.types import Prompt, Verdict

A, R, INV = Verdict.ACCEPT, Verdict.REJECT, Verdict.INVALID


def test_acceptance_leaves_invalid_answers_out():
    rates = acceptance_by_category(
        [("color", A), ("color", R), ("color", INV), ("shape", INV), ("spatial", R)]
    )
    assert rates["color"] == 0.5 and rates["spatial"] == 0.0 and math.isnan(rates["shape"])


def test_levels_go_by_acceptance_with_file_order_breaking_ties_and_unmeasured_last():
    file_order = ["3d_spatial", "color", "complex", "numeracy", "shape"]
    rates = {"3d_spatial": 0.1, "color": 0.8, "complex": 0.1, "shape": math.nan}  # numeracy: no eval prompt
    order = levels_by_acceptance(file_order, rates)
    assert order.levels == ["color", "3d_spatial", "complex", "numeracy", "shape"]
    assert order.metrics() == {
        "curriculum/level/color": 0.0, "curriculum/level/3d_spatial": 1.0, "curriculum/level/complex": 2.0,
        "curriculum/level/numeracy": 3.0, "curriculum/level/shape": 4.0,
    }  # fmt: skip
    assert order.describe().endswith(
        "color 0.80, 3d_spatial 0.10, complex 0.10, numeracy (not measured), shape (not measured)"
    )
    assert levels_by_acceptance(file_order, {}).levels == file_order  # nothing measured: the file order


def test_the_training_data_admits_the_easiest_level_first_once_set():
    prompts = [Prompt(f"h{i}", f"hard {i}", "hard") for i in range(4)] + [
        Prompt(f"e{i}", f"easy {i}", "easy") for i in range(4)
    ]
    data = TrainingData(prompts, CurriculumConfig(type="adaptive"), levels=["hard", "easy"])
    assert {p.category for p in data.next_prompts(4)} == {"hard"}
    data.set_levels(["easy", "hard"])
    assert {p.category for p in data.next_prompts(4)} == {"easy"}
    data.counters["groups"] = 1
    with pytest.raises(RuntimeError, match="before the first group"):
        data.set_levels(["hard", "easy"])


def test_an_adaptive_run_orders_its_levels_from_the_start_evaluation(tmp_path, capsys):
    """A tiny run: the random model's own judge answers nothing parsable, so every category is unmeasured and
    the file order stands; the order is printed and logged at step 0."""
    from rayunify.train import main

    argv = [
        *COIN_FLIP_TINY_RUN, "curriculum.type=adaptive", "trainer.steps=1", "trainer.prompts_per_step=2",
        "trainer.eval_prompts=4", "trainer.eval_every=100", "guard.probe_size=0", "logger.type=jsonl",
        f"trainer.output_dir={tmp_path}", "trainer.run_name=levels",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("curriculum levels by the start evaluation"))
    assert "(not measured)" in line
    first = json.loads((tmp_path / "levels" / "metrics.jsonl").read_text().splitlines()[0])
    levels = {k: v for k, v in first.items() if k.startswith("curriculum/level/")}
    assert first["step"] == 0 and sorted(levels.values()) == [float(i) for i in range(len(levels))] and levels
