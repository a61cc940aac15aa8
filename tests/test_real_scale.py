"""A one-layer slice of benchmarks/bench_real_scale.py: every role at Janus-Pro-1B's real width, vocabulary,
384 px and 576 image tokens (one of its 24 layers, random bfloat16 weights), each in its own process, its peak
resident memory against `rayunify.sizing`'s estimate for the same config (the full check fits 2, 4 and 6 layers
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


def test_fit_residual_is_the_largest_distance_from_the_line(bench):
    assert bench.fit_residual({2: 3.0, 4: 5.0}) == 0.0
    assert bench.fit_residual({1: 1.0, 2: 3.0, 3: 3.0}) == pytest.approx(2 / 3)  # line 1/3 + x


def test_rollout_total_fits_the_loop_and_averages_the_vq_decode(bench):
    terms = {d: {"weights": 0.1 * d, "decode_loop": 0.02 * d, "vq_decode": vq} for d, vq in ((2, 0.30), (4, 0.36), (6, 0.30))}
    assert bench.rollout_total(terms, 6) == pytest.approx(0.6 + 0.32)  # the VQ decode is the larger phase
    assert bench.rollout_total(terms, 24) == pytest.approx(2.4 + 0.48)  # the loop's KV cache has outgrown it


def test_rollout_estimate_counts_the_larger_of_the_decode_loop_and_the_vq_decode():
    from rayunify import sizing

    shape = sizing.ModelShape(total_params=10**9, language_model_params=10**9, trainable_params=10**9, num_layers=24,
                              hidden_size=2048, num_kv_heads=16, head_dim=128, num_image_tokens=576)  # fmt: skip
    table = 16384 * 2048 * 2 / sizing.GIB
    for rows in (4, 64):
        run = sizing.RunShape(dtype="bfloat16", learner_bf16=True, zero_stage=2, learner_ranks=1, micro_batch=1,
                              sequences_per_item=2, guided_logprobs=False, keeps_reference_copy=False, rollout_rows=rows)  # fmt: skip
        terms = sizing.rollout_memory(shape, run)
        loop = sizing.kv_cache_bytes(shape, rows, "bfloat16") / sizing.GIB + table  # the table's second copy
        pixels = sizing.vq_decode_bytes(shape, rows // 2, "bfloat16") / sizing.GIB
        assert terms["image_embeddings"] == pytest.approx(table) and terms["decode_loop"] == pytest.approx(loop)
        assert sizing.total(terms) == pytest.approx(2e9 / sizing.GIB + table + max(loop, pixels))  # bf16 weights
    assert sizing.vq_decode_bytes(shape, 2, "bfloat16") == pytest.approx(2 * 384 * 384 * 128 * 4.25 * 2)
