"""The offline build (the data set of the paper's offline recipe): every training prompt generated and judged
once, `trainer.build_chunk_prompts` prompts at a time.

Each finished chunk goes to the training-data actor at once, and a build checkpoint (the driver's state at
step 0 and the build's progress; no learner, which has not stepped) is written after it. A build that dies
resumes from the last finished chunk: no finished chunk's prompt is generated or judged again, and the
resumed build ends with the data an uninterrupted one would hold. Chunk k's rollout chunks are seeded as
chunks k·R … k·R+R-1 of step 0 (R rollout actors), so a build of one chunk is seeded as before chunking.
Memory held at once grows with the chunk, not with the number of prompts (the buffer itself aside).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from rayunify.driver.checkpointer import CheckpointError, DriverState
from rayunify.driver.monitor import guard_records
from rayunify.driver.runtime import ray_get
from rayunify.metrics import VerdictRecord
from rayunify.types import JudgedSample, Verdict


class BuildHost(Protocol):
    """What an offline build uses of the run that owns it (the `Trainer`): its actors and collaborators."""

    cfg: Any
    checkpoints: Any  # Checkpointer
    data: Any  # the training-data actor
    collector: Any  # Collector
    monitor: Any  # Monitor
    logger: Any  # RunLogger
    progress: Any  # the progress bar
    hooks: Any  # Hooks (after_build_chunk)

    def driver_state(self) -> DriverState: ...

BUILD_FILE = "build/build.pt"  # under the run's checkpoints directory (cleared with it by a fresh run)
SUMMED = ("data/groups", "data/pairs_made", "data/accepted", "data/discarded", "data/invalid", "data/recovered",
          "time/pair_s")  # fmt: skip


@dataclass
class BuildProgress:
    """What a resumed build needs besides the training data: chunks done, the counts of the build's metrics
    row so far, and the guard's records (the build's row checks the guard once, on every chunk's records)."""

    chunks_done: int = 0
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMMED, 0.0))
    rejected: int = 0
    level_opened: bool = False
    records: list[VerdictRecord] = field(default_factory=list)
    record_prompts: list[str] = field(default_factory=list)  # each record's prompt text (the guard's clusters)
    finished: bool = False  # the build's row is logged: a resumed run goes straight to training

    def add(self, metrics: dict[str, float], judged: list[JudgedSample]) -> None:
        for key in SUMMED:
            self.counts[key] += metrics[key]
        self.rejected += sum(item.judgement.verdict == Verdict.REJECT for item in judged)
        self.level_opened = self.level_opened or bool(metrics["data/level_opened"])
        records, texts = guard_records(judged)
        self.records.extend(records)
        self.record_prompts.extend(texts)
        self.chunks_done += 1

    def metrics(self) -> dict[str, float]:
        """The build's row, as one `add_groups` over every prompt reports it (non-unification: rejected over
        valid verdicts of the whole build, not a mean of the chunks' shares)."""
        valid = int(self.counts["data/accepted"]) + self.rejected
        return {
            **self.counts,
            "data/nonunified": self.rejected / valid if valid else math.nan,
            "data/level_opened": float(self.level_opened),
        }

    def to_plain(self) -> dict[str, Any]:
        records = [(r.category, int(r.own), float(r.own_score), int(r.reference)) for r in self.records]
        return {"chunks_done": self.chunks_done, "counts": dict(self.counts), "rejected": self.rejected,
                "level_opened": self.level_opened, "records": records, "record_prompts": list(self.record_prompts),
                "finished": self.finished}  # fmt: skip

    @classmethod
    def from_plain(cls, state: dict[str, Any]) -> BuildProgress:
        records = [VerdictRecord(c, Verdict(o), s, Verdict(r)) for c, o, s, r in state["records"]]
        return cls(int(state["chunks_done"]), dict(state["counts"]), int(state["rejected"]),
                   bool(state["level_opened"]), records, list(state["record_prompts"]), bool(state["finished"]))  # fmt: skip


def save_build(path: Path, state: DriverState, progress: BuildProgress) -> None:
    """Written whole, then moved into place: a build killed mid-write keeps its previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"driver": state.to_plain(), "build": progress.to_plain()}, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def load_build(path: Path) -> tuple[DriverState, BuildProgress] | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        return DriverState.from_plain(saved["driver"]), BuildProgress.from_plain(saved["build"])
    except Exception as err:  # written whole and renamed, so only damage after the fact gets here
        raise CheckpointError(
            f"build checkpoint {path} is unreadable ({type(err).__name__}); start the build over with --overwrite"
        ) from err


class OfflineBuild:
    """Runs a Trainer's build through its collector, training-data actor, monitor, logger and hooks."""

    def __init__(self, trainer: BuildHost, progress: BuildProgress | None = None) -> None:
        self.trainer = trainer
        self.path = trainer.checkpoints.root / BUILD_FILE
        self.progress = progress or BuildProgress()

    def run(self) -> None:
        t = self.trainer
        if self.progress.finished:
            return
        prompts = ray_get(t.data.all_prompts.remote())
        size = t.cfg.trainer.build_chunk_prompts or max(1, len(prompts))
        total = math.ceil(len(prompts) / size)
        if self.progress.chunks_done:
            t.progress.write(f"offline build: resuming at chunk {self.progress.chunks_done + 1} of {total}")
        for index in range(self.progress.chunks_done, total):
            self.build_chunk(index, prompts[index * size : (index + 1) * size])
            save_build(self.path, t.driver_state(), self.progress)
            t.hooks.after_build_chunk(t, index)
            t.safeguards.stop_if_requested()  # SIGINT/SIGTERM: the build checkpoint just written is where a resume goes on
        # The build's samples are the first fresh ones: the guard checks them once, every chunk's together
        # (its reference already scored a share of them).
        guard = t.monitor.check_records(0, self.progress.records, self.progress.record_prompts)
        t.logger.log(0, {**self.progress.metrics(), **guard})
        self.progress.finished = True
        save_build(self.path, t.driver_state(), self.progress)

    def build_chunk(self, index: int, prompts: list[Any]) -> None:
        """Generate and judge one chunk, then hand it to the training-data actor."""
        t = self.trainer
        collected = t.collector.finish(t.collector.launch(0, prompts, first_chunk=index * len(t.collector.rollout)))
        if index == 0 and collected.first_rollout is not None:
            t.monitor.log_step_images(0, collected.first_rollout, collected.first_judged)
        started = time.perf_counter()
        metrics = ray_get(t.data.add_groups.remote(group_by_prompt(collected.judged), 0))
        metrics["time/pair_s"] = time.perf_counter() - started
        self.progress.add(metrics, collected.judged)
        for warning in t.safeguards.health.observe_verdicts(f"offline build, chunk {index + 1}", [j.judgement for j in collected.judged]):
            t.progress.write(warning)


def group_by_prompt(judged: list[JudgedSample]) -> list[list[JudgedSample]]:
    """Each prompt's samples, prompts in the order they first appear (the order the data actor pairs them)."""
    groups: dict[str, list[JudgedSample]] = {}
    for item in judged:
        groups.setdefault(item.sample.prompt.prompt_id, []).append(item)
    return list(groups.values())
