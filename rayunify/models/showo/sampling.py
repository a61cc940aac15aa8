"""Mask-predict (MaskGIT) sampling over image codes, and the two image log-prob estimators built on it.

The sampler starts from an all-masked image and, at each of T steps, samples every masked position from the
(guided) code distribution, then keeps the `tokens_left_masked` least confident of them masked; confidence is
log p(sampled code) plus Gumbel noise whose temperature is annealed multiplicatively (t ← t · (1 − r) at
progress r). Committed positions are never re-masked. It records, for every position, the code, the
step that committed it and log p of that code at that step (the behaviour log-prob).

Estimators of log π(image | prompt), both per position (B, N), summed by the losses:
- `trajectory`: Σ_s Σ_{i committed at s} log p(x_i | x_{committed before s}): the log-likelihood of the
  sampling path's token choices (the unmasking order itself is not scored). Teacher-forced by replaying the
  recorded commit steps; on-policy it equals the behaviour log-probs. Costs one forward per step.
- `masked`: (N / |M|) Σ_{i ∈ M} log p(x_i | x_{∉M}) for one random cosine-schedule mask M (t ~ U(0, 1),
  |M| = max(1, round(N cos(π t / 2)))) seeded by the prompt, so chosen, rejected, policy and reference of the
  same prompt share it. One forward. The N / |M| weight puts every mask ratio on the scale of N positions; the
  per-token NLL of SFT (sum / N) is then exactly Show-o's masked-token cross-entropy (mean over M).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rayunify.models.showo.masks import tokens_left_masked

# logits_fn(state) -> (rows, N, K) code logits for a (rows, N) state whose masked positions hold MASKED.
LogitsFn = Callable[[torch.Tensor], torch.Tensor]
MASKED = -1


@dataclass
class Trajectory:
    codes: torch.Tensor  # (rows, N) int64 image codes
    logprobs: torch.Tensor  # (rows, N) float32 log p(code) at the step that committed it
    commit_steps: torch.Tensor  # (rows, N) int64 step (0-based) at which each position was committed


def sample(
    logits_fn: LogitsFn,
    rows: int,
    num_tokens: int,
    steps: int,
    generators: Sequence[torch.Generator],
    temperature: float = 1.0,
    greedy: bool = False,
) -> Trajectory:
    """Rows are prompt-major: generator g draws the `rows // len(generators)` rows of its prompt, so a
    prompt's images do not depend on its batch-mates."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rows % len(generators):
        raise ValueError(f"{rows} rows do not split evenly over {len(generators)} generators")
    device = generators[0].device
    state = torch.full((rows, num_tokens), MASKED, dtype=torch.long, device=device)
    logprobs = torch.zeros(rows, num_tokens, dtype=torch.float32, device=device)
    commit_steps = torch.full((rows, num_tokens), -1, dtype=torch.long, device=device)
    for step in range(steps):
        unknown = state == MASKED
        logp = torch.log_softmax(logits_fn(state).float(), dim=-1)
        drawn = logp.argmax(-1) if greedy else _draw(logp, generators)
        drawn = torch.where(unknown, drawn, state)
        drawn_logp = logp.gather(-1, drawn[..., None]).squeeze(-1)
        temperature *= 1.0 - (step + 1) / steps
        confidence = drawn_logp + temperature * _gumbel(drawn_logp.shape, generators)
        confidence = confidence.masked_fill(~unknown, float("inf"))
        keep = tokens_left_masked(num_tokens, step, steps, int(unknown[0].sum()))
        stays = torch.zeros_like(unknown)
        stays.scatter_(1, confidence.argsort(dim=-1)[:, :keep], True)
        commit = unknown & ~stays
        state = torch.where(commit, drawn, state)
        logprobs = torch.where(commit, drawn_logp, logprobs)
        commit_steps = commit_steps.masked_fill(commit, step)
    return Trajectory(codes=state, logprobs=logprobs, commit_steps=commit_steps)


def _draw(logp: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    chunks = logp.exp().chunk(len(generators))
    drawn = [
        torch.multinomial(c.reshape(-1, c.shape[-1]), 1, generator=g).view(c.shape[:-1])
        for c, g in zip(chunks, generators, strict=True)
    ]
    return torch.cat(drawn)


def _gumbel(shape: torch.Size, generators: Sequence[torch.Generator]) -> torch.Tensor:
    per = shape[0] // len(generators)
    device = generators[0].device
    uniform = torch.cat([torch.rand(per, *shape[1:], generator=g, device=device) for g in generators])
    return -torch.log((-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20))


def trajectory_logprobs(logits_fn: LogitsFn, codes: torch.Tensor, commit_steps: torch.Tensor) -> torch.Tensor:
    """(rows, N) log p of each code at the step that committed it, replaying the recorded path (with
    gradients through `logits_fn`)."""
    if (commit_steps < 0).any():
        raise ValueError(
            "commit_steps has uncommitted positions (-1): these tokens were not drawn by the sampler"
        )
    out = torch.zeros(codes.shape, dtype=torch.float32, device=codes.device)
    for step in torch.unique(commit_steps).tolist():
        state = torch.where(commit_steps < step, codes, MASKED)
        logp = torch.log_softmax(logits_fn(state).float(), dim=-1).gather(-1, codes[..., None]).squeeze(-1)
        out = torch.where(commit_steps == step, logp, out)
    return out


def prompt_mask(prompt: str, num_tokens: int, seed: int = 0) -> torch.Tensor:
    """(N,) bool: the `masked` estimator's mask for `prompt`, the same wherever and whenever it is asked for."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    t = float(torch.rand((), generator=generator))
    count = max(1, round(num_tokens * math.cos(math.pi * t / 2)))
    mask = torch.zeros(num_tokens, dtype=torch.bool)
    mask[torch.randperm(num_tokens, generator=generator)[:count]] = True
    return mask


def masked_logprobs(logits_fn: LogitsFn, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(rows, N): (N / |M|) · log p(x_i | unmasked codes) at the positions in `mask` (rows, N), 0 elsewhere."""
    state = torch.where(mask, MASKED, codes)
    logp = torch.log_softmax(logits_fn(state).float(), dim=-1).gather(-1, codes[..., None]).squeeze(-1)
    weight = mask.shape[1] / mask.sum(dim=1, keepdim=True).clamp_min(1)
    return torch.where(mask, logp * weight, torch.zeros_like(logp))
