"""Replay buffer of training items (DPO pairs and SFT samples), sampled by prompt difficulty.

A pure class; the actor layer wraps it in a Ray actor. Each item keeps the policy version that drew its
images; `sample` evicts items older than `max_staleness` versions before drawing, so the learner never
trains on data from too old a policy. Priority of an item = (difficulty(prompt) + eps) ** alpha, with
difficulties pushed in by the driver (`update_difficulty(tracker.scores())`): alpha = 0 is uniform, larger
alpha leans on the prompts the model still fails. A batch never holds the same item twice; items stay in
the buffer after being drawn (reuse is bounded by staleness and capacity).

Pure: numpy/stdlib only.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Literal, overload

import numpy as np

from rayunify.types import JudgedSample, Judgement, PreferencePair, Prompt, Sample, SamplingSettings, Verdict

Kind = Literal["pair", "sft"]
Item = PreferencePair | JudgedSample
KINDS: tuple[Kind, ...] = ("pair", "sft")


class ReplayBuffer:
    """Two FIFO stores (pairs, SFT samples), each bounded by `capacity`, sampled by difficulty priority."""

    def __init__(
        self, capacity: int = 10_000, alpha: float = 1.0, eps: float = 1e-2, default_difficulty: float = 0.5
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if eps <= 0:
            # eps keeps prompts of difficulty 0 drawable; without it they would never be revisited.
            raise ValueError(f"eps must be > 0, got {eps}")
        self.capacity = capacity
        self.alpha = alpha
        self.eps = eps
        self.default_difficulty = default_difficulty
        self._pairs: deque[PreferencePair] = deque()
        self._sft: deque[JudgedSample] = deque()
        self._difficulty: dict[str, float] = {}
        self.counters: dict[str, int] = {
            f"{kind}_{event}": 0 for kind in KINDS for event in ("added", "evicted_capacity", "evicted_stale")
        }
        self.counters["sampled"] = 0
        self.counters["empty_samples"] = 0

    def __len__(self) -> int:
        return len(self._pairs) + len(self._sft)

    def size(self, kind: Kind = "pair") -> int:
        return len(self._store(kind))

    def items(self, kind: Kind = "pair") -> list[Item]:
        """A snapshot of the stored items of `kind`, oldest first."""
        return list(self._store(kind))

    def add_pairs(self, pairs: Iterable[PreferencePair]) -> None:
        self._add("pair", pairs)

    def add_sft(self, samples: Iterable[JudgedSample]) -> None:
        self._add("sft", samples)

    def update_difficulty(self, scores: Mapping[str, float]) -> None:
        """Merge per-prompt difficulties in [0, 1] (DifficultyTracker.scores()); others keep the default."""
        self._difficulty.update({prompt_id: float(score) for prompt_id, score in scores.items()})

    @overload
    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        current_version: int,
        max_staleness: int | None,
        kind: Literal["pair"] = "pair",
    ) -> list[PreferencePair]: ...

    @overload
    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        current_version: int,
        max_staleness: int | None,
        kind: Literal["sft"],
    ) -> list[JudgedSample]: ...

    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        current_version: int,
        max_staleness: int | None,
        kind: Kind = "pair",
    ) -> list[PreferencePair] | list[JudgedSample]:
        """Up to `batch_size` distinct items of `kind`, drawn with probability ∝ priority.

        Items more than `max_staleness` policy versions behind `current_version` are evicted first (None: no
        bound, for offline training on a fixed data set). Returns fewer items when fewer are usable and an
        empty list when none is: the caller logs a skipped batch instead of crashing.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_staleness is not None:
            self.evict_stale(current_version, max_staleness)
        items = list(self._store(kind))  # a list: indexing a deque's middle is O(n) per item
        if not items:
            self.counters["empty_samples"] += 1
            return []
        count = min(batch_size, len(items))
        indices = rng.choice(len(items), size=count, replace=False, p=self._probabilities(items))
        self.counters["sampled"] += count
        return [items[int(index)] for index in indices]

    def evict_stale(self, current_version: int, max_staleness: int) -> int:
        """Drop items drawn more than `max_staleness` versions ago. Returns how many went."""
        evicted = 0
        for kind in KINDS:
            store = self._store(kind)
            kept = [item for item in store if current_version - _version(item) <= max_staleness]
            dropped = len(store) - len(kept)
            store.clear()
            store.extend(kept)
            self.counters[f"{kind}_evicted_stale"] += dropped
            evicted += dropped
        return evicted

    def metrics(self) -> dict[str, float]:
        metrics = {f"buffer/{name}": float(count) for name, count in self.counters.items()}
        for kind in KINDS:
            items = self._store(kind)
            metrics[f"buffer/{kind}_size"] = float(len(items))
            if items:
                metrics[f"buffer/{kind}_mean_difficulty"] = float(
                    np.mean([self._difficulty_of(item) for item in items])
                )
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Plain containers (dict/list/str/int/float/None) only, so `torch.load(weights_only=True)` and
        pickle both restore it; image tokens are stored as lists with their dtype."""
        return {
            "capacity": self.capacity,
            "alpha": self.alpha,
            "eps": self.eps,
            "default_difficulty": self.default_difficulty,
            "pair": [_pair_to_dict(pair) for pair in self._pairs],
            "sft": [judged_to_dict(judged) for judged in self._sft],
            "difficulty": dict(self._difficulty),
            "counters": dict(self.counters),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.alpha = float(state["alpha"])
        self.eps = float(state["eps"])
        self.default_difficulty = float(state["default_difficulty"])
        self._pairs = deque(_pair_from_dict(data) for data in state["pair"])
        self._sft = deque(judged_from_dict(data) for data in state["sft"])
        self._difficulty = {prompt_id: float(score) for prompt_id, score in state["difficulty"].items()}
        self.counters = {name: int(count) for name, count in state["counters"].items()}

    def _store(self, kind: Kind) -> deque[Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        return self._pairs if kind == "pair" else self._sft

    def _add(self, kind: Kind, items: Iterable[Item]) -> None:
        store = self._store(kind)
        for item in items:
            store.append(item)
            self.counters[f"{kind}_added"] += 1
            if len(store) > self.capacity:
                store.popleft()  # the oldest entry: it is also the stalest
                self.counters[f"{kind}_evicted_capacity"] += 1

    def _probabilities(self, items: list[Any]) -> np.ndarray | None:
        if self.alpha == 0:
            return None  # uniform
        difficulty = np.array([self._difficulty_of(item) for item in items], dtype=np.float64)
        priority = (np.clip(difficulty, 0.0, None) + self.eps) ** self.alpha
        return priority / priority.sum()

    def _difficulty_of(self, item: Item) -> float:
        return self._difficulty.get(_prompt(item).prompt_id, self.default_difficulty)


class EpochPass:
    """Offline training's epochs: each a full pass over the items there are when it begins, in a seeded
    order without replacement, so every item is trained on exactly once per epoch (drawing each batch
    afresh would leave about a third of them unseen in an epoch of len/batch steps). Priorities do not
    apply: an epoch visits everything. Items added during an epoch (none are, offline) wait for the next.

    `cap_to_first` keeps every epoch as long as the first: once a replay has enlarged the data, an epoch
    visits a seeded subset of the first epoch's size, still without replacement. That is the matched-step
    comparison of a curriculum with its plain recipe (the replayed data shares the plain recipe's budget)."""

    def __init__(self) -> None:
        self.epoch = -1  # epochs begun, minus one
        self.kind: Kind | None = None
        self.order: list[int] = []
        self.cursor = 0
        self.first_size: int | None = None

    def begin(self, kind: Kind, size: int, rng: np.random.Generator, cap_to_first: bool = False) -> int:
        """The next epoch over `size` items of `kind`: returns its index."""
        self.epoch += 1
        order = [int(i) for i in rng.permutation(size)]
        if self.first_size is None:
            self.first_size = size
        elif cap_to_first:
            order = order[: self.first_size]
        self.kind, self.order, self.cursor = kind, order, 0
        return self.epoch

    def active(self, kind: str) -> bool:
        return self.kind == kind

    def steps_left(self, batch_size: int) -> int:
        return -(-(len(self.order) - self.cursor) // batch_size)  # ceil: the last batch may be smaller

    def next_indices(self, batch_size: int) -> list[int]:
        taken = self.order[self.cursor : self.cursor + batch_size]
        self.cursor += len(taken)
        return taken

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "kind": self.kind,
            "order": list(self.order),
            "cursor": self.cursor,
            "first_size": self.first_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.kind = int(state["epoch"]), state["kind"]
        self.order, self.cursor = [int(i) for i in state["order"]], int(state["cursor"])
        self.first_size = state.get("first_size")


def _prompt(item: Item) -> Prompt:
    return item.prompt if isinstance(item, PreferencePair) else item.sample.prompt


def _version(item: Item) -> int:
    return item.policy_version if isinstance(item, PreferencePair) else item.sample.policy_version


# ---------------------------------------------------------------------------------------------------------
# Plain-container conversion for checkpoints.


def _sample_to_dict(sample: Sample) -> dict[str, Any]:
    return {
        "sample_id": sample.sample_id,
        "prompt": dataclasses.asdict(sample.prompt),
        "image_tokens": sample.image_tokens.tolist(),
        "image_tokens_dtype": str(sample.image_tokens.dtype),
        "policy_version": int(sample.policy_version),
        "sampling": dataclasses.asdict(sample.sampling),
        "behaviour_logprobs": None if sample.behaviour_logprobs is None else sample.behaviour_logprobs.tolist(),
        "commit_steps": None if sample.commit_steps is None else sample.commit_steps.tolist(),
    }


def _sample_from_dict(data: Mapping[str, Any]) -> Sample:
    return Sample(
        sample_id=data["sample_id"],
        prompt=Prompt(**data["prompt"]),
        image_tokens=np.asarray(data["image_tokens"], dtype=data["image_tokens_dtype"]),
        policy_version=int(data["policy_version"]),
        sampling=SamplingSettings(**data["sampling"]),
        behaviour_logprobs=_optional_array(data.get("behaviour_logprobs")),
        commit_steps=None if data.get("commit_steps") is None else np.asarray(data["commit_steps"], dtype=np.int64),
    )


def _judgement_to_dict(judgement: Judgement) -> dict[str, Any]:
    return {
        **dataclasses.asdict(judgement),
        "verdict": int(judgement.verdict),
        "score": float(judgement.score),
    }


def _judgement_from_dict(data: Mapping[str, Any]) -> Judgement:
    return Judgement(**{**data, "verdict": Verdict(data["verdict"])})


def judged_to_dict(judged: JudgedSample) -> dict[str, Any]:
    reference = None if judged.reference is None else _judgement_to_dict(judged.reference)
    return {
        "sample": _sample_to_dict(judged.sample),
        "judgement": _judgement_to_dict(judged.judgement),
        "reference": reference,
        "reward": judged.reward,
        "invalid_rewards": judged.invalid_rewards,
    }


def judged_from_dict(data: Mapping[str, Any]) -> JudgedSample:
    reference = None if data["reference"] is None else _judgement_from_dict(data["reference"])
    return JudgedSample(
        sample=_sample_from_dict(data["sample"]),
        judgement=_judgement_from_dict(data["judgement"]),
        reference=reference,
        reward=data.get("reward"),
        invalid_rewards=int(data.get("invalid_rewards", 0)),
    )


def _pair_to_dict(pair: PreferencePair) -> dict[str, Any]:
    return {
        "prompt": dataclasses.asdict(pair.prompt),
        "chosen": _sample_to_dict(pair.chosen),
        "rejected": _sample_to_dict(pair.rejected),
        "chosen_score": float(pair.chosen_score),
        "rejected_score": float(pair.rejected_score),
        "ref_chosen_logp": _optional_float(pair.ref_chosen_logp),
        "ref_rejected_logp": _optional_float(pair.ref_rejected_logp),
        "created_step": int(pair.created_step),
    }


def _pair_from_dict(data: Mapping[str, Any]) -> PreferencePair:
    return PreferencePair(
        prompt=Prompt(**data["prompt"]),
        chosen=_sample_from_dict(data["chosen"]),
        rejected=_sample_from_dict(data["rejected"]),
        chosen_score=float(data["chosen_score"]),
        rejected_score=float(data["rejected_score"]),
        ref_chosen_logp=data["ref_chosen_logp"],
        ref_rejected_logp=data["ref_rejected_logp"],
        created_step=int(data["created_step"]),
    )


def _optional_float(value: float | None) -> float | None:
    # numpy scalars are not plain containers: torch.load(weights_only=True) would refuse them.
    return None if value is None else float(value)


def _optional_array(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)
