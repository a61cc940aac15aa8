"""Curriculum: which prompts to train on, and when to retry the ones the model failed.

Three parts, each resumable (`state_dict()` is JSON-serialisable) and each with `metrics()`:
  DiscardPool        the paper's Algorithm 2 (curriculum replay): prompts with no accepted image wait here
                     and are regenerated and rejudged by the CURRENT model at scheduled epochs/steps.
  DifficultyTracker  a continuous per-prompt difficulty, 1 − smoothed pass rate of the model's own judge.
  AdmissionSchedule  prompts bucketed into ordered levels; the next level opens once the pass rate on the
                     admitted prompts rises above a threshold.

Pure: numpy/stdlib only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rayunify.pairing import GroupOutcome
from rayunify.types import JudgedSample, Judgement, Prompt, Verdict


def _prompt_to_dict(prompt: Prompt) -> dict[str, Any]:
    return dataclasses.asdict(prompt)


def _prompt_from_dict(data: Mapping[str, Any]) -> Prompt:
    return Prompt(**data)


# ---------------------------------------------------------------------------------------------------------
# Curriculum replay (Algorithm 2)


class DiscardPool:
    """Prompts whose whole group was rejected, waiting for a scheduled replay.

    `replay_at` lists the epochs (or steps: the driver picks the unit and uses it consistently) at which a
    replay happens; the paper replays once, at epoch 10. A replay regenerates and rejudges every pooled
    prompt; prompts with any accepted image leave the pool and their accepted images join the training set.
    Prompts that fail again stay, for a later replay if one is scheduled.
    """

    def __init__(self, replay_at: Iterable[int] = (10,)) -> None:
        self.replay_at: list[int] = sorted({int(when) for when in replay_at})
        self._prompts: dict[str, Prompt] = {}  # insertion-ordered: replays are deterministic
        self._replayed_at: set[int] = set()
        self.added_total = 0
        self.recovered_prompts_total = 0
        self.recovered_samples_total = 0

    def __len__(self) -> int:
        return len(self._prompts)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._prompts

    def add(self, prompts: Iterable[Prompt]) -> int:
        """Put prompts into the pool (a prompt already there is not added twice). Returns how many are new."""
        new = 0
        for prompt in prompts:
            if prompt.prompt_id not in self._prompts:
                self._prompts[prompt.prompt_id] = prompt
                new += 1
        self.added_total += new
        return new

    def add_discarded(self, outcomes: Iterable[GroupOutcome]) -> int:
        """Pool the prompts of every outcome that had no accepted image."""
        return self.add(outcome.prompt for outcome in outcomes if outcome.discard)

    def prompts(self) -> list[Prompt]:
        """The pooled prompts, oldest first: what the driver regenerates at a replay."""
        return list(self._prompts.values())

    def due(self, when: int) -> bool:
        """True when a replay is scheduled at `when`, has not run there yet, and the pool is not empty."""
        return when in self.replay_at and when not in self._replayed_at and bool(self._prompts)

    def replay_outcomes(
        self, outcomes: Iterable[GroupOutcome], when: int | None = None
    ) -> list[JudgedSample]:
        """Take the rejudged groups of a replay; return the recovered (accepted) samples.

        A prompt with any accepted image leaves the pool. Outcomes for prompts not in the pool are ignored
        (they were not part of this replay). `when` marks the scheduled replay as done, so `due(when)` turns
        False and a resumed run does not replay twice.
        """
        recovered: list[JudgedSample] = []
        for outcome in outcomes:
            prompt_id = outcome.prompt.prompt_id
            if prompt_id in self._prompts and outcome.accepted:
                del self._prompts[prompt_id]
                recovered.extend(outcome.accepted)
                self.recovered_prompts_total += 1
        self.recovered_samples_total += len(recovered)
        if when is not None:
            self._replayed_at.add(int(when))
        return recovered

    def metrics(self) -> dict[str, float]:
        return {
            "discard_pool/size": float(len(self._prompts)),
            "discard_pool/added_total": float(self.added_total),
            "discard_pool/recovered_prompts": float(self.recovered_prompts_total),
            "discard_pool/recovered_samples": float(self.recovered_samples_total),
            "discard_pool/replays_done": float(len(self._replayed_at)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "replay_at": list(self.replay_at),
            "prompts": [_prompt_to_dict(prompt) for prompt in self._prompts.values()],
            "replayed_at": sorted(self._replayed_at),
            "added_total": self.added_total,
            "recovered_prompts_total": self.recovered_prompts_total,
            "recovered_samples_total": self.recovered_samples_total,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.replay_at = [int(when) for when in state["replay_at"]]
        prompts = [_prompt_from_dict(data) for data in state["prompts"]]
        self._prompts = {prompt.prompt_id: prompt for prompt in prompts}
        self._replayed_at = {int(when) for when in state["replayed_at"]}
        self.added_total = int(state["added_total"])
        self.recovered_prompts_total = int(state["recovered_prompts_total"])
        self.recovered_samples_total = int(state["recovered_samples_total"])


# ---------------------------------------------------------------------------------------------------------
# Continuous difficulty


@dataclasses.dataclass
class _PromptStats:
    passes: float = 0.0  # (decayed) count of ACCEPT verdicts
    trials: float = 0.0  # (decayed) count of valid verdicts
    score_sum: float = 0.0  # (decayed) sum of soft scores P("1") over valid verdicts


class DifficultyTracker:
    """Per-prompt difficulty in [0, 1]: 1 − smoothed pass rate of the model's own judge.

    pass rate = (prior_passes + passes) / (prior_passes + prior_fails + trials), the posterior mean of a
    Beta(prior_passes, prior_fails) prior, so a prompt seen once is not called impossible. With decay < 1
    old counts shrink by `decay` at every update of that prompt (an EMA): the policy improves, so old
    verdicts describe an older model.

    margin_weight (0 by default) mixes in the judge's margin: difficulty = (1 − w)(1 − pass rate) +
    w (1 − smoothed mean soft score). Binary verdicts cannot tell a group of near-misses (scores 0.45)
    from a group of confident rejections (0.02); the soft score can. INVALID verdicts are ignored.
    """

    def __init__(
        self,
        prior_passes: float = 1.0,
        prior_fails: float = 1.0,
        decay: float = 1.0,
        margin_weight: float = 0.0,
        histogram_bins: int = 5,
    ) -> None:
        if prior_passes <= 0 or prior_fails <= 0:
            raise ValueError(f"Beta prior counts must be > 0, got {prior_passes}, {prior_fails}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if not 0.0 <= margin_weight <= 1.0:
            raise ValueError(f"margin_weight must be in [0, 1], got {margin_weight}")
        if histogram_bins < 1:
            raise ValueError(f"histogram_bins must be >= 1, got {histogram_bins}")
        self.prior_passes = prior_passes
        self.prior_fails = prior_fails
        self.decay = decay
        self.margin_weight = margin_weight
        self.histogram_bins = histogram_bins
        self._stats: dict[str, _PromptStats] = {}

    def __len__(self) -> int:
        return len(self._stats)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._stats

    def update(self, prompt_id: str, judgements: Iterable[Judgement]) -> None:
        """Fold one round of the judge's verdicts on this prompt's images into its statistics."""
        valid = [judgement for judgement in judgements if judgement.verdict != Verdict.INVALID]
        if not valid:
            return
        stats = self._stats.setdefault(prompt_id, _PromptStats())
        stats.passes = self.decay * stats.passes + sum(1 for judgement in valid if judgement.accepted)
        stats.trials = self.decay * stats.trials + len(valid)
        stats.score_sum = self.decay * stats.score_sum + sum(judgement.score for judgement in valid)

    def update_group(self, group: Sequence[JudgedSample]) -> None:
        """`update` from one prompt's judged group (the rollout's natural unit)."""
        if group:
            self.update(group[0].sample.prompt.prompt_id, (judged.judgement for judged in group))

    def pass_rate(self, prompt_id: str) -> float:
        stats = self._stats.get(prompt_id, _PromptStats())
        return (self.prior_passes + stats.passes) / self._denominator(stats)

    def difficulty(self, prompt_id: str) -> float:
        """1 − smoothed pass rate (blended with the margin term); an unseen prompt gets the prior's value."""
        binary = 1.0 - self.pass_rate(prompt_id)
        if self.margin_weight == 0.0:
            return binary
        stats = self._stats.get(prompt_id, _PromptStats())
        # The soft score is smoothed with the same prior mean and weight as the pass rate.
        soft = (self.prior_passes + stats.score_sum) / self._denominator(stats)
        return (1.0 - self.margin_weight) * binary + self.margin_weight * (1.0 - soft)

    def scores(self) -> dict[str, float]:
        """Difficulty of every tracked prompt: what the replay buffer's priorities are built from."""
        return {prompt_id: self.difficulty(prompt_id) for prompt_id in self._stats}

    def ranking(self) -> list[str]:
        """Tracked prompt ids, hardest first (ties by prompt_id)."""
        return sorted(self._stats, key=lambda prompt_id: (-self.difficulty(prompt_id), prompt_id))

    def mean_pass_rate(self, prompt_ids: Iterable[str] | None = None) -> float:
        """Mean smoothed pass rate over the given prompts that have been observed (all tracked if None).
        NaN when none has been observed: "no measurement" must not read as a pass rate of 0."""
        ids = self._stats.keys() if prompt_ids is None else [pid for pid in prompt_ids if pid in self._stats]
        rates = [self.pass_rate(prompt_id) for prompt_id in ids]
        return float(np.mean(rates)) if rates else math.nan

    def histogram(self) -> list[int]:
        """Counts of tracked prompts per difficulty bin, bins of equal width over [0, 1]."""
        values = list(self.scores().values())
        counts, _ = np.histogram(values, bins=self.histogram_bins, range=(0.0, 1.0))
        return [int(count) for count in counts]

    def metrics(self) -> dict[str, float]:
        values = list(self.scores().values())
        metrics = {
            "difficulty/tracked_prompts": float(len(values)),
            "difficulty/mean": float(np.mean(values)) if values else math.nan,
            "difficulty/mean_pass_rate": self.mean_pass_rate(),
        }
        width = 1.0 / self.histogram_bins
        for index, count in enumerate(self.histogram()):
            metrics[f"difficulty/hist_{index * width:.2f}-{(index + 1) * width:.2f}"] = float(count)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "prior_passes": self.prior_passes,
            "prior_fails": self.prior_fails,
            "decay": self.decay,
            "margin_weight": self.margin_weight,
            "histogram_bins": self.histogram_bins,
            "stats": {prompt_id: dataclasses.asdict(stats) for prompt_id, stats in self._stats.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.prior_passes = float(state["prior_passes"])
        self.prior_fails = float(state["prior_fails"])
        self.decay = float(state["decay"])
        self.margin_weight = float(state["margin_weight"])
        self.histogram_bins = int(state["histogram_bins"])
        self._stats = {prompt_id: _PromptStats(**stats) for prompt_id, stats in state["stats"].items()}

    def _denominator(self, stats: _PromptStats) -> float:
        return self.prior_passes + self.prior_fails + stats.trials


# ---------------------------------------------------------------------------------------------------------
# Admission by level


class AdmissionSchedule:
    """Ordered levels of prompts; level k+1 opens once the admitted prompts' pass rate is high enough.

    Level 0 is admitted from the start. Each `update(pass_rate)` with the measured pass rate over the
    admitted prompts (e.g. `tracker.mean_pass_rate(schedule.admitted_ids())`) counts a success when the
    rate is >= pass_threshold; after `patience` successes in a row the next level opens (one level per
    update, and the streak restarts, so the new, harder prompts get measured before the next opens).
    Build the levels with `from_categories` or `from_difficulty`.
    """

    def __init__(
        self, prompt_levels: Mapping[str, int], pass_threshold: float = 0.5, patience: int = 1
    ) -> None:
        if not prompt_levels:
            raise ValueError("an admission schedule needs at least one prompt")
        if min(prompt_levels.values()) < 0:
            raise ValueError("levels must be >= 0")
        if not 0.0 <= pass_threshold <= 1.0:
            raise ValueError(f"pass_threshold must be in [0, 1], got {pass_threshold}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.prompt_levels = {prompt_id: int(level) for prompt_id, level in prompt_levels.items()}
        self.num_levels = max(self.prompt_levels.values()) + 1
        self.pass_threshold = pass_threshold
        self.patience = patience
        self.level = 0
        self._streak = 0
        self.last_pass_rate = math.nan

    @classmethod
    def from_categories(
        cls, prompts: Iterable[Prompt], category_order: Sequence[str], **kwargs: Any
    ) -> AdmissionSchedule:
        """Level = position of the prompt's category in `category_order` (easiest category first)."""
        level_of_category = {category: level for level, category in enumerate(category_order)}
        prompt_levels: dict[str, int] = {}
        for prompt in prompts:
            if prompt.category not in level_of_category:
                raise ValueError(
                    f"prompt {prompt.prompt_id!r} has category {prompt.category!r}, which is not in "
                    f"category_order {list(category_order)}"
                )
            prompt_levels[prompt.prompt_id] = level_of_category[prompt.category]
        return cls(prompt_levels, **kwargs)

    @classmethod
    def from_difficulty(
        cls, prompt_ids: Iterable[str], tracker: DifficultyTracker, num_levels: int, **kwargs: Any
    ) -> AdmissionSchedule:
        """Levels = difficulty quantiles: prompts sorted easiest first (ties by id), cut into `num_levels`
        groups of near-equal size. Unseen prompts get the prior's difficulty."""
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        ordered = sorted(prompt_ids, key=lambda prompt_id: (tracker.difficulty(prompt_id), prompt_id))
        chunks = np.array_split(np.arange(len(ordered)), num_levels)
        prompt_levels = {ordered[index]: level for level, chunk in enumerate(chunks) for index in chunk}
        return cls(prompt_levels, **kwargs)

    def admitted(self, prompt: Prompt | str) -> bool:
        prompt_id = prompt if isinstance(prompt, str) else prompt.prompt_id
        if prompt_id not in self.prompt_levels:
            raise KeyError(f"prompt {prompt_id!r} has no level in this admission schedule")
        return self.prompt_levels[prompt_id] <= self.level

    def admitted_ids(self) -> list[str]:
        return [prompt_id for prompt_id, level in self.prompt_levels.items() if level <= self.level]

    def update(self, pass_rate: float) -> bool:
        """Record the measured pass rate over admitted prompts; True when this opened the next level.
        A NaN rate (nothing measured yet) neither counts nor breaks the streak."""
        if math.isnan(pass_rate):
            return False
        self.last_pass_rate = pass_rate
        if self.level >= self.num_levels - 1:
            return False
        self._streak = self._streak + 1 if pass_rate >= self.pass_threshold else 0
        if self._streak < self.patience:
            return False
        self.level += 1
        self._streak = 0
        return True

    def metrics(self) -> dict[str, float]:
        return {
            "admission/level": float(self.level),
            "admission/num_levels": float(self.num_levels),
            "admission/admitted_prompts": float(len(self.admitted_ids())),
            "admission/pass_rate": self.last_pass_rate,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "prompt_levels": dict(self.prompt_levels),
            "pass_threshold": self.pass_threshold,
            "patience": self.patience,
            "level": self.level,
            "streak": self._streak,
            # JSON has no NaN in strict mode: None stands for "not measured yet".
            "last_pass_rate": None if math.isnan(self.last_pass_rate) else self.last_pass_rate,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.prompt_levels = {prompt_id: int(level) for prompt_id, level in state["prompt_levels"].items()}
        self.num_levels = max(self.prompt_levels.values()) + 1
        self.pass_threshold = float(state["pass_threshold"])
        self.patience = int(state["patience"])
        self.level = int(state["level"])
        self._streak = int(state["streak"])
        last = state["last_pass_rate"]
        self.last_pass_rate = math.nan if last is None else float(last)
