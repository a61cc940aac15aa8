"""A one-layer slice of benchmarks/bench_real_scale.py: every role at Janus-Pro-1B's real width, vocabulary,
384 px and 576 image tokens (one of its 24 layers, random bfloat16 weights), each in its own process, its peak
resident memory against `rayunify.sizing`'s estimate for the same config (the full check fits 2 and 4 layers
and extrapolates to 24; docs/real-scale.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_real_scale
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_real_scale


@pytest.mark.slow
@pytest.mark.parametrize("role", ["rollout", "judge", "learner_lora", "learner_zero2", "learner_zero3", "reference"])
def test_one_layer_of_every_role_measures_within_a_quarter_of_its_estimate(bench, role):
    run = bench.run_role(role, 1, threads=2, results=None)
    row = bench.summarise(role, [run], 1)
    assert 0.8 <= row["ratio"] <= 1.25, row


def test_fit_is_exact_through_two_depths_and_extrapolates_linearly(bench):
    assert bench.fit({2: 3.0, 4: 5.0}, 24) == pytest.approx(25.0)
    assert bench.fit({1: 2.0}, 24) == 2.0
