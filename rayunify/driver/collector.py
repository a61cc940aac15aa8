"""Collection: a step's prompts, generated on the rollout actors and judged on the judge actors.

Prompts are split into one chunk per rollout actor, and a chunk into parts of whole prompts that fit one
generate call (`rollout.max_rows`; one part when it is unset). Each part is a task of its own and its judge
task takes the part's ObjectRef, so images go from rollout to judge without a hop through the driver, and
an actor holds one part's images at a time, never a whole step's: the driver keeps no rollout but the first
(for the step's image grid), so a part's images are freed once it is judged. A rollout task also waits for
the judgement of its chunk's part `PARTS_AHEAD` before it, so a slow judge cannot pile a step's images up in
the object store. Every task is submitted at launch, so each actor runs a step's parts before any weight
push sent after them. A part whose actor died is re-run on a restarted actor with the same seed, so every
prompt is processed exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from rayunify.batching import chunk_seed, chunks
from rayunify.driver.runtime import ActorDied, Actors, ray_get
from rayunify.driver.weight_sync import WeightSync
from rayunify.types import JudgedSample

PARTS_AHEAD = 2  # parts a rollout actor may generate ahead of its judge: one being judged, one waiting


@dataclass
class Part:
    """Whole prompts of one chunk, generated in one task: `first` is the index of prompts[0] in the chunk."""

    chunk: int
    first: int
    prompts: list[Any]
    judged_ref: Any
    rollout_ref: Any  # kept for the launch's first part only (the image grid); None for the others
    actors: tuple[Any, Any]  # the rollout and judge actors it ran on (a retry tells a replaced one)


@dataclass
class Pending:
    """One launched collection; `Collector.finish` waits for it. Parts in chunk order, then prompt order."""

    step: int
    parts: list[Part]


@dataclass
class Collected:
    judged: list[JudgedSample]
    timings: dict[str, float]
    first_rollout: Any  # the first part's Rollout (images for the step's image grid)
    first_judged: list[JudgedSample]


class Collector:
    """Runs collections on the rollout and judge groups and keeps them alive (restarts, weight catch-up).
    `part_prompts`: prompts per generate task (`prompts_per_call`); None: a chunk in one task."""

    def __init__(
        self,
        actors: Actors,
        sync: WeightSync,
        samples_per_prompt: int,
        seed: int,
        reference_fraction: Callable[[int], float],  # the share of a step's samples the guard also scores
        retries: int = 3,
        part_prompts: int | None = None,
    ) -> None:
        self.rollout, self.judges, self.live_judges = actors.rollout, actors.judges, actors.live_judges
        self.sync, self.samples_per_prompt, self.seed = sync, samples_per_prompt, seed
        self.reference_fraction, self.retries, self.part_prompts = reference_fraction, retries, part_prompts
        self.restarts = 0

    def launch(self, step: int, prompts: list[Any], first_chunk: int = 0) -> Pending:
        """Split prompts over rollout actors, and each actor's chunk into parts; each part's judge task waits
        on its rollout (no driver hop). Parts are submitted round-robin over the chunks (a judge actor serving
        several rollout actors takes their parts as they come). `first_chunk` numbers the chunks (seeds): an
        offline build's chunks go on where the previous build chunk stopped."""
        per_chunk = [
            self._parts(first_chunk + c, chunk) for c, chunk in enumerate(chunks(prompts, len(self.rollout)))
        ]
        order = [part for row in zip_longest(*per_chunk) for part in row if part is not None]
        launched: dict[tuple[int, int], Part] = {}
        for c, first, part in order:
            before = first - PARTS_AHEAD * self.part_prompts if self.part_prompts else -1
            after = launched[c, before].judged_ref if (c, before) in launched else None
            launched[c, first] = self._launch_part(step, c, first, part, after)
        parts = [launched[c, f] for row in per_chunk for c, f, _ in row]
        for part in parts[1:]:
            part.rollout_ref = None  # its judge task holds the images until judged; then they are freed
        return Pending(step, parts)

    def _parts(self, chunk: int, prompts: list[Any]) -> list[tuple[int, int, list[Any]]]:
        size = self.part_prompts or max(1, len(prompts))
        return [(chunk, first, prompts[first : first + size]) for first in range(0, len(prompts), size)]

    def _launch_part(self, step: int, chunk: int, first: int, prompts: list[Any], after: Any = None) -> Part:
        """`after`: a judgement the rollout task waits for (Ray resolves it before the task runs)."""
        seed = chunk_seed(self.seed, step, chunk)
        rollout = self.rollout.actors[chunk % len(self.rollout)]
        judge = self.judges.actors[chunk % len(self.judges)]
        rollout_ref = rollout.generate.remote(prompts, self.samples_per_prompt, seed, chunk, first, after)
        judged_ref = judge.judge_rollout.remote(rollout_ref, self.reference_fraction(step), seed)
        return Part(chunk, first, prompts, judged_ref, rollout_ref, (rollout, judge))

    def finish(self, pending: Pending) -> Collected:
        """Wait for every part, re-running a part whose rollout or judge actor died."""
        judged: list[JudgedSample] = []
        generate_s: dict[int, float] = {}
        judge_s: dict[int, float] = {}
        first: tuple[Any, list[JudgedSample]] = (None, [])
        for index, part in enumerate(pending.parts):
            samples, judging, generating, rollout = self._wait(pending.step, part, keep_rollout=index == 0)
            judged.extend(samples)
            generate_s[part.chunk] = generate_s.get(part.chunk, 0.0) + generating
            judge_s[part.chunk] = judge_s.get(part.chunk, 0.0) + judging
            if index == 0:
                first = (rollout, samples)
        timings = {
            "time/generate_s": max(generate_s.values(), default=0.0),
            "time/judge_s": max(judge_s.values(), default=0.0),
            "busy/rollout_s": sum(generate_s.values()),
            "busy/judge_s": sum(judge_s.values()),
        }
        return Collected(judged, timings, *first)

    def _wait(self, step: int, part: Part, keep_rollout: bool) -> tuple[list[JudgedSample], float, float, Any]:
        for attempt in range(self.retries + 1):
            try:
                samples, judging, generating = ray_get(part.judged_ref)
                return samples, judging, generating, ray_get(part.rollout_ref) if keep_rollout else None
            except ActorDied:
                if attempt == self.retries:
                    raise
                if self._on_current_actors(part):  # else an earlier part's retry already replaced its actor
                    self.restart_dead_actors()
                part = self._launch_part(step, part.chunk, part.first, part.prompts)
        raise AssertionError("unreachable")

    def _on_current_actors(self, part: Part) -> bool:
        rollout = self.rollout.actors[part.chunk % len(self.rollout)]
        return part.actors == (rollout, self.judges.actors[part.chunk % len(self.judges)])

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
