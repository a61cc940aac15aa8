"""Paired bootstrap over prompts (rayunify.intervals) against what can be computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rayunify.intervals import contrast_interval, point, read_eval_records, seed_points
from rayunify.metrics import by_category


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(spec):
    """spec: [(prompt_id, category, own, reference), …] → record dicts (verdicts 1 accept, 0 reject)."""
    return [
        {"prompt_id": p, "category": c, "own": o, "score": float(o), "reference": r} for p, c, o, r in spec
    ]


START = [
    ("a", "x", 1, 0),
    ("a", "x", 0, 0),
    ("b", "x", 1, 1),
    ("b", "x", 1, 1),
    ("c", "y", 0, 0),
    ("c", "y", 0, 1),
]
END = [
    ("a", "x", 1, 1),
    ("a", "x", 1, 1),
    ("b", "x", 1, 1),
    ("b", "x", 0, 1),
    ("c", "y", 1, 1),
    ("c", "y", 0, 0),
]


def test_point_matches_by_category(tmp_path):
    table = read_eval_records([write(tmp_path / "s.jsonl", rows(START))])
    from rayunify.metrics import VerdictRecord
    from rayunify.types import Verdict

    records = [VerdictRecord(c, Verdict(o), float(o), Verdict(r)) for _, c, o, r in START]
    report = by_category(records)
    for group in ("overall", "category_mean", "x"):
        for metric in ("gen_accuracy", "nonunified"):
            assert point(table, metric, group) == pytest.approx(report[group][metric])


def test_an_arm_against_itself_is_paired_over_texts_and_seeds(tmp_path):
    arm = read_eval_records([write(tmp_path / "s.jsonl", rows(START))])
    itself = contrast_interval({"a": arm, "b": arm}, {"a": 1, "b": -1}, "gen_accuracy", resamples=400)
    assert itself.estimate == 0 and itself.components.texts == 0  # the same text draw for both arms
    assert itself.components.images > 0  # two arms never share images: each redraws its own
    few = contrast_interval({"a": arm}, {"a": 1}, "gen_accuracy", levels=("text",), resamples=400)
    assert few.se == 0  # two texts in x, one in y: too few to estimate a between-text spread
    spec = [(f"t{i}", "x", 1, int(i % 3 == 0)) for i in range(6) for _ in range(2)]
    many = read_eval_records([write(tmp_path / "m.jsonl", rows(spec))])
    alone = contrast_interval({"a": many}, {"a": 1}, "gen_accuracy", levels=("text",), resamples=400)
    assert alone.low < point(many, "gen_accuracy") < alone.high


def test_a_category_of_one_text_varies_by_its_images_only(tmp_path):
    spec = [("a", "x", 1, 1), ("a", "x", 0, 0), ("c", "y", 0, 1), ("c", "y", 1, 1)]
    arm = read_eval_records([write(tmp_path / "s.jsonl", rows(spec))])
    texts_only = contrast_interval({"e": arm}, {"e": 1}, "gen_accuracy", "category_mean", ("text",), 200)
    assert texts_only.se == 0 and texts_only.low == texts_only.high == point(
        arm, "gen_accuracy", "category_mean"
    )
    with_images = contrast_interval(
        {"e": arm}, {"e": 1}, "gen_accuracy", "category_mean", ("text", "image"), 200
    )
    assert with_images.se > 0


def test_seeds_are_kept_apart_and_pooled_for_the_point(tmp_path):
    seed0 = write(tmp_path / "0.jsonl", rows(END))
    seed1 = write(tmp_path / "1.jsonl", rows(START))
    both = read_eval_records([seed0, seed1])
    assert both.seeds == 2 and seed_points(both, "gen_accuracy") == pytest.approx([5 / 6, 3 / 6])
    assert point(both, "gen_accuracy") == pytest.approx(8 / 12)


def test_the_seed_level_is_a_t_interval_over_the_seeds(tmp_path):
    """Three seeds far apart (0.2, 0.5, 0.9 of one text's 10 images, resampling seeds only): the interval is
    the classic mean ± t(2) · s / sqrt(3), the figure pooled over seeds being their mean here."""
    paths = []
    for seed, passed in enumerate((2, 5, 9)):
        spec = [("t", "x", 1, int(i < passed)) for i in range(10)]
        paths.append(write(tmp_path / f"{seed}.jsonl", rows(spec)))
    arm = read_eval_records(paths)
    found = contrast_interval({"e": arm}, {"e": 1}, "gen_accuracy", levels=("seed",))
    values = np.array([0.2, 0.5, 0.9])
    half = 4.302652729911275 * values.std(ddof=1) / np.sqrt(3)
    assert found.df == 2 and found.estimate == pytest.approx(values.mean())
    assert (found.low, found.high) == pytest.approx((values.mean() - half, values.mean() + half))
    with_images = contrast_interval({"e": arm}, {"e": 1}, "gen_accuracy")  # the spread exceeds the images'
    assert with_images.df == 2 and with_images.se == pytest.approx(found.se)


def test_arms_on_other_prompts_are_refused(tmp_path):
    a = read_eval_records([write(tmp_path / "a.jsonl", rows(START))])
    b = read_eval_records([write(tmp_path / "b.jsonl", rows([("zzz", "x", 1, 1)]))])
    with pytest.raises(ValueError, match="other prompts"):
        contrast_interval({"a": a, "b": b}, {"a": 1, "b": -1}, "gen_accuracy")


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
    assert "| dpo | 2 | 0.500 → 0.833 (" in text and "+0.333 [" in text
    # the same images at both ends: centred on zero, and wider than zero since each end redraws its images
    assert "| grpo | 2 | 0.500 → 0.500 (+0.000 [-" in text
    assert text.count("| 0.833, 0.833 |") == 1 and text.count("| 0.500, 0.500 |") == 1  # each seed's end
    assert "| grpo | dpo | -0.333 [" in text or "| grpo | dpo | **-0.333 [" in text
    pairs = interval_tables(recipes, resamples=200, comparisons=[("dpo", "grpo")])
    assert (
        "| dpo | grpo | +0.333 [" in pairs or "| dpo | grpo | **+0.333 [" in pairs
    ) and "minus dpo's" not in pairs
    with pytest.raises(ValueError, match="'sft' to compare"):
        interval_tables(recipes, baseline="sft")


def test_repeats_of_a_text_are_one_prompt(tmp_path):
    spec = [("a", "x", 1, 1), ("a~1", "x", 0, 0), ("a~2", "x", 1, 0), ("b", "x", 0, 1)]
    table = read_eval_records([write(tmp_path / "r.jsonl", rows(spec))])
    assert table.texts == ("a", "b") and len(table.rows) == 4
    assert np.bincount(table.text).tolist() == [3, 1]


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
    assert table.texts == ("t1", "t2")
    assert point(table, "balanced_accuracy") == pytest.approx(0.75)
    assert "judge set balanced accuracy" in interval_tables(recipes_of([run]), resamples=50)
    from rayunify.report import write_report

    write(run / "metrics.jsonl", [{"step": 0, "eval/gen_accuracy": 0.5}])
    report = write_report([str(run)], str(tmp_path / "report"), intervals=True)
    assert (
        report.parent / "changes.png"
    ).stat().st_size > 0 and "![changes](changes.png)" in report.read_text()
    (run / "judgeset_final_records.jsonl").unlink()  # a run without a judge set: no such column
    assert "judge set balanced accuracy" not in interval_tables(recipes_of([run]), resamples=50)


def test_an_invalid_answer_counts_as_a_wrong_verdict_in_both_modules(tmp_path):
    from rayunify.intervals import write_judge_set_records
    from rayunify.metrics import judge_set_metrics
    from rayunify.types import Judgement, Verdict

    labels = [True, True, False, False]
    says = [
        Verdict.ACCEPT,
        Verdict.INVALID,
        Verdict.REJECT,
        Verdict.INVALID,
    ]  # right, unanswered, right, unanswered
    judged = [Judgement(v, 0.5, "") for v in says]
    path = write_judge_set_records(["t1", "t2", "t1", "t2"], ["x"] * 4, labels, judged, tmp_path / "j.jsonl")
    expected = judge_set_metrics(labels, [0.5] * 4, says)["balanced_accuracy"]
    assert expected == pytest.approx(0.5)  # TPR 1/2, TNR 1/2: the unanswered images count as wrong
    assert point(read_eval_records([path]), "balanced_accuracy") == pytest.approx(expected)


def test_count_rows_match_counts_of_each_record():
    from rayunify.metrics import VerdictRecord, count_rows, counts
    from rayunify.types import Verdict

    pairs = [(o, r) for o in Verdict for r in Verdict]
    table = count_rows([int(o) for o, _ in pairs], [0.25] * len(pairs), [int(r) for _, r in pairs])
    expected = np.stack([counts([VerdictRecord("x", o, 0.25, r)]) for o, r in pairs])
    assert np.array_equal(table, expected)


def test_primary_contrasts_come_first_with_their_mde_and_the_rest_are_holm_adjusted(tmp_path):
    from rayunify.report import interval_tables, recipes_of

    for name, end in (
        ("dpo_s0", END),
        ("dpo_s1", START),
        ("dpo_s2", END),
        ("sft_s0", START),
        ("sft_s1", START),
        ("sft_s2", END),
    ):
        run = tmp_path / name
        run.mkdir()
        write(run / "eval_start_records.jsonl", rows(START))
        write(run / "eval_final_records.jsonl", rows(end))
    recipes = recipes_of(sorted(tmp_path.iterdir()))
    primary = [("dpo", "sft", "gen_accuracy, category mean")]
    text = interval_tables(recipes, resamples=100, comparisons=[("dpo", "sft")], primary=primary)
    first = text.splitlines()[0]
    assert first.startswith("Primary contrasts") and "| dpo − sft | gen_accuracy, category mean | " in text
    row = next(line for line in text.splitlines() if line.startswith("| dpo − sft |"))
    assert row.split("|")[4].strip() == "3" and float(row.split("|")[6]) > 0  # seeds, MDE
    assert "one family per column (3 (gen_accuracy)" in text  # two changes and the comparison
    with pytest.raises(ValueError, match="primary contrast"):
        interval_tables(recipes, resamples=50, primary=[("dpo", "sft", "gen_accuracy")])


@pytest.mark.parametrize("name", ["findings", "findings_v2"])
def test_the_findings_suite_declares_at_most_six_primary_contrasts_it_tabulates(name):
    import importlib.util
    from pathlib import Path

    from rayunify.report import INTERVAL_COLUMNS

    path = Path(__file__).resolve().parents[1] / "examples" / "run_shapes_experiments.py"
    spec = importlib.util.spec_from_file_location("run_shapes_experiments", path)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    primary = suite.PRIMARY[name]
    recipes = {name for name, *_ in suite.SUITES[name]}
    assert 1 <= len(primary) <= 6 and len(set(primary)) == len(primary)
    for recipe, against, label in primary:
        assert recipe in recipes and label in {c[3] for c in INTERVAL_COLUMNS}
        assert against == "start" or (recipe, against) in suite.COMPARISONS[name]
    assert suite.primary_of(name, dict.fromkeys(recipes), suite.COMPARISONS[name]) == list(
        primary
    )


def test_a_fixed_judge_set_whose_seeds_agree_gets_an_interval_of_at_least_its_step(tmp_path):
    """Two seeds whose trained judge flips the same one of 20 fixed images: the seeds' spread is exactly
    zero, but the figure moves in steps of one verdict. The interval is at least that step's rounding
    error wide, and two seeds do not make one image a finding."""
    from rayunify.intervals import JUDGE_SET_LEVELS, write_judge_set_records
    from rayunify.types import Judgement, Verdict

    texts = [f"t{i // 2}" for i in range(20)]
    labels = [i % 2 == 0 for i in range(20)]

    def judge_set(tag: str, seed: int, wrong: set[int]):
        says = [Verdict.ACCEPT if labels[i] != (i in wrong) else Verdict.REJECT for i in range(20)]
        judged = [Judgement(v, float(v == Verdict.ACCEPT), "") for v in says]
        return write_judge_set_records(texts, ["x"] * 20, labels, judged, tmp_path / f"{tag}_{seed}.jsonl")

    start = read_eval_records([judge_set("start", s, {0, 1}) for s in (0, 1)])
    end = read_eval_records([judge_set("end", s, {0, 1, 2}) for s in (0, 1)])
    found = contrast_interval({"end": end, "start": start}, {"end": 1, "start": -1}, "balanced_accuracy",
                              levels=JUDGE_SET_LEVELS)  # fmt: skip
    assert found.estimate == pytest.approx(-0.05) and found.df == 1
    assert found.se == pytest.approx(np.sqrt(2 / (12 * 20**2) / 2))  # two arms' steps of 1/20, two seeds
    assert found.low < -0.05 < found.high and not found.clears()
