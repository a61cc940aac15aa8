"""Loss values against hand-computed numbers, argument checks, metrics and gradients."""

import math

import pytest
import torch

from rayunify.algos import check_finite, dpo_loss, dpo_metrics, dpo_objective, nll_loss, sft_objective


def softplus(x: float) -> float:
    # -log σ(x) = log(1 + e^(-x)): the hand formula every logistic loss below reduces to.
    return math.log1p(math.exp(-x))


def one_pair(
    chosen_ratio: float = 1.0, rejected_ratio: float = -1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """policy/ref log-probs with log π/π_ref = chosen_ratio on the chosen and rejected_ratio on the
    rejected image, so h = chosen_ratio - rejected_ratio."""
    ref_c, ref_r = torch.tensor([-11.0]), torch.tensor([-11.0])
    return ref_c + chosen_ratio, ref_r + rejected_ratio, ref_c, ref_r


def test_sigmoid_matches_hand_value() -> None:
    losses, _, _ = dpo_loss(*one_pair(), beta=0.1)  # h = 2, βh = 0.2
    assert losses.item() == pytest.approx(softplus(0.2))
    losses, _, _ = dpo_loss(*one_pair(), beta=1.0)  # βh = 2
    assert losses.item() == pytest.approx(softplus(2.0))


def test_sigmoid_is_log2_when_policy_equals_reference() -> None:
    losses, chosen, rejected = dpo_loss(*one_pair(0.0, 0.0), beta=0.1)
    assert losses.item() == pytest.approx(math.log(2))
    assert chosen.item() == 0.0 and rejected.item() == 0.0


def test_conservative_dpo_label_smoothing() -> None:
    losses, _, _ = dpo_loss(*one_pair(), beta=0.1, label_smoothing=0.1)
    expected = 0.9 * softplus(0.2) + 0.1 * softplus(-0.2)
    assert losses.item() == pytest.approx(expected)


def test_robust_dpo_hand_value_and_zero_smoothing() -> None:
    losses, _, _ = dpo_loss(*one_pair(), beta=0.1, loss_type="robust", label_smoothing=0.1)
    expected = (0.9 * softplus(0.2) - 0.1 * softplus(-0.2)) / 0.8
    assert losses.item() == pytest.approx(expected)

    sigmoid, _, _ = dpo_loss(*one_pair(), beta=0.1, loss_type="sigmoid", label_smoothing=0.0)
    robust, _, _ = dpo_loss(*one_pair(), beta=0.1, loss_type="robust", label_smoothing=0.0)
    assert robust.item() == pytest.approx(sigmoid.item())
    assert sigmoid.item() == pytest.approx(softplus(0.2))


def test_ipo_hand_value() -> None:
    losses, _, _ = dpo_loss(*one_pair(), beta=0.1, loss_type="ipo")
    assert losses.item() == pytest.approx((2.0 - 1 / 0.2) ** 2)  # (h − 1/(2β))² = 9
    at_target, _, _ = dpo_loss(*one_pair(2.5, -2.5), beta=0.1, loss_type="ipo")
    assert at_target.item() == pytest.approx(0.0)


def test_hinge_hand_value_and_zero_past_margin() -> None:
    losses, _, _ = dpo_loss(*one_pair(), beta=0.1, loss_type="hinge")
    assert losses.item() == pytest.approx(0.8)  # relu(1 − 0.2)
    past_margin, _, _ = dpo_loss(*one_pair(10.0, -10.0), beta=0.1, loss_type="hinge")
    assert past_margin.item() == 0.0


def test_sigmoid_stays_finite_for_huge_margins() -> None:
    # Summed over 576 image tokens, log-ratio gaps of thousands are realistic.
    for gap in (5_000.0, -5_000.0):
        losses, _, _ = dpo_loss(*one_pair(gap, 0.0), beta=0.5)
        assert torch.isfinite(losses).all()


def test_rewards_are_beta_scaled_and_detached() -> None:
    policy_c, policy_r, ref_c, ref_r = one_pair(1.0, -1.0)
    policy_c.requires_grad_(True)
    _, chosen, rejected = dpo_loss(policy_c, policy_r, ref_c, ref_r, beta=0.1)
    assert chosen.item() == pytest.approx(0.1)
    assert rejected.item() == pytest.approx(-0.1)
    assert not chosen.requires_grad


def test_metrics_values() -> None:
    # Pair 0: h = 2 (chosen wins); pair 1: chosen log-ratio -1, rejected +1 (rejected wins).
    policy_c = torch.tensor([-10.0, -12.0])
    policy_r = torch.tensor([-12.0, -10.0])
    ref = torch.tensor([-11.0, -11.0])
    losses, chosen, rejected = dpo_loss(policy_c, policy_r, ref, ref, beta=0.5)
    metrics = dpo_metrics(losses, chosen, rejected, beta=0.5)
    assert metrics["reward_accuracy"] == pytest.approx(0.5)
    assert metrics["reward_margin"] == pytest.approx(0.0)
    assert metrics["chosen_reward"] == pytest.approx(0.0)
    assert metrics["kl_chosen"] == pytest.approx(0.0)
    assert metrics["implicit_kl"] == pytest.approx(0.0)
    assert metrics["dpo_loss"] == pytest.approx((softplus(1.0) + softplus(-1.0)) / 2)
    assert all(isinstance(value, float) for value in metrics.values())


def test_implicit_kl_is_mean_log_ratio() -> None:
    losses, chosen, rejected = dpo_loss(*one_pair(3.0, 1.0), beta=0.1)
    metrics = dpo_metrics(losses, chosen, rejected, beta=0.1)
    assert metrics["kl_chosen"] == pytest.approx(3.0)
    assert metrics["kl_rejected"] == pytest.approx(1.0)
    assert metrics["implicit_kl"] == pytest.approx(2.0)


def test_nll_is_mean_per_token() -> None:
    assert nll_loss(torch.tensor([-576.0 * 2, -576.0 * 4]), 576).item() == pytest.approx(3.0)
    # Token-weighted: 40 nats over 20 tokens.
    assert nll_loss(torch.tensor([-10.0, -30.0]), torch.tensor([10, 10])).item() == pytest.approx(2.0)
    loss, metrics = sft_objective(torch.tensor([-20.0]), 10)
    assert loss.item() == pytest.approx(2.0)
    assert metrics["nll"] == pytest.approx(2.0)
    assert metrics["perplexity"] == pytest.approx(math.exp(2.0))


def test_dpo_objective_adds_weighted_nll_on_chosen() -> None:
    policy_c, policy_r, ref_c, ref_r = one_pair()  # policy_c = -10
    loss, metrics = dpo_objective(
        policy_c,
        policy_r,
        ref_c,
        ref_r,
        5,
        beta=0.1,
        loss_type="sigmoid",
        label_smoothing=0.0,
        nll_weight=0.5,
    )
    assert loss.item() == pytest.approx(softplus(0.2) + 0.5 * 2.0)  # NLL = 10 nats / 5 tokens
    assert metrics["nll_chosen"] == pytest.approx(2.0)
    assert metrics["loss"] == pytest.approx(loss.item())


def test_gradients_flow_to_policy_only() -> None:
    policy_c, policy_r, ref_c, ref_r = one_pair()
    policy_c.requires_grad_(True)
    policy_r.requires_grad_(True)
    for loss_type in ("sigmoid", "robust", "ipo", "hinge"):
        policy_c.grad = policy_r.grad = None
        loss, _ = dpo_objective(
            policy_c,
            policy_r,
            ref_c,
            ref_r,
            576,
            beta=0.1,
            loss_type=loss_type,
            label_smoothing=0.0,
            nll_weight=0.0,
        )
        loss.backward()
        assert policy_c.grad is not None and policy_r.grad is not None
        # Minimising raises the chosen image's likelihood and lowers the rejected one's.
        assert policy_c.grad.item() < 0 < policy_r.grad.item(), loss_type
        assert ref_c.grad is None


def test_check_finite_raises_with_name_and_step() -> None:
    check_finite(torch.tensor(1.5), "dpo", step=3)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(FloatingPointError, match=r"'dpo'.*step 7"):
            check_finite(torch.tensor(bad), "dpo", step=7)
    with pytest.raises(FloatingPointError, match="sft"):
        check_finite(torch.tensor([0.0, float("nan")]), "sft")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "kto"}, "sigmoid, robust, ipo, hinge"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"loss_type": "robust", "label_smoothing": 0.5}, "label_smoothing"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "no meaning"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dpo_loss(*one_pair(), **kwargs)


