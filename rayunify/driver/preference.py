"""DPO's and SFT's learner step: a difficulty-ranked batch from the training-data actor (DPO pairs or accepted
images), DPO's reference log-probs (stored once per pair, or recomputed every time), one optimizer step.
"""

from __future__ import annotations

from typing import Any

from rayunify.config import Config
from rayunify.driver.runtime import ray_get


class PreferenceLearning:
    def __init__(self, cfg: Config, data: Any, learner: Any, hooks: Any) -> None:
        self.cfg, self.data, self.learner, self.hooks = cfg, data, learner, hooks
        self.dpo = cfg.algorithm.type == "dpo"
        self.kind = "pair" if self.dpo else "sft"

    def take(self, version: int, max_staleness: int | None) -> tuple[list[Any], dict[str, float]]:
        return ray_get(self.data.sample.remote(self.kind, self.cfg.learner.batch_size, version, max_staleness)), {}

    def lags(self, items: list[Any], version: int) -> list[int]:
        return [version - (it.policy_version if self.dpo else it.sample.policy_version) for it in items]

    def train(self, items: list[Any], step: int) -> dict[str, float]:
        from rayunify.actors.policy import TrainBatch
        from rayunify.batching import make_batch, split

        if self.dpo:
            self.fill_reference_logps(items)
            self.hooks.on_reference_logps(items, step)
        shards = split(items, self.cfg.learner.num_ranks)
        metrics = self.learner.train_step([make_batch(shard, self.kind, self.cfg, TrainBatch) for shard in shards])
        return {**{f"train/{k}": v for k, v in metrics.items()}, "train/batch": float(len(items))}

    def fill_reference_logps(self, pairs: list[Any]) -> None:
        """Reference log-probs once per pair (stored in the buffer), or every time with reference=recompute;
        every rank computes its shard (under ZeRO-3 the forward is a collective, and the work is shared)."""
        from rayunify.actors.policy import TrainBatch, reference_logps_fn
        from rayunify.batching import make_batch, split, unsplit
        from rayunify.training_data import pair_key

        recompute = self.cfg.algorithm.reference == "recompute"
        todo = [p for p in pairs if recompute or p.ref_chosen_logp is None]
        if not todo:
            return
        shards = [make_batch(shard, "pair", self.cfg, TrainBatch) for shard in split(todo, self.learner.num_ranks)]
        per_rank = self.learner.compute(reference_logps_fn, shards)
        chosen = unsplit([c for c, _ in per_rank], len(todo))
        rejected = unsplit([r for _, r in per_rank], len(todo))
        for pair, c, r in zip(todo, chosen, rejected, strict=True):
            pair.ref_chosen_logp, pair.ref_rejected_logp = c, r
        if not recompute:
            ray_get(self.data.store_reference.remote([pair_key(p) for p in todo], chosen, rejected))
