"""GRPO's learner step: a step's judged groups → group-relative advantages → `ppo_epochs` passes of clipped
policy-gradient updates in mini-batches, each an optimizer step.

Each group trains in one step only, with ratios against the behaviour log-probs the rollout actor recorded
with the weights that drew it (so in async mode, against the policy that actually drew each sample).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rayunify.batching import chunk_seed, make_grpo_batch, split
from rayunify.config import Config
from rayunify.driver.runtime import ray_get
from rayunify.types import JudgedSample


class GRPOLearning:
    def __init__(self, cfg: Config, data: Any, learner: Any) -> None:
        assert cfg.algorithm.type == "grpo"
        self.cfg, self.algorithm, self.data, self.learner = cfg, cfg.algorithm, data, learner

    def updates_per_step(self) -> int:
        """Optimizer steps (policy versions) one full step takes: `ppo_epochs` × mini-batches."""
        images = self.cfg.learner.batch_size * self.cfg.sampling.samples_per_prompt
        mini = self.algorithm.mini_batch_size or images
        return self.algorithm.ppo_epochs * math.ceil(images / mini)

    def max_lag(self, max_staleness: int | None) -> int | None:
        """Staleness is bounded in steps, as for DPO; a GRPO step advances the version once per update."""
        return None if max_staleness is None else max_staleness * self.updates_per_step()

    def take(self, version: int, max_staleness: int | None) -> tuple[list[list[JudgedSample]], dict[str, float]]:
        groups, counters = ray_get(
            self.data.take_groups.remote(self.cfg.learner.batch_size, version, self.max_lag(max_staleness))
        )
        return groups, {f"train/{k}": float(v) for k, v in counters.items()}

    def lags(self, groups: list[list[JudgedSample]], version: int) -> list[int]:
        return [version - item.sample.policy_version for group in groups for item in group]

    def train(self, groups: list[list[JudgedSample]], step: int) -> dict[str, float]:
        """`ppo_epochs` seeded shuffles of the step's images, `mini_batch_size` images per optimizer step."""
        from rayunify.actors.policy import TrainBatch

        items = [item for group in groups for item in group]
        advantages = group_relative(groups, self.algorithm.scale_rewards)
        reference = self.reference_logps(items) if self.algorithm.beta > 0 else None
        mini = self.algorithm.mini_batch_size or len(items)
        per_update: list[dict[str, float]] = []
        for epoch in range(self.algorithm.ppo_epochs):
            order = np.random.default_rng(chunk_seed(self.cfg.trainer.seed, step, epoch)).permutation(len(items))
            for start in range(0, len(items), mini):
                rows = order[start : start + mini].tolist()
                batches = [
                    make_grpo_batch(
                        [items[i] for i in shard], [advantages[i] for i in shard],
                        None if reference is None else [reference[i] for i in shard], self.cfg, TrainBatch,
                    )  # fmt: skip
                    for shard in split(rows, self.cfg.learner.num_ranks)
                ]
                per_update.append(self.learner.train_step(batches))
        out = {f"train/{k}": float(np.mean([m[k] for m in per_update])) for k in per_update[0]}
        first = per_update[0]  # on-policy (sync), its ratios are 1 up to numerics
        out["train/first_ratio_deviation"] = max(abs(first["ratio_min"] - 1), abs(first["ratio_max"] - 1))
        out["train/version"] = float(per_update[-1]["version"])
        out["train/updates"] = float(len(per_update))
        out["train/reward_mean"] = float(np.mean([it.reward for it in items]))
        out["train/groups"] = float(len(groups))
        return out

    def reference_logps(self, items: list[JudgedSample]) -> list[Any]:
        """Per-token reference log-probs (LoRA adapter off, or the frozen copy), once per image; every rank
        computes its shard (under ZeRO-3 a forward is a collective)."""
        from rayunify.actors.policy import TrainBatch, reference_token_logps_fn
        from rayunify.batching import make_batch, unsplit

        shards = [make_batch(s, "sft", self.cfg, TrainBatch) for s in split(items, self.learner.num_ranks)]
        return unsplit(self.learner.compute(reference_token_logps_fn, shards), len(items))


def group_relative(groups: list[list[JudgedSample]], scale_rewards: bool) -> list[float]:
    """`group_advantages` per prompt's group (a prompt drawn twice in a step makes one larger group)."""
    import torch

    from rayunify.algos.grpo import group_advantages

    out: list[float] = []
    for group in groups:
        rewards = torch.tensor([float(item.reward) for item in group], dtype=torch.float64)  # type: ignore[arg-type]
        out.extend(group_advantages(rewards, len(group), scale_rewards).tolist())
    return out