def test_bad_shapes_are_clear_errors() -> None:
    good = torch.zeros(2)
    with pytest.raises(ValueError, match="shapes differ"):
        dpo_loss(good, good, good, torch.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        dpo_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="floating-point"):
        dpo_loss(torch.zeros(2, dtype=torch.long), good, good, good)
    with pytest.raises(ValueError, match="num_tokens"):
        nll_loss(good, torch.tensor([576, 0]))
    with pytest.raises(ValueError, match="nll_weight"):
        dpo_objective(
            good, good, good, good, 576, beta=0.1, loss_type="sigmoid", label_smoothing=0.0, nll_weight=-1
        )


def test_nll_sum_reduction_is_per_image_sum_averaged_over_the_batch() -> None:
    logps = torch.tensor([-20.0, -40.0])  # two images of 10 tokens: 2 and 4 nats per token
    assert nll_loss(logps, 10, "sum").item() == pytest.approx(30.0)  # (20 + 40) / 2 images
    assert nll_loss(logps, 10, "mean").item() == pytest.approx(3.0)  # 60 nats / 20 tokens
    loss, metrics = sft_objective(logps, 10, "sum")
    assert loss.item() == pytest.approx(30.0)
    assert metrics["perplexity"] == pytest.approx(math.exp(3.0))  # perplexity stays per token
    with pytest.raises(ValueError, match="nll_reduction"):
        nll_loss(logps, 10, "total")


def test_dpo_objective_sum_reduction_weighs_the_chosen_image_sum() -> None:
    policy_c, policy_r, ref_c, ref_r = one_pair()  # policy_c = -10
    settings = {"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0, "nll_weight": 0.5}
    loss, metrics = dpo_objective(policy_c, policy_r, ref_c, ref_r, 5, nll_reduction="sum", **settings)
    assert loss.item() == pytest.approx(softplus(0.2) + 0.5 * 10.0)  # NLL = 10 nats for the one image
    assert metrics["nll_chosen"] == pytest.approx(10.0)


def test_config_nll_reduction_defaults_to_mean_and_reaches_the_learner_loss() -> None:
    from rayunify.actors.learner_setup import learner_loss
    from rayunify.config import Config

    assert Config().algorithm.nll_reduction == "mean"
    dpo = Config.model_validate({"algorithm": {"type": "dpo", "nll_reduction": "sum"}})
    assert learner_loss(dpo).keywords["nll_reduction"] == "sum"
    sft = Config.model_validate({"algorithm": {"type": "sft", "nll_reduction": "sum"}})
    assert learner_loss(sft).keywords["nll_reduction"] == "sum"
    with pytest.raises(ValueError, match="nll_reduction"):
        Config.model_validate({"algorithm": {"type": "sft", "nll_reduction": "tokens"}})
