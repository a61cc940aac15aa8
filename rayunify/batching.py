"""How a step's work is cut up: prompts into seeded chunks for the rollout actors, a batch into one shard
per learner rank, and a shard into the learner's `TrainBatch`. Pure (numpy and torch; no ray), so the
driver and the benchmarks' sequential baseline cut work the same way.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

from rayunify.config import Config


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """Seeds depend only on (run seed, step, chunk): a re-run chunk or a resumed run draws the same images."""
    return zlib.crc32(f"{seed}/{step}/{chunk}".encode())


def prompt_seeds(seed: int, count: int) -> list[int]:
    """One seed per prompt of a rollout call: a prompt draws the same images however the call is cut up."""
    return [zlib.crc32(f"{seed}/prompt/{i}".encode()) for i in range(count)]


def chunks(items: list[Any], parts: int) -> list[list[Any]]:
    """At most `parts` consecutive chunks of equal size (the last may be shorter; none is empty)."""
    size = max(1, math.ceil(len(items) / parts))
    return [items[i : i + size] for i in range(0, len(items), size)]


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """Exactly `parts` shards; an empty one repeats the first item, since every rank must step (collectives)."""
    size = math.ceil(len(items) / parts)
    shards = [items[i * size : (i + 1) * size] for i in range(parts)]
    return [s if s else items[:1] for s in shards]


def unsplit(per_shard: list[list[Any]], count: int) -> list[Any]:
    """Per-item results of `split(items, parts)`'s shards back in items' order, without the repeats that
    stood in for empty shards (those are the trailing shards, so they fall past `count`)."""
    return [x for shard in per_shard for x in shard][:count]


def make_batch(items: list[Any], kind: str, cfg: Config, batch_cls: Any) -> Any:
    """SFT: accepted samples' tokens. DPO ("pair"): chosen and rejected tokens, with the reference log-probs
    when every pair has them."""
    import numpy as np
    import torch

    common = {"geometry": cfg.sampling.geometry, "guidance_scale": cfg.sampling.guidance_scale}
    if kind == "sft":
        samples = [it.sample for it in items]
        tokens = torch.as_tensor(np.stack([s.image_tokens for s in samples]))
        return batch_cls(
            prompts=[s.prompt.text for s in samples], chosen=tokens, chosen_steps=commit_steps(samples), **common
        )
    ref_c = [p.ref_chosen_logp for p in items]
    ref_r = [p.ref_rejected_logp for p in items]
    return batch_cls(
        prompts=[p.prompt.text for p in items],
        chosen=torch.as_tensor(np.stack([p.chosen.image_tokens for p in items])),
        rejected=torch.as_tensor(np.stack([p.rejected.image_tokens for p in items])),
        chosen_steps=commit_steps([p.chosen for p in items]),
        rejected_steps=commit_steps([p.rejected for p in items]),
        ref_chosen=None if None in ref_c else torch.tensor(ref_c),
        ref_rejected=None if None in ref_r else torch.tensor(ref_r),
        **common,
    )


def make_grpo_batch(items: list[Any], advantages: list[float], ref_logps: list[Any] | None, cfg: Config, batch_cls: Any) -> Any:
    """GRPO: the judged samples' tokens with their behaviour log-probs and advantages (and the reference's
    per-token log-probs when beta > 0)."""
    import numpy as np
    import torch

    return batch_cls(
        prompts=[it.sample.prompt.text for it in items],
        chosen=torch.as_tensor(np.stack([it.sample.image_tokens for it in items])),
        old_logp=torch.as_tensor(np.stack([it.sample.behaviour_logprobs for it in items])),
        ref_logp=None if ref_logps is None else torch.as_tensor(np.asarray(ref_logps, dtype=np.float32)),
        advantages=torch.tensor(advantages, dtype=torch.float32),
        chosen_steps=commit_steps([it.sample for it in items]),
        geometry=cfg.sampling.geometry,
        guidance_scale=cfg.sampling.guidance_scale,
    )


def commit_steps(samples: list[Any]) -> Any:
    """The samples' commit steps as one (B, T) tensor (Show-o), or None when they have none (Janus)."""
    import numpy as np
    import torch

    if any(s.commit_steps is None for s in samples):
        return None
    return torch.as_tensor(np.stack([s.commit_steps for s in samples]))
