"""Show-o's attention masks and its cosine masking schedule, as plain tensor functions.

Show-o runs one Phi backbone under a per-sequence 4D mask instead of a causal one:
- text-to-image (T2I): text rows are causal; every row of the image block (`<|soi|>` … `<|eoi|>`) sees every
  non-pad token, before and after it (mask-predict needs the whole image);
- understanding (MMU): causal, plus every row sees the leading block `<|mmu|> <|soi|> image <|eoi|>`.
No row attends a pad. A pad row attends only itself: an all-masked row would be NaN under softmax, and a pad
row's output feeds no other row. Masks here are boolean (True = may attend); `additive` turns one into the
float mask (0 / dtype minimum) the backbone takes as is.
"""

from __future__ import annotations

import math

import torch


def t2i_attention(ids: torch.Tensor, pad_id: int, soi_id: int, eoi_id: int) -> torch.Tensor:
    """(B, 1, L, L) bool for `[PAD]* <|t2i|> bos text eos <|soi|> image <|eoi|>` rows."""
    _, length = ids.shape
    real = ids != pad_id
    opened = torch.cumsum(ids == soi_id, dim=1)
    closed = torch.cumsum(ids == eoi_id, dim=1) - (ids == eoi_id).long()  # <|eoi|> still belongs to its image
    in_image = opened > closed
    causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
    sees = causal[None] & real[:, None, :]  # text: causal over non-pad keys
    sees = torch.where(
        in_image[:, :, None], real[:, None, :].expand_as(sees), sees
    )  # image rows: every non-pad key
    return _pads_see_themselves(sees, real)[:, None]


def mmu_attention(valid: torch.Tensor, block_end: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool for left-padded MMU rows: causal, and every row sees its leading image block.

    `valid` (B, L): non-pad positions; `block_end` (B,): index of each row's `<|eoi|>` (the block runs from
    the row's first real token to it)."""
    _, length = valid.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    columns = torch.arange(length, device=valid.device)
    in_block = (
        columns[None, :] <= block_end[:, None]
    )  # (B, L) keys inside the image block (pads cleared below)
    sees = (causal[None] | in_block[:, None, :]) & valid[:, None, :]
    return _pads_see_themselves(sees, valid)[:, None]


def _pads_see_themselves(sees: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    length = sees.shape[-1]
    eye = torch.eye(length, dtype=torch.bool, device=sees.device)
    return torch.where(real[:, :, None], sees, eye[None].expand_as(sees))


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the float mask attention adds to its scores: 0 where allowed, the minimum elsewhere."""
    zeros = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zeros, torch.finfo(dtype).min)


def cosine_mask_ratio(progress: float) -> float:
    """Fraction of the image still masked after `progress` ∈ [0, 1] of the sampling steps: cos(π r / 2),
    in float32 as the public sampler computes it (so floor(N · ratio) lands on the same integers)."""
    return float(torch.cos(torch.tensor(progress, dtype=torch.float32) * math.pi * 0.5))


def tokens_left_masked(num_tokens: int, step: int, steps: int, unknown: int) -> int:
    """How many of `unknown` still-masked positions stay masked after sampling step `step` (0-based) of `steps`.

    floor(N · cos(π r / 2)) with r = (step + 1) / steps, clamped so that each step leaves at least one token
    masked and commits at least one while more than one is masked (as MaskGIT and Show-o do); the last step commits everything left.
    """
    if step == steps - 1:
        return 0
    ratio = torch.tensor(cosine_mask_ratio((step + 1) / steps), dtype=torch.float32)
    planned = int(torch.floor(num_tokens * ratio))
    return max(1, min(unknown - 1, planned))
