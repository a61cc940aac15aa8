"""Paired bootstrap over prompts (rayunify.intervals) against what can be computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rayunify.intervals import PromptTable, bootstrap_arms, interval, point, read_eval_records
from rayunify.metrics import by_category


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(spec):
    """spec: [(prompt_id, category, own, reference), …] → record dicts (verdicts 1 accept, 0 reject)."""
    return [{"prompt_id": p, "category": c, "own": o, "score": float(o), "reference": r} for p, c, o, r in spec]


START = [("a", "x", 1, 0), ("a", "x", 0, 0), ("b", "x", 1, 1), ("b", "x", 1, 1), ("c", "y", 0, 0), ("c", "y", 0, 1)]
END = [("a", "x", 1, 1), ("a", "x", 1, 1), ("b", "x", 1, 1), ("b", "x", 0, 1), ("c", "y", 1, 1), ("c", "y", 0, 0)]


def test_point_matches_by_category(tmp_path):
    table = read_eval_records([write(tmp_path / "s.jsonl", rows(START))])
    from rayunify.metrics import VerdictRecord
    from rayunify.types import Verdict

    records = [VerdictRecord(c, Verdict(o), float(o), Verdict(r)) for _, c, o, r in START]
    report = by_category(records)
    for group in ("overall", "category_mean", "x"):
        for metric in ("gen_accuracy", "nonunified"):
            assert point(table, metric, group) == pytest.approx(report[group][metric])


def test_identical_arms_give_a_zero_width_paired_difference(tmp_path):
    table = read_eval_records([write(tmp_path / "s.jsonl", rows(START))])
    draws = bootstrap_arms({"before": table, "after": table}, "gen_accuracy")
    assert np.array_equal(draws["before"], draws["after"])
    lo, hi = interval(draws["before"])
    assert lo < hi  # the arm alone does vary over prompts


def test_one_prompt_per_category_cannot_vary(tmp_path):
    spec = [("a", "x", 1, 1), ("a", "x", 0, 0), ("c", "y", 0, 1)]
    table = read_eval_records([write(tmp_path / "s.jsonl", rows(spec))])
    draws = bootstrap_arms({"only": table}, "gen_accuracy", group="category_mean", resamples=50)
    assert np.allclose(draws["only"], point(table, "gen_accuracy", "category_mean"))


def test_seeds_pool_by_prompt_and_paired_draws_share_prompts(tmp_path):
    seed0 = write(tmp_path / "0.jsonl", rows(END))
    seed1 = write(tmp_path / "1.jsonl", rows(START))
    pooled = read_eval_records([seed0, seed1])
    assert pooled.rows["a"][:].sum() > read_eval_records([seed0]).rows["a"].sum()
    start = read_eval_records([write(tmp_path / "s.jsonl", rows(START))])
    draws = bootstrap_arms({"start": start, "end": read_eval_records([seed0])}, "gen_accuracy", resamples=400, seed=3)
    # gen_accuracy: start 3/6, end 5/6 → every paired resample of x and y keeps end ≥ start here
    assert np.all(draws["end"] - draws["start"] >= -1e-12)
    assert interval(draws["end"] - draws["start"])[1] > 0


def test_arms_on_other_prompts_are_refused(tmp_path):
    a = read_eval_records([write(tmp_path / "a.jsonl", rows(START))])
    b = PromptTable({"zzz": a.rows["a"]}, {"zzz": "x"})
    with pytest.raises(ValueError, match="other prompts"):
        bootstrap_arms({"a": a, "b": b}, "gen_accuracy")


def test_a_bad_line_names_its_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt_id": "a", "category": "x", "own": 1}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_eval_records([path])


def test_report_tables_pool_seeds_and_compare_with_a_baseline(tmp_path):
    from rayunify.report import interval_tables, recipes_of

    for name, end in (("dpo_s0", END), ("dpo_s1", END), ("grpo_s0", START), ("grpo_s1", START)):
        run = tmp_path / name
        run.mkdir()
        write(run / "eval_start_records.jsonl", rows(START))
        write(run / "eval_final_records.jsonl", rows(end))
    recipes = recipes_of(sorted(tmp_path.iterdir()))
    assert {k: len(v) for k, v in recipes.items()} == {"dpo": 2, "grpo": 2}
    text = interval_tables(recipes, baseline="dpo", resamples=200)
    assert "| dpo | 2 | 0.500 → 0.833 (+0.333 [" in text
    assert "| grpo | 2 | 0.500 → 0.500 (+0.000 [+0.000, +0.000])" in text  # the same images at both ends
    assert text.count("| 0.833, 0.833 |") == 1 and text.count("| 0.500, 0.500 |") == 1  # each seed's end
    assert "| grpo | dpo | -0.333 [" in text
    pairs = interval_tables(recipes, resamples=200, comparisons=[("dpo", "grpo")])
    assert "| dpo | grpo | +0.333 [" in pairs and "minus dpo's" not in pairs
    with pytest.raises(ValueError, match="'sft' to compare"):
        interval_tables(recipes, baseline="sft")


def test_repeats_of_a_text_are_one_prompt(tmp_path):
    spec = [("a", "x", 1, 1), ("a~1", "x", 0, 0), ("a~2", "x", 1, 0), ("b", "x", 0, 1)]
    table = read_eval_records([write(tmp_path / "r.jsonl", rows(spec))])
    assert sorted(table.rows) == ["a", "b"]
    assert table.rows["a"].sum() > table.rows["b"].sum()


def test_judge_set_records_give_the_judges_balanced_accuracy_and_a_report_column(tmp_path):
    from rayunify.intervals import write_judge_set_records
    from rayunify.report import interval_tables, recipes_of
    from rayunify.types import Judgement, Verdict

    texts, categories, labels = ["t1", "t1", "t2", "t2"], ["x", "x", "x", "x"], [True, False, True, False]
    says = [Verdict.ACCEPT, Verdict.ACCEPT, Verdict.ACCEPT, Verdict.REJECT]  # TPR 1, TNR 1/2
    judged = [Judgement(v, float(v == Verdict.ACCEPT), "") for v in says]
    run = tmp_path / "sft_s0"
    run.mkdir()
    for tag in ("start", "final"):
        write(run / f"eval_{tag}_records.jsonl", rows(START))
        write_judge_set_records(texts, categories, labels, judged, run / f"judgeset_{tag}_records.jsonl")
    table = read_eval_records([run / "judgeset_final_records.jsonl"])
    assert sorted(table.rows) == ["t1", "t2"]
    assert point(table, "balanced_accuracy") == pytest.approx(0.75)
    assert "judge set balanced accuracy" in interval_tables(recipes_of([run]), resamples=50)
    from rayunify.report import write_report

    write(run / "metrics.jsonl", [{"step": 0, "eval/gen_accuracy": 0.5}])
    report = write_report([str(run)], str(tmp_path / "report"), intervals=True)
    assert (report.parent / "changes.png").stat().st_size > 0 and "![changes](changes.png)" in report.read_text()
    (run / "judgeset_final_records.jsonl").unlink()  # a run without a judge set: no such column
    assert "judge set balanced accuracy" not in interval_tables(recipes_of([run]), resamples=50)
