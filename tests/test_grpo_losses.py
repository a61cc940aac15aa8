"""GRPO's pure parts against the formulas written out here, one number at a time, and their argument checks."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from rayunify.algos import group_advantages, grpo_loss, informative_groups


# ------------------------------------------------------------------------------------- reference formulas
def advantages_by_hand(rewards: list[float], group_size: int, scale: bool = True) -> list[float]:
    """(r − mean_group) / (std_group + 1e-4), std with Bessel's correction; or r − mean_group."""
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        mean, std = statistics.fmean(group), statistics.stdev(group)
        out += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
    return out


def loss_by_hand(logp, old, ref, adv, eps_low=0.2, eps_high=None, beta=0.0, mask=None) -> list[float]:
    """Row means over kept tokens of −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) + β(e^(ref−logp) − (ref−logp) − 1)."""
    eps_high = eps_low if eps_high is None else eps_high
    losses = []
    for i, row in enumerate(logp):
        terms = []
        for t, value in enumerate(row):
            if mask is not None and not mask[i][t]:
                continue
            ratio = math.exp(value - old[i][t])
            clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
            term = -min(ratio * adv[i], clipped * adv[i])
            if beta:
                delta = ref[i][t] - value
                term += beta * (math.exp(delta) - delta - 1)
            terms.append(term)
        losses.append(sum(terms) / len(terms))
    return losses


def random_case(batch: int = 6, tokens: int = 5, seed: int = 0, spread: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(batch, tokens, generator=gen, dtype=torch.float64) * 4
    old = logp + spread * torch.randn(batch, tokens, generator=gen, dtype=torch.float64)
    ref = logp + spread * torch.randn(batch, tokens, generator=gen, dtype=torch.float64)
    adv = torch.randn(batch, generator=gen, dtype=torch.float64)
    return logp, old, ref, adv


# ------------------------------------------------------------------------------------- advantages
def test_advantages_hand_values_scaled_and_unscaled() -> None:
    rewards = [1.0, 0.0, 0.0, 0.0, 0.2, 0.4, 0.6, 0.8]
    # group 0: mean 0.25, unbiased std 0.5 → (0.75 / 0.5001, −0.25 / 0.5001 ×3)
    scaled = group_advantages(torch.tensor(rewards, dtype=torch.float64), 4)
    assert scaled[:4].tolist() == pytest.approx([0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001])
    assert scaled.tolist() == pytest.approx(advantages_by_hand(rewards, 4))
    raw = group_advantages(torch.tensor(rewards, dtype=torch.float64), 4, scale_rewards=False)
    assert raw.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, -0.3, -0.1, 0.1, 0.3])


def test_advantages_use_the_unbiased_std() -> None:
    rewards = torch.tensor([0.0, 1.0])  # unbiased std √0.5, biased 0.5
    got = group_advantages(rewards, 2)
    assert got.tolist() == pytest.approx([-0.5 / (math.sqrt(0.5) + 1e-4), 0.5 / (math.sqrt(0.5) + 1e-4)])
    assert got[1].item() != pytest.approx(0.5 / (0.5 + 1e-4))


@pytest.mark.parametrize("group_size", [2, 3, 5])
@pytest.mark.parametrize("scale", [True, False])
def test_advantages_match_the_formula_on_random_rewards(group_size: int, scale: bool) -> None:
    rewards = torch.rand(4 * group_size, generator=torch.Generator().manual_seed(group_size), dtype=torch.float64)
    got = group_advantages(rewards, group_size, scale_rewards=scale)
    assert got.shape == rewards.shape
    assert got.tolist() == pytest.approx(advantages_by_hand(rewards.tolist(), group_size, scale), rel=1e-9)
    # Each group's advantages sum to zero: only differences inside a group matter.
    assert got.reshape(-1, group_size).sum(dim=1).tolist() == pytest.approx([0.0] * 4, abs=1e-9)


def test_verdict_rewards_as_integers_and_all_equal_groups() -> None:
    verdicts = torch.tensor([1, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
    assert informative_groups(verdicts, 3).tolist() == [True, False, True, False]
    got = group_advantages(verdicts, 3)
    assert got.dtype.is_floating_point
    assert got[3:6].tolist() == [0.0, 0.0, 0.0] and got[9:].tolist() == [0.0, 0.0, 0.0]
    assert got.tolist() == pytest.approx(advantages_by_hand([float(v) for v in verdicts], 3))


def test_soft_scores_differing_slightly_are_informative() -> None:
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5000001, 0.3, 0.3])
    assert informative_groups(scores, 3).tolist() == [False, True]


