"""Training losses on per-sequence image-token log-probs, as pure functions.

Every input is a (B,) tensor holding, for each image, the SUM of its image-token log-probs under the policy
or the frozen reference (the learner computes them with a teacher-forced pass through the generation head,
in the geometry recorded in the sample's SamplingSettings). Nothing here knows about models, Ray or DeepSpeed.

The paper (arXiv 2507.16663) trains either
  SFT: the NLL of every accepted image's tokens, or
  DPO: -log σ(β h) + λ · NLL(chosen), the NLL term "for stability",
where h = [log π(x⁺) − log π_ref(x⁺)] − [log π(x⁻) − log π_ref(x⁻)]. The other DPO variants below are the
usual robustness options; all share h, so switching between them is a config change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")
# How an image's token NLLs become one number: mean per token (weight independent of image length) or
# their sum per image (the scale of the summed log-probs inside the DPO term).
NLL_REDUCTIONS = ("mean", "sum")
# Label smoothing means "this share of labels is flipped": only the two logistic losses model that.
_SMOOTHABLE = ("sigmoid", "robust")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example DPO-family losses and the implicit rewards β·(log π − log π_ref), the latter detached.

    Returns (losses, chosen_rewards, rejected_rewards), each of shape (B,). Average `losses` yourself
    (or use `dpo_objective`) so that per-example values stay available for logging.
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _check_logps(*logps)
    _check_dpo_settings(beta, loss_type, label_smoothing)

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios
    eps = label_smoothing

    if loss_type == "sigmoid":
        # Rafailov et al. 2023 (arXiv 2305.18290), eq. 7: -log σ(β h). With ε > 0 this is conservative DPO
        # (cDPO, Mitchell 2023, eq. 3): the target is "chosen wins with probability 1 − ε", i.e.
        # -(1−ε) log σ(βh) − ε log σ(−βh).
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        # rDPO, Chowdhury et al. 2024 (arXiv 2403.00409): the loss that is unbiased when labels are flipped
        # with rate ε, (-(1−ε) log σ(βh) + ε log σ(−βh)) / (1 − 2ε). Unlike cDPO it can go negative.
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    elif loss_type == "ipo":
        # IPO, Azar et al. 2023 (arXiv 2310.12036v2), eq. 17: (h − 1/(2β))². Its authors (and TRL) apply
        # it to per-token AVERAGE log-probs; here h is built from per-sequence SUMS over the image's tokens,
        # so the target margin 1/(2β) is per image, i.e. 1/(2β·T) per token for T tokens. Pass averaged
        # log-probs in if you want the per-token reading (and expect to retune β).
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        # SLiC-HF, Zhao et al. 2023 (arXiv 2305.10425), the rank calibration loss max(0, δ − h) with the
        # margin δ = 1/β and scaled by β (TRL's parametrisation): relu(1 − βh).
        losses = F.relu(1 - beta * h)

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


def nll_loss(logps: torch.Tensor, num_tokens: torch.Tensor | int, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of a batch of images, from per-sequence log-prob sums.

    reduction "mean": per image token, -Σ logps / Σ num_tokens. Dividing the batch total by the token total
    weights every token equally, which matches the usual token-mean SFT loss; with Janus's fixed 576 tokens
    per image it equals the per-image mean. "sum": per image, -Σ logps / B, the sum over an image's tokens
    averaged over the batch: the scale of the summed log-probs DPO's margin is built from, so the NLL term's
    weight beside it no longer depends on how many tokens an image has.
    `num_tokens` is the token count of each sequence ((B,) tensor, or one int for all).
    """
    _check_logps(logps)
    _check_reduction(reduction)
    tokens = _as_token_counts(num_tokens, logps)
    if reduction == "sum":
        return -logps.mean()
    return -logps.sum() / tokens.sum()


def dpo_metrics(
    losses: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    beta: float,
) -> dict[str, float]:
    """Scalar diagnostics from `dpo_loss`'s outputs.

    kl_chosen / kl_rejected: mean log π − log π_ref on the chosen / rejected images (reward / β).
    implicit_kl: their average over both. Chosen and rejected images are the policy's own samples, so this
    is a Monte-Carlo estimate of KL(π‖π_ref) (exact on-policy; biased by staleness otherwise).
    reward_accuracy counts strict wins only, so it is 0, not 0.5, while policy == reference.
    """
    margins = chosen_rewards - rejected_rewards
    kl_chosen = chosen_rewards.float().mean().item() / beta
    kl_rejected = rejected_rewards.float().mean().item() / beta
    return {
        "dpo_loss": losses.detach().float().mean().item(),
        "reward_accuracy": (margins > 0).float().mean().item(),
        "reward_margin": margins.float().mean().item(),
        "chosen_reward": chosen_rewards.float().mean().item(),
        "rejected_reward": rejected_rewards.float().mean().item(),
        "kl_chosen": kl_chosen,
        "kl_rejected": kl_rejected,
        "implicit_kl": (kl_chosen + kl_rejected) / 2,
    }


