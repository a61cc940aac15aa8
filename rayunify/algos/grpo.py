"""GRPO: group-relative advantages and the clipped, KL-regularised policy-gradient loss, as pure functions.

Unlike the DPO family (per-sequence SUMS of log-probs), GRPO weighs every image token on its own, so the
log-prob inputs here are per-token: (B, T) tensors, one row per image, where T is the number of image
tokens. Rows come grouped by prompt, `group_size` images per prompt (p0s0, p0s1, …, p1s0, …).

Group Relative Policy Optimization, Shao et al. 2024 (DeepSeekMath, arXiv 2402.03300), §4.1, eq. 3:

    J(θ) = 1/G Σ_i 1/|o_i| Σ_t { min[ ρ_{i,t} Â_i, clip(ρ_{i,t}, 1 − ε, 1 + ε) Â_i ] − β D_KL[π_θ‖π_ref] }

with the per-token ratio ρ_{i,t} = π_θ(o_{i,t}) / π_θ_old(o_{i,t}) against the policy that drew the sample,
the outcome-supervision advantage Â_i = (r_i − mean(r)) / std(r) over the prompt's group (§4.1.2), and the
KL estimated per token by eq. 4, π_ref/π_θ − log(π_ref/π_θ) − 1: Schulman's k3 estimator ("Approximating
KL Divergence", 2020), unbiased for KL(π_θ‖π_ref) on samples from π_θ and never negative.
"""

from __future__ import annotations

import math

import torch

# Added to the group's std so that a group with (nearly) equal rewards gets ~0 advantages, not inf/NaN.
ADVANTAGE_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: bool = True) -> torch.Tensor:
    """Group-relative advantages (B,): (r − mean_group) / (std_group + 1e-4), or r − mean_group.

    `rewards` (B,) holds B = groups × group_size rewards, grouped by prompt (DeepSeekMath §4.1.2); std is
    the unbiased one (as `torch.std`). `scale_rewards=False` keeps the raw differences: Liu et al. 2025
    (Dr. GRPO, arXiv 2503.20783) show the std division up-weights prompts that are too easy or too hard.
    A group whose rewards are all equal gets advantage 0 (see `informative_groups`).
    """
    grouped = _grouped(rewards, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_rewards:
        centred = centred / (grouped.std(dim=1, keepdim=True) + ADVANTAGE_EPS)
    return centred.reshape(-1)


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Bool (G,): whether each prompt's group carries a learning signal, i.e. its rewards are not all equal.

    An all-equal group has advantage 0 everywhere: its images only cost compute (and, with beta > 0, pull
    towards the reference alone), so the caller skips and counts them.
    """
    grouped = _grouped(rewards, group_size)
    return (grouped != grouped[:, :1]).any(dim=1)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    beta: float = 0.0,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-sequence GRPO loss (B,) and scalar diagnostics; average the losses over the batch yourself.

    logp, old_logp, ref_logp: per-token log-probs (B, T) under the policy being trained (with grad), the
    policy that drew the sample and the frozen reference; ref_logp may be None when beta == 0.
    advantages: (B,), e.g. from `group_advantages`. mask: optional (B, T), nonzero/True on the tokens that
    count; every row needs one. Keep masked-out values finite (e.g. 0): they stay out of the loss, but an
    inf there would still reach the gradient as 0·inf = NaN.

    Per token, with ρ = exp(logp − old_logp) and A the row's advantage (the negated eq. 3 of DeepSeekMath):
        −min(ρ·A, clip(ρ, 1 − clip_eps, 1 + clip_eps_high)·A) + beta · k3,
        k3 = exp(ref − logp) − (ref − logp) − 1,
    averaged over each row's (unmasked) tokens. clip_eps_high (None: clip_eps) above clip_eps is DAPO's
    "clip-higher" (Yu et al. 2025, arXiv 2503.14476): more room for low-probability tokens to rise.
    old_logp, ref_logp and advantages are constants: gradients flow to logp only.

    metrics: clip_fraction (share of tokens whose clipped term is the smaller, i.e. whose gradient is cut;
    clip_fraction_low / _high split it by side), kl (mean k3; 0.0 without a reference), ratio_mean /
    ratio_min / ratio_max, advantage_mean, advantage_abs_mean, policy_loss (mean clipped term).
    """
    high = clip_eps if clip_eps_high is None else clip_eps_high
    _check_grpo_settings(clip_eps, high, beta, ref_logp)
    keep = _check_token_inputs(logp, old_logp, ref_logp, advantages, mask)

    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages.detach().to(logp.dtype).unsqueeze(1)
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_eps, 1 + high) * adv
    policy_term = -torch.minimum(unclipped, clipped)

    per_token = policy_term
    k3 = torch.zeros_like(logp)
    if ref_logp is not None:
        delta = ref_logp.detach() - logp
        k3 = torch.exp(delta) - delta - 1
        if beta > 0:  # skipped at 0, where an inf k3 would still turn 0·inf into NaN
            per_token = per_token + beta * k3
    loss_per_sequence = _row_means(per_token, keep)

    with torch.no_grad():
        # Clipping binds where the ratio left the band in the direction the advantage pushes it.
        low_cut = (ratio < 1 - clip_eps) & (adv < 0)
        high_cut = (ratio > 1 + high) & (adv > 0)
        metrics = {
            "clip_fraction": _token_mean(low_cut | high_cut, keep),
            "clip_fraction_low": _token_mean(low_cut, keep),
            "clip_fraction_high": _token_mean(high_cut, keep),
            "kl": _token_mean(k3, keep),
            "ratio_mean": _token_mean(ratio, keep),
            "ratio_min": ratio[keep].min().item(),
            "ratio_max": ratio[keep].max().item(),
            "advantage_mean": advantages.float().mean().item(),
            "advantage_abs_mean": advantages.float().abs().mean().item(),
            "policy_loss": _row_means(policy_term, keep).float().mean().item(),
        }
    return loss_per_sequence, metrics


