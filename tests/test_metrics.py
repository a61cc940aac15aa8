"""The unification metrics against hand-counted values: pooled, per category and the category mean."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rayunify.metrics import VerdictRecord, by_category, flatten, unification_metrics
from rayunify.types import Verdict

A, R, INV = Verdict.ACCEPT, Verdict.REJECT, Verdict.INVALID


def records(category: str, pairs: list[tuple[Verdict, Verdict]]) -> list[VerdictRecord]:
    return [VerdictRecord(category, own, 1.0 if own == A else 0.0, ref) for own, ref in pairs]


def test_counts_of_one_group():
    # own/ref: 2 x (A, A), (A, R), (R, R), (R, A), (INV, R)
    m = unification_metrics(records("c", [(A, A), (A, A), (A, R), (R, R), (R, A), (INV, R)]))
    assert m["gen_accuracy"] == pytest.approx(3 / 6)  # the reference judges every image, invalid ones too
    assert m["nonunified"] == pytest.approx(2 / 5)  # invalid answers left out
    assert m["judge_accuracy"] == pytest.approx(3 / 5)
    assert m["judge_fpr"] == pytest.approx(1 / 2) and m["judge_fnr"] == pytest.approx(1 / 3)
    assert m["weak_generation"] == pytest.approx(1 / 2)
    # Beside it, what rejecting everything would get: the reference rejects 2 of the 5 both-valid images.
    assert m["weak_generation_base_rate"] == pytest.approx(2 / 5)
    assert m["invalid_rate"] == pytest.approx(1 / 6) and m["count"] == 6


def test_category_mean_weighs_categories_equally_and_skips_nan():
    easy = records("easy", [(A, A)] * 2)  # gen 1.0, judge_fpr NaN (no reference reject)
    hard = records("hard", [(R, R)] * 7 + [(A, A)])  # gen 1/8, judge_fpr 0
    report = by_category(easy + hard)
    assert list(report) == ["overall", "category_mean", "easy", "hard"]
    assert report["overall"]["gen_accuracy"] == pytest.approx(3 / 10)
    assert report["category_mean"]["gen_accuracy"] == pytest.approx((1 + 1 / 8) / 2)
    assert report["category_mean"]["judge_fpr"] == 0.0
    assert report["category_mean"]["count"] == 10
    assert flatten(report, "eval/")["eval/category_mean/gen_accuracy"] == pytest.approx(0.5625)


def test_no_records_gives_nan_not_an_error():
    report = by_category([])
    assert math.isnan(report["overall"]["gen_accuracy"]) and report["overall"]["count"] == 0
    assert math.isnan(report["category_mean"]["gen_accuracy"])


def test_invalid_reference_answers_are_left_out_and_counted_apart():
    # An external referee answered off-format on two images: they count neither as rejections nor against the judge.
    m = unification_metrics(records("c", [(A, A), (R, R), (A, INV), (R, INV)]))
    assert m["gen_accuracy"] == pytest.approx(1 / 2) and m["reference_invalid_rate"] == pytest.approx(2 / 4)
    assert m["judge_accuracy"] == 1.0 and m["judge_fpr"] == 0.0 and m["judge_fnr"] == 0.0
    assert m["weak_generation"] == 1.0 and m["nonunified"] == pytest.approx(2 / 4)


def test_bootstrap_resamples_prompts_not_images():
    from rayunify.metrics import bootstrap_intervals

    # 20 prompts x 8 images; a prompt's images are all right or all wrong (perfectly correlated).
    recs, ids = [], []
    for p in range(20):
        verdict = A if p % 2 else R
        recs += records("c", [(verdict, verdict)] * 8)
        ids += [f"p{p}"] * 8
    ci = bootstrap_intervals(recs, ids, resamples=2000, seed=0)
    lo, hi = ci["overall"]["gen_accuracy"]
    assert lo < 0.5 < hi
    # Prompts, not images, are the unit: the interval is that of 20 draws (about ±0.22), not of 160 (±0.08).
    assert hi - lo > 0.3
    assert ci["c"]["gen_accuracy"] == [lo, hi] and ci["overall"]["judge_accuracy"] == [1.0, 1.0]
    assert bootstrap_intervals(recs, ids, resamples=200, seed=1) == bootstrap_intervals(recs, ids, resamples=200, seed=1)


def test_bootstrap_category_mean_keeps_every_category():
    from rayunify.metrics import bootstrap_intervals

    recs = records("easy", [(A, A)] * 4) + records("hard", [(R, R)] * 4)
    ids = ["e1", "e1", "e2", "e2", "h1", "h1", "h2", "h2"]
    ci = bootstrap_intervals(recs, ids, resamples=100)
    assert ci["category_mean"]["gen_accuracy"] == [0.5, 0.5]  # stratified: never a resample without a category
    assert math.isnan(ci["easy"]["judge_fpr"][0])  # no reference reject there: undefined, not an error


def test_auroc_against_hand_counted_pairs():
    from rayunify.metrics import auroc

    # Positives 0.9, 0.4; negatives 0.5, 0.1: of the 4 (pos, neg) pairs the positive wins 3.
    assert auroc([True, True, False, False], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(3 / 4)
    # A tie counts half: pairs (0.5, 0.5) half, (0.5, 0.2) won, (0.7, 0.5) won, (0.7, 0.2) won -> 3.5 / 4.
    assert auroc([True, True, False, False], [0.5, 0.7, 0.5, 0.2]) == pytest.approx(3.5 / 4)
    assert auroc([True, False], [0.1, 0.9]) == 0.0
    assert auroc([True, False, False], [0.3, 0.3, 0.3]) == pytest.approx(0.5)  # a constant score
    assert math.isnan(auroc([True, True], [0.2, 0.8]))  # one class: undefined
    with pytest.raises(ValueError, match="2 labels but 1 scores"):
        auroc([True, False], [0.5])


def test_balanced_accuracy_weighs_the_classes_equally_and_counts_invalid_as_wrong():
    from rayunify.metrics import balanced_accuracy, judge_set_metrics, judge_set_report

    # 4 positives (3 accepted), 1 negative (rejected): plain accuracy 4/5, balanced (3/4 + 1) / 2.
    labels = [True, True, True, True, False]
    assert balanced_accuracy(labels, [True, True, True, False, False]) == pytest.approx(7 / 8)
    # A judge that rejects everything gets 0.5 however skewed the set.
    assert balanced_accuracy(labels, [False] * 5) == pytest.approx(0.5)
    assert balanced_accuracy([True, False], [None, None]) == 0.0
    m = judge_set_metrics([True, False, True, False], [0.8, 0.3, 0.6, 0.7], [A, R, INV, A])
    assert m["true_positive_rate"] == pytest.approx(1 / 2) and m["true_negative_rate"] == pytest.approx(1 / 2)
    assert m["balanced_accuracy"] == pytest.approx(1 / 2) and m["invalid_rate"] == pytest.approx(1 / 4)
    assert m["auroc"] == pytest.approx(3 / 4) and m["count"] == 4
    report = judge_set_report(["a", "a", "b", "b"], [True, False, True, False], [0.8, 0.3, 0.6, 0.7], [A, R, INV, A])
    assert report["a"]["balanced_accuracy"] == 1.0 and report["b"]["auroc"] == 0.0
    assert flatten(report, "judgeset/")["judgeset/auroc"] == pytest.approx(3 / 4)


def test_probe_changes_are_each_images_change_since_the_start():
    from rayunify.metrics import PROBE_GEN_LOGP, PROBE_P_YES, probe_changes

    start = {PROBE_P_YES: [0.9, 0.8, 0.7, 0.6], PROBE_GEN_LOGP: [-2.0, -2.0, -2.0, -2.0]}
    now = {PROBE_P_YES: [0.5, 0.6, 0.7, 0.9], PROBE_GEN_LOGP: [-2.4, -2.2, -2.0, -1.7]}
    changes = probe_changes(start, now)
    assert changes["probe/delta_u_mean"] == pytest.approx(-0.075)
    assert changes["probe/delta_g_mean"] == pytest.approx(-0.075)
    assert changes["probe/both_fall"] == 0.5  # the first two images: P(yes) and log-likelihood both fall
    assert changes["probe/delta_corr"] == pytest.approx(np.corrcoef([-0.4, -0.2, 0.0, 0.3], [-0.4, -0.2, 0.0, 0.3])[0, 1])
    assert math.isnan(probe_changes({k: v[:2] for k, v in start.items()}, {k: v[:2] for k, v in now.items()})["probe/delta_corr"])
    with pytest.raises(ValueError, match="do not line up"):
        probe_changes(start, {PROBE_P_YES: [0.5], PROBE_GEN_LOGP: [-2.0]})


def test_the_monitor_logs_probe_changes_against_the_start_it_wrote(tmp_path):
    """The per-image figures of each evaluation go to probe_<tag>_records.jsonl, and later evaluations are
    compared with the start's as read back from there (so a resumed run compares with the same start)."""
    from rayunify.config import load_config
    from rayunify.driver.monitor import Monitor, ProbeSet
    from rayunify.metrics import PROBE_GEN_LOGP, PROBE_P_YES

    figures = iter([([0.9, 0.6, 0.8], [-1.0, -2.0, -3.0]), ([0.5, 0.6, 0.9], [-1.5, -2.0, -2.0])])

    def rollout(method, *args):  # the rollout worker's `probe`, as figures of two evaluations
        assert method == "probe"
        p_yes, logp = next(figures)
        return {"probe/p_yes": float(np.mean(p_yes)), PROBE_P_YES: p_yes, PROBE_GEN_LOGP: logp}

    monitor = Monitor(load_config(None, []), tmp_path, None, None, [], [], rollout, lambda: None)
    monitor.probe = ProbeSet(["a", "b", "c"], np.zeros((3, 2, 2, 3), np.uint8), np.zeros((3, 4), np.int64))
    start = monitor._probe("start")
    assert set(start) == {"probe/p_yes"} and (tmp_path / "probe_start_records.jsonl").is_file()
    later = monitor._probe("step10")
    assert later["probe/delta_u_mean"] == pytest.approx(-0.1) and later["probe/both_fall"] == pytest.approx(1 / 3)
    rows = [json.loads(line) for line in (tmp_path / "probe_step10_records.jsonl").open()]
    assert [r["prompt"] for r in rows] == ["a", "b", "c"] and rows[2][PROBE_GEN_LOGP] == -2.0
