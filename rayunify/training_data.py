"""The training-data service: prompt schedule, Algorithm-1 pairing, curriculum and the replay buffer.

One pure class (`TrainingData`) that the Ray layer runs as the replay-buffer actor. It decides which
prompts are generated next (admission schedule, discard-pool replays), turns judged groups into SFT
samples and DPO pairs, keeps the per-prompt difficulty that ranks pairs, and hands out training batches.
Everything it holds is in `state_dict()`, so a resumed run continues with the same buffer and curriculum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rayunify.buffer import EpochPass, ReplayBuffer, judged_from_dict, judged_to_dict
from rayunify.config import CurriculumConfig
from rayunify.curriculum import AdmissionSchedule, DifficultyTracker, DiscardPool
from rayunify.pairing import build_group_outcome
from rayunify.types import JudgedSample, PreferencePair, Prompt


class TrainingData:
    """`levels`: the adaptive curriculum's categories, easiest first (`rayunify.prompts.curriculum_levels`;
    `set_levels` replaces them before the first group); None: the prompts' categories in the order they first
    appear. `keep_groups` (GRPO): judged groups are
    also kept whole, with their rewards, until `take_groups` hands them to the learner."""

    def __init__(
        self,
        prompts: Sequence[Prompt],
        curriculum: CurriculumConfig | None = None,
        levels: Sequence[str] | None = None,
        seed: int = 0,
        capacity: int = 10_000,
        keep_groups: bool = False,
    ) -> None:
        if not prompts:
            raise ValueError("training needs at least one prompt")
        cur = curriculum or CurriculumConfig()
        self.prompts = list(prompts)
        self.by_id = {p.prompt_id: p for p in self.prompts}
        adaptive = cur.type == "adaptive"
        self.buffer = ReplayBuffer(capacity=capacity, alpha=cur.priority_alpha if adaptive else 0.0)
        self.tracker = DifficultyTracker(decay=1.0 - cur.smoothing if adaptive else 1.0)
        self.pool = DiscardPool(replay_at=cur.replay_at if cur.type != "none" else ())
        self.admit_threshold = cur.admit_threshold
        self.schedule = self._admission(adaptive, levels, cur.admit_threshold)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.prompts)).tolist()
        self.cursor = 0
        self.reference: dict[str, tuple[float, float]] = {}  # pair key → stored reference log-probs
        self.counters = {"prompts_consumed": 0, "groups": 0, "pairs": 0, "sft": 0, "replayed_prompts": 0}
        self.keep_groups = keep_groups
        self.groups: list[list[JudgedSample]] = []  # GRPO: judged groups not yet trained on, oldest first
        self.epochs = EpochPass()  # offline: full passes without replacement (`begin_epoch`)
        if keep_groups:
            self.counters.update(skipped_groups=0, stale_groups=0, invalid_rewards=0)

    def _admission(self, adaptive: bool, order: Sequence[str] | None, threshold: float) -> AdmissionSchedule | None:
        if not adaptive:
            return None
        categories = list(order or dict.fromkeys(p.category for p in self.prompts))
        return AdmissionSchedule.from_categories(self.prompts, categories, pass_threshold=threshold)

    def set_levels(self, levels: Sequence[str]) -> None:
        """The adaptive curriculum's levels, easiest first, set before any group is added (the driver orders
        them by the start evaluation when `curriculum.levels` is unset)."""
        if self.schedule is None:
            return
        if self.counters["groups"]:
            raise RuntimeError("curriculum levels are set before the first group is added")
        self.schedule = self._admission(True, levels, self.admit_threshold)

    # ------------------------------------------------------------------ prompts
    def next_prompts(self, k: int) -> list[Prompt]:
        """The next k admitted prompts, cycling through a seeded shuffle of the training set."""
        chosen: list[Prompt] = []
        scanned = 0
        while len(chosen) < k and scanned < 2 * len(self.order):
            prompt = self.prompts[self.order[self.cursor]]
            self.cursor = (self.cursor + 1) % len(self.order)
            if self.cursor == 0:
                self.order = self.rng.permutation(len(self.prompts)).tolist()
            scanned += 1
            if self.schedule is None or self.schedule.admitted(prompt):
                chosen.append(prompt)
        return chosen

    def all_prompts(self) -> list[Prompt]:
        """Offline mode builds its dataset from every training prompt once."""
        return list(self.prompts)

    def size(self, kind: str) -> int:
        return self.buffer.size(kind)  # type: ignore[arg-type]

    def replay_due(self, when: int) -> bool:
        return self.pool.due(when)

    def replay_prompts(self) -> list[Prompt]:
        """The paper's Algorithm 2: every pooled prompt is regenerated with the current model."""
        return self.pool.prompts()

    # ------------------------------------------------------------------ judged groups → training items
    def add_groups(self, groups: Sequence[Sequence[JudgedSample]], step: int, replay_at: int | None = None) -> dict:
        """Pair each prompt's group, update difficulty and pool. `replay_at` marks a discard-pool replay."""
        outcomes = [build_group_outcome(g, created_step=step) for g in groups if g]
        for group in groups:
            if group:
                self.tracker.update_group(group)
        if replay_at is not None:
            recovered = self.pool.replay_outcomes(outcomes, when=replay_at)
            self.counters["replayed_prompts"] += len(outcomes)
        else:
            self.pool.add_discarded(outcomes)
            recovered = []
        pairs = [o.pair for o in outcomes if o.pair is not None]
        accepted = [s for o in outcomes for s in o.accepted]
        if self.keep_groups:
            self.groups.extend(list(g) for g in groups if g)
            self.counters["invalid_rewards"] += sum(item.invalid_rewards for g in groups for item in g)
        else:
            self.buffer.add_pairs(pairs)
            self.buffer.add_sft(accepted)
        self.buffer.update_difficulty(self.tracker.scores())
        opened = False
        if self.schedule is not None:
            opened = self.schedule.update(self.tracker.mean_pass_rate(self.schedule.admitted_ids()))
        self.counters["groups"] += len(outcomes)
        self.counters["pairs"] += len(pairs)
        self.counters["sft"] += len(accepted)
        if replay_at is None:
            self.counters["prompts_consumed"] += len(outcomes)
        valid = sum(o.n_valid for o in outcomes)
        rejected = sum(o.n_rejected for o in outcomes)
        return {
            "data/groups": float(len(outcomes)),
            "data/pairs_made": float(len(pairs)),
            "data/accepted": float(len(accepted)),
            "data/discarded": float(sum(o.discard for o in outcomes)),
            "data/invalid": float(sum(o.n_invalid for o in outcomes)),
            "data/recovered": float(len(recovered)),
            "data/nonunified": rejected / valid if valid else math.nan,
            "data/level_opened": float(opened),
        }

    # ------------------------------------------------------------------ batches
    def begin_epoch(self, kind: str, batch_size: int, cap_to_first: bool = False) -> tuple[int, int]:
        """Offline: a new pass over every item of `kind` held now (replays included), or with `cap_to_first`
        over a seeded subset as large as the first epoch. Returns (epoch, steps)."""
        epoch = self.epochs.begin(kind, self.buffer.size(kind), self.rng, cap_to_first)  # type: ignore[arg-type]
        return epoch, self.epochs.steps_left(batch_size)

    def epoch_progress(self, batch_size: int) -> tuple[int, int]:
        """(the current epoch, -1 before the first; its steps left)."""
        return self.epochs.epoch, self.epochs.steps_left(batch_size)

    def sample(self, kind: str, batch_size: int, current_version: int, max_staleness: int | None) -> list:
        """A batch: the epoch's next items once `begin_epoch` has begun one of `kind`, else a priority draw."""
        if self.epochs.active(kind):
            stored = self.buffer.items(kind)  # type: ignore[arg-type]
            items = [stored[i] for i in self.epochs.next_indices(batch_size)]
            self.buffer.counters["sampled"] += len(items)
        else:
            items = self.buffer.sample(batch_size, self.rng, current_version, max_staleness, kind=kind)  # type: ignore[call-overload]
        if kind == "pair":
            for pair in items:
                stored = self.reference.get(pair_key(pair))
                if stored is not None:
                    pair.ref_chosen_logp, pair.ref_rejected_logp = stored
        return items

    def take_groups(
        self, max_groups: int, current_version: int, max_lag: int | None
    ) -> tuple[list[list[JudgedSample]], dict[str, int]]:
        """GRPO: up to `max_groups` of the freshest kept groups, removed from the store (each group trains
        in one step only: its ratios are against the policy that drew it). Groups older than `max_lag`
        versions are dropped (`stale_groups`); groups whose rewards are all equal carry no signal and are
        dropped too (`skipped_groups`). Groups left over beyond `max_groups` wait for the next step.
        Returns the groups and the running counts of skipped, stale and INVALID-rewarded ones."""
        fresh: list[list[JudgedSample]] = []
        for group in self.groups:
            lag = current_version - min(item.sample.policy_version for item in group)
            if max_lag is not None and lag > max_lag:
                self.counters["stale_groups"] += 1
            elif len({item.reward for item in group}) == 1:
                self.counters["skipped_groups"] += 1
            else:
                fresh.append(group)
        taken, self.groups = fresh[-max_groups:], fresh[:-max_groups]
        counts = {k: self.counters[k] for k in ("skipped_groups", "stale_groups", "invalid_rewards")}
        return taken, counts

    def store_reference(self, keys: Sequence[str], chosen: Sequence[float], rejected: Sequence[float]) -> None:
        """Reference log-probs are computed once per pair (by the learner) and kept for its later draws."""
        for key, c, r in zip(keys, chosen, rejected, strict=True):
            self.reference[key] = (float(c), float(r))
        if len(self.reference) > 4 * self.buffer.capacity:
            live = {pair_key(p) for p in self.buffer.items("pair")}  # type: ignore[arg-type]
            self.reference = {k: v for k, v in self.reference.items() if k in live}

    # ------------------------------------------------------------------ state
    def metrics(self) -> dict[str, float]:
        out = {f"data/{k}": float(v) for k, v in self.counters.items()}
        out.update(self.buffer.metrics())
        out.update(self.tracker.metrics())
        out.update(self.pool.metrics())
        if self.schedule is not None:
            out.update(self.schedule.metrics())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer.state_dict(),
            "tracker": self.tracker.state_dict(),
            "pool": self.pool.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "rng": self.rng.bit_generator.state,
            "order": list(self.order),
            "cursor": self.cursor,
            "reference": dict(self.reference),
            "counters": dict(self.counters),
            "groups": [[judged_to_dict(item) for item in group] for group in self.groups],
            "epochs": self.epochs.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.tracker.load_state_dict(state["tracker"])
        self.pool.load_state_dict(state["pool"])
        if self.schedule is not None and state["schedule"] is not None:
            self.schedule.load_state_dict(state["schedule"])
        self.rng.bit_generator.state = state["rng"]
        self.order = list(state["order"])
        self.cursor = int(state["cursor"])
        self.reference = {k: tuple(v) for k, v in state["reference"].items()}  # type: ignore[misc]
        self.counters = dict(state["counters"])
        self.groups = [[judged_from_dict(item) for item in group] for group in state.get("groups", [])]
        if "epochs" in state:
            self.epochs.load_state_dict(state["epochs"])


def pair_key(pair: PreferencePair) -> str:
    return f"{pair.chosen.sample_id}|{pair.rejected.sample_id}"