@pytest.mark.parametrize(
    "rewards,group_size,message",
    [
        (torch.zeros(7), 4, "7 values, not a positive multiple of group_size=4"),
        (torch.zeros(0), 2, "0 values"),
        (torch.zeros(4), 1, "group_size must be an int >= 2"),
        (torch.zeros(4), 2.0, "group_size must be an int >= 2"),
        (torch.zeros(2, 2), 2, "rewards must be a (B,) tensor, got (2, 2)"),
        (torch.tensor([0.0, float("nan")]), 2, "rewards must be finite, got [nan]"),
    ],
)
def test_advantage_argument_errors_name_the_values(rewards, group_size, message) -> None:
    for fn in (group_advantages, informative_groups):
        with pytest.raises(ValueError) as err:
            fn(rewards, group_size)
        assert message in str(err.value)


# ------------------------------------------------------------------------------------- the loss
def test_on_policy_ratio_is_one_loss_is_minus_advantage_and_nothing_clips() -> None:
    logp, _, _, adv = random_case()
    losses, metrics = grpo_loss(logp, logp.clone(), None, adv)
    assert losses.tolist() == pytest.approx((-adv).tolist())
    assert metrics["clip_fraction"] == 0.0
    assert metrics["ratio_mean"] == metrics["ratio_min"] == metrics["ratio_max"] == 1.0
    assert metrics["kl"] == 0.0
    assert metrics["advantage_mean"] == pytest.approx(adv.mean().item())


def test_hand_computed_clipping_on_both_sides() -> None:
    # ratios e^0.5 ≈ 1.65 and e^-0.5 ≈ 0.61 against the band [0.8, 1.2]
    logp = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    old = torch.tensor([[-0.5, 0.5], [-0.5, 0.5]], dtype=torch.float64)
    adv = torch.tensor([2.0, -1.0], dtype=torch.float64)
    losses, metrics = grpo_loss(logp, old, None, adv)
    up, down = math.exp(0.5), math.exp(-0.5)
    # A = 2: min(1.65·2, 1.2·2) = 2.4 (clipped); min(0.61·2, 0.8·2) = 1.21 (not clipped)
    # A = −1: min(−1.65, −1.2) = −1.65 (not clipped); min(−0.61, −0.8) = −0.8 (clipped)
    assert losses.tolist() == pytest.approx([-(2.4 + 2 * down) / 2, (up + 0.8) / 2])
    assert metrics["clip_fraction"] == 0.5
    assert metrics["clip_fraction_high"] == 0.25 and metrics["clip_fraction_low"] == 0.25
    assert metrics["ratio_max"] == pytest.approx(up) and metrics["ratio_min"] == pytest.approx(down)


def test_asymmetric_clip_widens_the_upper_side_only() -> None:
    logp = torch.zeros(2, 1, dtype=torch.float64)
    old = torch.tensor([[-0.22], [0.5]], dtype=torch.float64)  # ratios e^0.22 ≈ 1.246 and e^-0.5 ≈ 0.61
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    symmetric, sym_metrics = grpo_loss(logp, old, None, adv, clip_eps=0.2)
    higher, high_metrics = grpo_loss(logp, old, None, adv, clip_eps=0.2, clip_eps_high=0.28)
    assert symmetric.tolist() == pytest.approx([-1.2, 0.8])
    assert higher.tolist() == pytest.approx([-math.exp(0.22), 0.8])  # inside [0.8, 1.28]; the low side holds
    assert sym_metrics["clip_fraction"] == 1.0
    assert high_metrics["clip_fraction_high"] == 0.0 and high_metrics["clip_fraction_low"] == 0.5


@pytest.mark.parametrize("eps_high", [None, 0.28])
@pytest.mark.parametrize("beta", [0.0, 0.04, 1.0])
def test_loss_matches_the_formula_on_random_tensors(eps_high: float | None, beta: float) -> None:
    logp, old, ref, adv = random_case(seed=int(beta * 100) + (eps_high is None))
    losses, metrics = grpo_loss(logp, old, ref, adv, clip_eps=0.2, clip_eps_high=eps_high, beta=beta)
    expected = loss_by_hand(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), 0.2, eps_high, beta)
    assert losses.tolist() == pytest.approx(expected, rel=1e-9)
    assert 0.0 < metrics["clip_fraction"] < 1.0  # spread 0.3 puts some ratios outside the band, not all
    delta = ref - logp
    assert metrics["kl"] == pytest.approx((delta.exp() - delta - 1).mean().item())


def test_beta_zero_needs_no_reference_and_ignores_one_given() -> None:
    logp, old, ref, adv = random_case()
    without, metrics = grpo_loss(logp, old, None, adv, beta=0.0)
    with_ref, metrics_ref = grpo_loss(logp, old, ref, adv, beta=0.0)
    assert torch.equal(without, with_ref)
    assert metrics["kl"] == 0.0 and metrics_ref["kl"] > 0.0  # measured when a reference is given
    with pytest.raises(ValueError, match="beta=0.1 weighs a KL to the reference, but ref_logp is None"):
        grpo_loss(logp, old, None, adv, beta=0.1)