def _row_means(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # where, not a product with the mask: a masked-out inf or NaN must not turn the row's sum into NaN.
    return torch.where(keep, values, torch.zeros_like(values)).sum(dim=1) / keep.sum(dim=1).to(values.dtype)


def _token_mean(values: torch.Tensor, keep: torch.Tensor) -> float:
    return values[keep].float().mean().item()


# ---------------------------------------------------------------------------------------------------------
# Argument checks: a wrong shape or setting must fail loudly here, not as a silently broadcast loss.


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 1:
        shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a (B,) tensor, got {shape}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a group-relative advantage needs peers), got {group_size!r}")
    count = rewards.numel()
    if count == 0 or count % group_size:
        raise ValueError(
            f"rewards hold {count} values, not a positive multiple of group_size={group_size}: rows must be whole "
            "groups of group_size images per prompt"
        )
    values = rewards.detach() if rewards.is_floating_point() else rewards.float()
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"rewards must be finite, got {values[~torch.isfinite(values)][:4].tolist()}")
    return values.reshape(count // group_size, group_size)


def _check_grpo_settings(clip_eps: float, clip_eps_high: float, beta: float, ref_logp: torch.Tensor | None) -> None:
    if not 0 < clip_eps < 1:
        raise ValueError(f"clip_eps must be in (0, 1), got {clip_eps}")
    if not (math.isfinite(clip_eps_high) and clip_eps_high >= clip_eps):
        raise ValueError(f"clip_eps_high must be a finite number >= clip_eps={clip_eps}, got {clip_eps_high}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} weighs a KL to the reference, but ref_logp is None")


def _check_token_inputs(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Validate shapes and return which tokens count, as a bool (B, T) (all of them without a mask)."""
    named = {"logp": logp, "old_logp": old_logp, "ref_logp": ref_logp, "advantages": advantages}
    for name, value in named.items():
        if value is not None and not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            raise ValueError(f"{name} must be a floating-point tensor, got {type(value).__name__}")
    if logp.dim() != 2 or logp.numel() == 0:
        raise ValueError(f"logp must be per-token log-probs of shape (B, T) with B, T > 0, got {tuple(logp.shape)}")
    for name in ("old_logp", "ref_logp"):
        value = named[name]
        if value is not None and value.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, logp has {tuple(logp.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must have shape ({logp.shape[0]},), one per sequence, got {tuple(advantages.shape)}")
    if mask is None:
        return torch.ones(logp.shape, dtype=torch.bool, device=logp.device)
    if not isinstance(mask, torch.Tensor) or mask.shape != logp.shape:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a tensor of logp's shape {tuple(logp.shape)}, got {shape}")
    keep = (mask != 0).to(logp.device)
    empty = (~keep.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"mask leaves no token in rows {empty[:8].tolist()}: every sequence needs one")
    return keep
