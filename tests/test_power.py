"""rayunify.power: t quantiles, Holm, and the minimum detectable effect, against values computed by hand or
tabulated."""

from __future__ import annotations

import math

import pytest

from rayunify.power import (
    VarianceComponents,
    holm,
    holm_levels,
    minimum_detectable_effect,
    power_of,
    satterthwaite_df,
    t_cdf,
    t_quantile,
)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [(0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 10, 2.228139),
     (0.8, 2, 1.060660), (0.975, math.inf, 1.959964), (0.025, 3, -3.182446)],
)  # fmt: skip
def test_t_quantiles_match_the_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-5)
    assert t_cdf(expected, df) == pytest.approx(p, abs=1e-7)


def test_satterthwaite_counts_the_noisy_parts_only():
    assert satterthwaite_df([(1.0, 2.0), (0.0, 30.0)]) == pytest.approx(2.0)
    assert satterthwaite_df([(1.0, 2.0), (1.0, math.inf)]) == pytest.approx(8.0)  # (1 + 1)² / (1² / 2)
    assert math.isinf(satterthwaite_df([(1.0, math.inf)]))


def test_holm_adjusts_step_down_and_its_levels_agree_with_its_decisions():
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    levels = holm_levels(p, 0.05)
    # sorted: 0.005 at 0.05/4 (rejected), 0.01 at 0.05/3 (rejected), 0.03 at 0.05/2 (not): from there, 0.05/2
    assert levels == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 2, 1 - 0.05 / 2, 1 - 0.05 / 4])
    for value, level, adjusted in zip(p, levels, holm(p), strict=True):
        assert (value < 1 - level) == (adjusted < 0.05)  # the interval clears exactly when Holm rejects


def test_power_at_the_mde_is_the_power_asked_for_and_few_seeds_cost():
    components = VarianceComponents(seed_spread=0.004, images=0.001, texts=0.0002, text_df=10)
    mdes = [minimum_detectable_effect(components, seeds) for seeds in (2, 3, 5, 10)]
    assert mdes == sorted(mdes, reverse=True)
    for seeds, mde in zip((2, 3, 5, 10), mdes, strict=True):
        shift = mde / components.standard_error(seeds)
        assert power_of(shift, components.df(seeds)) == pytest.approx(0.8, abs=1e-3)
    # the normal approximation's (1.96 + 0.84) · SE is too small at two degrees of freedom
    assert mdes[0] > (1.959964 + 0.841621) * components.standard_error(2) * 1.5
    assert math.isinf(minimum_detectable_effect(components, 1))  # one seed cannot see the training spread
    images_only = VarianceComponents(seed_spread=0.0005, images=0.001)  # the seeds spread no more than images
    assert minimum_detectable_effect(images_only, 1) == pytest.approx(2.8016 * math.sqrt(0.001), rel=1e-3)