def test_k3_is_nonnegative_and_zero_at_the_reference() -> None:
    logp, old, ref, _ = random_case(spread=2.0)
    zero_adv = torch.zeros(logp.shape[0], dtype=logp.dtype)
    losses, metrics = grpo_loss(logp, old, ref, zero_adv, beta=1.0)  # with A = 0 the loss is the k3 mean
    assert bool((losses > 0).all()) and metrics["kl"] > 0
    assert losses.tolist() == pytest.approx(loss_by_hand(logp.tolist(), old.tolist(), ref.tolist(), [0.0] * 6, beta=1.0))
    at_ref, metrics = grpo_loss(logp, old, logp.clone(), zero_adv, beta=1.0)
    assert at_ref.tolist() == [0.0] * 6 and metrics["kl"] == 0.0


def test_gradients_flow_to_logp_only() -> None:
    logp, old, ref, adv = (t.clone().requires_grad_(True) for t in random_case())
    losses, _ = grpo_loss(logp, old, ref, adv, beta=0.1)
    losses.mean().backward()
    assert logp.grad is not None and bool(logp.grad.abs().sum() > 0)
    assert old.grad is None and ref.grad is None and adv.grad is None


def test_on_policy_gradient_is_the_advantage_weighted_score() -> None:
    """At ρ = 1 and β = 0, ∂loss_i/∂logp_{i,t} = −A_i / T: the REINFORCE gradient with a group baseline."""
    logp, _, _, adv = random_case(tokens=4)
    logp.requires_grad_(True)
    losses, _ = grpo_loss(logp, logp.detach().clone(), None, adv)
    losses.sum().backward()
    assert logp.grad is not None
    assert torch.allclose(logp.grad, (-adv / 4).unsqueeze(1).expand(-1, 4))


def test_mask_averages_over_kept_tokens_only() -> None:
    logp, old, ref, adv = random_case(batch=3, tokens=4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    padded = logp.clone()
    padded[~mask] = float("-inf")  # what padding may hold: never reaches the loss
    losses, metrics = grpo_loss(padded, old, ref, adv, beta=0.5, mask=mask)
    expected = loss_by_hand(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), beta=0.5, mask=mask.tolist())
    assert losses.tolist() == pytest.approx(expected, rel=1e-9)
    delta = (ref - logp)[mask]
    assert metrics["kl"] == pytest.approx((delta.exp() - delta - 1).mean().item())
    assert math.isfinite(metrics["ratio_max"])
    # An all-ones float mask is the same as none.
    unmasked, _ = grpo_loss(logp, old, ref, adv, beta=0.5)
    ones, _ = grpo_loss(logp, old, ref, adv, beta=0.5, mask=torch.ones_like(logp))
    assert torch.equal(unmasked, ones)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"clip_eps": 0.0}, "clip_eps must be in (0, 1), got 0.0"),
        ({"clip_eps": 1.0}, "clip_eps must be in (0, 1), got 1.0"),
        ({"clip_eps_high": 0.1}, "clip_eps_high must be a finite number >= clip_eps=0.2, got 0.1"),
        ({"beta": -0.1}, "beta must be a finite number >= 0, got -0.1"),
        ({"old_logp": torch.zeros(2, 4)}, "old_logp has shape (2, 4), logp has (2, 3)"),
        ({"ref_logp": torch.zeros(2)}, "ref_logp has shape (2,), logp has (2, 3)"),
        ({"advantages": torch.zeros(2, 1)}, "advantages must have shape (2,), one per sequence, got (2, 1)"),
        ({"logp": torch.zeros(2), "old_logp": torch.zeros(2)}, "logp must be per-token log-probs of shape (B, T)"),
        ({"old_logp": torch.zeros(2, 3, dtype=torch.long)}, "old_logp must be a floating-point tensor"),
        ({"mask": torch.ones(3, 3)}, "mask must be a tensor of logp's shape (2, 3), got (3, 3)"),
        ({"mask": torch.tensor([[1, 1, 0], [0, 0, 0]])}, "mask leaves no token in rows [1]"),
    ],
)
def test_loss_argument_errors_name_the_values(change, message) -> None:
    args = {
        "logp": torch.zeros(2, 3),
        "old_logp": torch.zeros(2, 3),
        "ref_logp": torch.zeros(2, 3),
        "advantages": torch.zeros(2),
    } | change
    with pytest.raises(ValueError) as err:
        grpo_loss(**args)
    assert message in str(err.value)


def test_advantages_feed_the_loss_end_to_end() -> None:
    """Two prompts × three images: the all-equal group contributes nothing (no KL term at beta 0)."""
    rewards = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.7, 0.7])
    keep = informative_groups(rewards, 3)
    adv = group_advantages(rewards, 3)
    logp = -torch.rand(6, 4, generator=torch.Generator().manual_seed(3))
    losses, _ = grpo_loss(logp, logp.clone(), None, adv)
    assert keep.tolist() == [True, False]
    assert losses[3:].tolist() == [0.0, 0.0, 0.0]
    assert losses[:3].sum().item() == pytest.approx(0.0, abs=1e-6)  # on-policy, centred advantages
