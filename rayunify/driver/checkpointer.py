"""Checkpoints: the learner's DeepSpeed checkpoint plus the driver's own state, under
`<run>/checkpoints/step_NNNNNN/`, with a `latest` marker written last (atomically) and old ones rotated out.

The driver's state is a typed `DriverState`, saved as plain containers, numbers, strings and torch tensors
only, so it loads with `torch.load(..., weights_only=True)`: loading a checkpoint runs no pickled code.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayunify.driver.monitor import FixedImages, ProbeSet

STATE_FILE = "driver.pt"


@dataclass
class DriverState:
    step: int
    data: dict[str, Any]  # TrainingData.state_dict(): buffer, curriculum, prompt order, counters
    guard: dict[str, Any]  # CoDegradationGuard.state_dict()
    probe: ProbeSet | None
    fixed_images: FixedImages | None
    skipped_batches: int

    def to_plain(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "data": self.data,
            "guard": self.guard,
            "probe": _arrays_to_tensors(self.probe),
            "fixed_images": _arrays_to_tensors(self.fixed_images),
            "skipped_batches": self.skipped_batches,
        }

    @classmethod
    def from_plain(cls, state: dict[str, Any]) -> DriverState:
        return cls(
            step=int(state["step"]),
            data=state["data"],
            guard=state["guard"],
            probe=_tensors_to_arrays(ProbeSet, state["probe"]),
            fixed_images=_tensors_to_arrays(FixedImages, state["fixed_images"]),
            skipped_batches=int(state["skipped_batches"]),
        )


def _arrays_to_tensors(item: Any) -> dict[str, Any] | None:
    if item is None:
        return None
    fields = dataclasses.asdict(item)
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()}


def _tensors_to_arrays(cls: Any, fields: dict[str, Any] | None) -> Any:
    if fields is None:
        return None
    return cls(**{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in fields.items()})


class Checkpointer:
    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = root, keep

    def clear(self) -> None:
        """A fresh (not resumed) run must never resume from an older run's checkpoints."""
        shutil.rmtree(self.root, ignore_errors=True)

    def save(self, state: DriverState, learner: Any) -> Path:
        """`learner`: the LearnerGroup (every rank writes its DeepSpeed shards)."""
        path = self.root / f"step_{state.step:06d}"
        path.mkdir(parents=True, exist_ok=True)
        learner.save_checkpoint(str(path / "learner"), tag="learner")
        torch.save(state.to_plain(), path / STATE_FILE)
        (self.root / "latest.tmp").write_text(path.name)
        os.replace(self.root / "latest.tmp", self.root / "latest")
        for old in sorted(p for p in self.root.glob("step_*") if p != path)[: -self.keep + 1 or None]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def latest(self) -> Path | None:
        marker = self.root / "latest"
        if not marker.is_file():
            return None
        path = self.root / marker.read_text().strip()
        return path if (path / STATE_FILE).is_file() else None

    def load(self, path: Path, learner: Any) -> DriverState:
        learner.load_checkpoint(str(path / "learner"), tag="learner")
        return load_state(path)


def load_state(path: Path) -> DriverState:
    return DriverState.from_plain(torch.load(path / STATE_FILE, weights_only=True))
