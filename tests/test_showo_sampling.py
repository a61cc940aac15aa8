"""Show-o's masks, schedule and mask-predict sampler, on hand-written cases and a fake logits function."""

from __future__ import annotations

import math

import pytest
import torch

from rayunify.models.showo.masks import additive, mmu_attention, t2i_attention, tokens_left_masked
from rayunify.models.showo.sampling import MASKED, masked_logprobs, prompt_mask, sample, trajectory_logprobs

PAD, SOI, EOI, T2I = 0, 1, 2, 3


def rows(text: str) -> list[list[int]]:
    return [[int(c) for c in line.split()] for line in text.strip().splitlines()]


def test_t2i_mask_text_causal_image_sees_every_non_pad_and_pads_are_never_attended():
    # [PAD] [PAD] <|t2i|> 7 8 <|soi|> 9 9 <|eoi|>
    ids = torch.tensor([[PAD, PAD, T2I, 7, 8, SOI, 9, 9, EOI]])
    expected = rows("""
        1 0 0 0 0 0 0 0 0
        0 1 0 0 0 0 0 0 0
        0 0 1 0 0 0 0 0 0
        0 0 1 1 0 0 0 0 0
        0 0 1 1 1 0 0 0 0
        0 0 1 1 1 1 1 1 1
        0 0 1 1 1 1 1 1 1
        0 0 1 1 1 1 1 1 1
        0 0 1 1 1 1 1 1 1
    """)
    assert t2i_attention(ids, PAD, SOI, EOI)[0, 0].int().tolist() == expected


def test_t2i_mask_without_padding_and_rows_are_independent():
    ids = torch.tensor([[T2I, 7, SOI, 9, EOI], [PAD, T2I, SOI, 9, EOI]])
    mask = t2i_attention(ids, PAD, SOI, EOI)[:, 0].int().tolist()
    assert mask[0] == rows("""
        1 0 0 0 0
        1 1 0 0 0
        1 1 1 1 1
        1 1 1 1 1
        1 1 1 1 1
    """)
    assert mask[1] == rows("""
        1 0 0 0 0
        0 1 0 0 0
        0 1 1 1 1
        0 1 1 1 1
        0 1 1 1 1
    """)


def test_mmu_mask_is_causal_plus_the_image_block_and_skips_left_padding():
    # row 0: [PAD] <|mmu|> <|soi|> c <|eoi|> q1 ; row 1 unpadded with one more question token
    valid = torch.tensor([[False, True, True, True, True, True], [True] * 6])
    mask = mmu_attention(valid, torch.tensor([4, 3]))[:, 0].int().tolist()
    assert mask[0] == rows("""
        1 0 0 0 0 0
        0 1 1 1 1 0
        0 1 1 1 1 0
        0 1 1 1 1 0
        0 1 1 1 1 0
        0 1 1 1 1 1
    """)
    assert mask[1] == rows("""
        1 1 1 1 0 0
        1 1 1 1 0 0
        1 1 1 1 0 0
        1 1 1 1 0 0
        1 1 1 1 1 0
        1 1 1 1 1 1
    """)


def test_additive_mask_is_zero_where_allowed_and_the_dtype_minimum_elsewhere():
    mask = additive(torch.tensor([[True, False]]), torch.float32)
    assert mask.tolist() == [[0.0, torch.finfo(torch.float32).min]]


@pytest.mark.parametrize("n, steps", [(16, 4), (64, 8), (256, 18), (1024, 50), (5, 12)])
def test_tokens_left_masked_follow_the_cosine_formula_with_its_clamps(n, steps):
    unknown = n
    for step in range(steps):
        keep = tokens_left_masked(n, step, steps, unknown)
        if step == steps - 1:
            assert keep == 0
        else:
            planned = math.floor(n * math.cos(math.pi / 2 * (step + 1) / steps) + 1e-9)
            assert abs(keep - max(1, min(unknown - 1, planned))) <= 1  # float32 as Show-o; equal off the boundaries
            assert 1 <= keep <= max(1, unknown - 1)
        unknown = keep


def fake_logits(codes: int = 8, seed: int = 0):
    """A logits function that depends on the state (like a model would), deterministic, batch-independent."""
    table = torch.randn(codes + 1, codes, generator=torch.Generator().manual_seed(seed))

    def logits(state: torch.Tensor) -> torch.Tensor:
        context = table[(state.clamp_min(-1) + 1)].mean(dim=1, keepdim=True)  # (rows, 1, K) from the whole state
        position = torch.arange(state.shape[1], dtype=torch.float32)[None, :, None] / state.shape[1]
        return 2 * context + position * table[0]

    return logits


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_every_position_is_committed_exactly_once_and_the_schedule_is_followed():
    n, steps = 32, 6
    path = sample(fake_logits(), rows=3, num_tokens=n, steps=steps, generators=generators(1, 2, 3))
    assert ((path.codes >= 0) & (path.codes < 8)).all()
    assert ((path.commit_steps >= 0) & (path.commit_steps < steps)).all()
    left = n
    for step in range(steps):
        keep = tokens_left_masked(n, step, steps, left)
        assert (path.commit_steps == step).sum(dim=1).tolist() == [left - keep] * 3
        left = keep


def test_sampling_is_seeded_and_each_prompt_draws_the_same_whatever_its_batch():
    logits = fake_logits()
    together = sample(logits, rows=4, num_tokens=16, steps=4, generators=generators(5, 6))
    again = sample(logits, rows=4, num_tokens=16, steps=4, generators=generators(5, 6))
    alone = sample(logits, rows=2, num_tokens=16, steps=4, generators=generators(6))
    assert torch.equal(together.codes, again.codes) and torch.equal(together.commit_steps, again.commit_steps)
    assert torch.equal(together.codes[2:], alone.codes)
    assert torch.equal(together.commit_steps[2:], alone.commit_steps)
    assert torch.allclose(together.logprobs[2:], alone.logprobs)


def test_replaying_the_recorded_path_gives_the_behaviour_logprobs():
    logits = fake_logits()
    path = sample(logits, rows=2, num_tokens=24, steps=5, generators=generators(9))
    replayed = trajectory_logprobs(logits, path.codes, path.commit_steps)
    assert torch.allclose(replayed, path.logprobs, atol=1e-6)


def test_a_state_never_shows_a_later_commit():
    seen: list[torch.Tensor] = []
    inner = fake_logits()

    def recording(state):
        seen.append(state.clone())
        return inner(state)

    path = sample(recording, rows=1, num_tokens=12, steps=4, generators=generators(0))
    for step, state in enumerate(seen):
        assert torch.equal(state != MASKED, path.commit_steps < step)


def test_masked_estimator_mask_depends_on_the_prompt_only_and_scores_only_masked_positions():
    a, b = prompt_mask("a red circle", 64), prompt_mask("a red circle", 64)
    assert torch.equal(a, b) and a.any()
    assert not torch.equal(a, prompt_mask("a blue square", 64)) or not torch.equal(a, prompt_mask("a cat", 64))
    codes = torch.randint(0, 8, (2, 64))
    logits = fake_logits()
    logp = masked_logprobs(logits, codes, torch.stack([a, a]))
    assert (logp[:, ~a] == 0).all() and (logp[:, a] < 0).all()
    # per-token mean over N = Show-o's masked-token cross-entropy (mean over the masked positions)
    state = torch.where(a, MASKED, codes)
    cross_entropy = torch.nn.functional.cross_entropy(logits(state)[:, a].reshape(-1, 8), codes[:, a].reshape(-1))
    assert torch.allclose(-logp.sum() / logp.numel(), cross_entropy, atol=1e-6)
