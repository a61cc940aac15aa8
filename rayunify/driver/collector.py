"""Collection: a step's prompts, generated on the rollout actors and judged on the judge actors.

Prompts are split into one chunk per rollout actor; each chunk's judge task takes its rollout's ObjectRef,
so images go from rollout to judge without a hop through the driver. A chunk whose actor died is re-run on
a restarted actor with the same seed, so every prompt is processed exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rayunify.batching import chunk_seed, chunks
from rayunify.driver.runtime import ActorDied, Actors, ray_get
from rayunify.driver.weight_sync import WeightSync
from rayunify.types import JudgedSample


@dataclass
class Chunk:
    prompts: list[Any]
    rollout_ref: Any
    judged_ref: Any


@dataclass
class Pending:
    """One launched collection; `Collector.finish` waits for it."""

    step: int
    chunks: list[Chunk]


@dataclass
class Collected:
    judged: list[JudgedSample]
    timings: dict[str, float]
    first_rollout: Any  # chunk 0's Rollout (images for the step's image grid)
    first_judged: list[JudgedSample]


class Collector:
    """Runs collections on the rollout and judge groups and keeps them alive (restarts, weight catch-up)."""

    def __init__(
        self,
        actors: Actors,
        sync: WeightSync,
        samples_per_prompt: int,
        seed: int,
        reference_fraction: Callable[[int], float],  # the share of a step's samples the guard also scores
        retries: int = 3,
    ) -> None:
        self.rollout, self.judges, self.live_judges = actors.rollout, actors.judges, actors.live_judges
        self.sync, self.samples_per_prompt, self.seed = sync, samples_per_prompt, seed
        self.reference_fraction, self.retries = reference_fraction, retries
        self.restarts = 0

    def launch(self, step: int, prompts: list[Any]) -> Pending:
        """Split prompts over rollout actors; each chunk's judge task waits on its rollout (no driver hop)."""
        parts = chunks(prompts, len(self.rollout))
        return Pending(step, [self._launch_chunk(step, c, part) for c, part in enumerate(parts)])

    def _launch_chunk(self, step: int, chunk: int, prompts: list[Any]) -> Chunk:
        seed = chunk_seed(self.seed, step, chunk)
        rollout = self.rollout.actors[chunk % len(self.rollout)]
        judge = self.judges.actors[chunk % len(self.judges)]
        rollout_ref = rollout.generate.remote(prompts, self.samples_per_prompt, seed, chunk)
        return Chunk(prompts, rollout_ref, judge.judge_rollout.remote(rollout_ref, self.reference_fraction(step), seed))

    def finish(self, pending: Pending) -> Collected:
        """Wait for every chunk, re-running a chunk whose rollout or judge actor died."""
        judged: list[JudgedSample] = []
        generate_s, judge_s = [], []
        first: tuple[Any, list[JudgedSample]] = (None, [])
        for index, chunk in enumerate(pending.chunks):
            for attempt in range(self.retries + 1):
                try:
                    samples, seconds = ray_get(chunk.judged_ref)
                    rollout = ray_get(chunk.rollout_ref)
                    break
                except ActorDied:
                    if attempt == self.retries:
                        raise
                    self.restart_dead_actors()
                    chunk = self._launch_chunk(pending.step, index, chunk.prompts)
            judged.extend(samples)
            generate_s.append(rollout.generate_s + rollout.decode_s)
            judge_s.append(seconds)
            if index == 0:
                first = (rollout, samples)
        timings = {
            "time/generate_s": max(generate_s, default=0.0),
            "time/judge_s": max(judge_s, default=0.0),
            "busy/rollout_s": sum(generate_s),
            "busy/judge_s": sum(judge_s),
        }
        return Collected(judged, timings, *first)

    def on_first_rollout(self, method: str, *args: Any) -> Any:
        """Evaluation, probe and export run on rollout actor 0 (it holds the current weights); if it died,
        it is restarted, brought to the current weights, and the call is made again."""
        try:
            return ray_get(getattr(self.rollout.actors[0], method).remote(*args))
        except ActorDied:
            self.restart_dead_actors()
            return ray_get(getattr(self.rollout.actors[0], method).remote(*args))

    def restart_dead_actors(self) -> int:
        """Restart every dead rollout/judge actor and bring it to the current weights."""
        restarted = 0
        for group in (self.rollout, self.judges):
            for index, alive in enumerate(group.alive()):
                if alive:
                    continue
                actor = group.restart(index)
                restarted += 1
                self.sync.replaced(actor, takes_push=group is self.rollout or self.live_judges)
        if not restarted:
            raise RuntimeError("a task failed but every actor is alive: not an actor failure")
        self.restarts += restarted
        return restarted