def check_finite(loss: torch.Tensor | float, name: str, step: int | None = None) -> None:
    """Raise FloatingPointError if `loss` holds a NaN or inf. Call it BEFORE backward(): a non-finite
    loss would otherwise write NaNs into every weight through the optimizer step."""
    values = loss if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
    if bool(torch.isfinite(values.detach()).all()):
        return
    where = f" at step {step}" if step is not None else ""
    shown = values.detach().flatten()[:4].tolist()
    raise FloatingPointError(
        f"loss '{name}' is not finite{where} (values {shown}); refusing to backpropagate it so the "
        "weights stay intact. Check the log-probs, the learning rate and beta."
    )


# ---------------------------------------------------------------------------------------------------------
# The two objectives the learner calls: one scalar to backpropagate, plus metrics for the logger.


def dpo_objective(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    num_tokens_chosen: torch.Tensor | int,
    *,
    beta: float,
    loss_type: str,
    label_smoothing: float,
    nll_weight: float,
    nll_reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's DPO loss: mean DPO loss + nll_weight · NLL of the chosen images (per token, or per image
    with nll_reduction="sum", see nll_loss)."""
    if not (math.isfinite(nll_weight) and nll_weight >= 0):
        raise ValueError(f"nll_weight must be a finite number >= 0, got {nll_weight}")
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
    )
    nll = nll_loss(policy_chosen_logps, num_tokens_chosen, nll_reduction)
    loss = losses.mean() + nll_weight * nll if nll_weight > 0 else losses.mean()
    metrics = dpo_metrics(losses, chosen_rewards, rejected_rewards, beta)
    # Logged even at weight 0: a chosen-image NLL that climbs is DPO's known failure of pushing both down.
    metrics["nll_chosen"] = nll.detach().item()
    metrics["loss"] = loss.detach().item()
    return loss, metrics


def sft_objective(
    policy_logps: torch.Tensor, num_tokens: torch.Tensor | int, nll_reduction: str = "mean"
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's SFT loss: NLL of the accepted images (per token, or per image with nll_reduction="sum").
    Perplexity is always per token, whichever reduction trains."""
    loss = nll_loss(policy_logps, num_tokens, nll_reduction)
    per_token = nll_loss(policy_logps.detach(), num_tokens).item()
    nll = loss.detach().item()
    return loss, {"loss": nll, "nll": nll, "perplexity": math.exp(min(per_token, 80.0))}


# ---------------------------------------------------------------------------------------------------------
# Argument checks: a wrong shape or setting must fail loudly here, not as a silently broadcast loss.


def _check_dpo_settings(beta: float, loss_type: str, label_smoothing: float) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        # At ε = 0.5 labels carry no information; rDPO also divides by (1 − 2ε).
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing > 0 and loss_type not in _SMOOTHABLE:
        raise ValueError(
            f"label_smoothing={label_smoothing} has no meaning for loss_type {loss_type!r}; "
            f"it applies to {', '.join(_SMOOTHABLE)} only"
        )


def _check_reduction(reduction: str) -> None:
    if reduction not in NLL_REDUCTIONS:
        raise ValueError(f"unknown nll_reduction {reduction!r}; expected one of {', '.join(NLL_REDUCTIONS)}")


def _check_logps(*logps: torch.Tensor) -> None:
    first = logps[0]
    for index, value in enumerate(logps):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"log-prob argument {index} must be a floating-point tensor, got {type(value)}")
        if value.dim() != 1:
            raise ValueError(
                f"log-probs must be per-sequence sums of shape (B,); argument {index} has {tuple(value.shape)}"
            )
        if value.shape != first.shape:
            raise ValueError(
                f"log-prob shapes differ: argument 0 has {tuple(first.shape)}, argument {index} has "
                f"{tuple(value.shape)}"
            )
    if first.numel() == 0:
        raise ValueError("log-probs are empty: a batch needs at least one sequence")


def _as_token_counts(num_tokens: torch.Tensor | int, logps: torch.Tensor) -> torch.Tensor:
    if isinstance(num_tokens, torch.Tensor):
        tokens = num_tokens.to(device=logps.device, dtype=logps.dtype)
        if tokens.shape != logps.shape:
            raise ValueError(
                f"num_tokens shape {tuple(tokens.shape)} does not match log-probs {tuple(logps.shape)}"
            )
    else:
        tokens = torch.full_like(logps, float(num_tokens))
    if not bool((tokens > 0).all()):
        raise ValueError("num_tokens must be > 0 for every sequence")
    return tokens
