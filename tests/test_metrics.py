"""The unification metrics against hand-counted values: pooled, per category and the category mean."""

from __future__ import annotations

import math

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
