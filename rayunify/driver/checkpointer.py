"""Checkpoints: the learner's DeepSpeed checkpoint, the driver's own state and the config they were written
with, under `<run>/checkpoints/step_NNNNNN/`.

A checkpoint is written into a temporary directory, every file's size and SHA-256 go into its manifest
(written last), and only then is it renamed into place: a `step_*` directory is whole or absent. A step that
already has an intact checkpoint is never written again. Resume takes the newest checkpoint whose manifest
verifies and reports the damaged ones it skipped; nothing is deleted because a newer one is unreadable (a
damaged directory is moved to `set_aside/` only when its step is saved anew). Rotation deletes only intact
checkpoints older than the `keep` newest intact ones. The `latest` file is a marker for people and scripts;
resume does not trust it.

The driver's state is a typed `DriverState`, saved as plain containers, numbers, strings and torch tensors
only, so it loads with `torch.load(..., weights_only=True)`: loading a checkpoint runs no pickled code.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayunify.driver.monitor import FixedImages, ProbeSet
from rayunify.manifest import ManifestError, manifest_bytes, verify_manifest, write_manifest

STATE_FILE = "driver.pt"
CONFIG_FILE = "config.yaml"  # the config the checkpoint was written with (resume compares against it)
SET_ASIDE = "set_aside"
_TMP_PREFIX = ".tmp-"


@dataclass
class DriverState:
    step: int
    data: dict[str, Any]  # TrainingData.state_dict(): buffer, curriculum, prompt order, counters
    guard: dict[str, Any]  # CoDegradationGuard.state_dict()
    probe: ProbeSet | None
    fixed_images: FixedImages | None
    skipped_batches: int
    log_rows: int | None = None  # rows metrics.jsonl held when this state was saved (a resume drops the ones after)
    divergence: dict[str, Any] = field(default_factory=dict)  # DivergenceGuard.state_dict()

    def to_plain(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "data": self.data,
            "guard": self.guard,
            "probe": _arrays_to_tensors(self.probe),
            "fixed_images": _arrays_to_tensors(self.fixed_images),
            "skipped_batches": self.skipped_batches,
            "log_rows": self.log_rows,
            "divergence": self.divergence,
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
            log_rows=None if state.get("log_rows") is None else int(state["log_rows"]),
            divergence=state.get("divergence", {}),
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


class CheckpointError(RuntimeError):
    """A checkpoint that could not be written or loaded; the message is one line that says what to do."""


@dataclass(frozen=True)
class Found:
    """The newest intact checkpoint (None: there is none) and why each newer one was skipped."""

    path: Path | None
    step: int | None
    skipped: list[str]

    def report(self) -> str:
        return "skipped damaged checkpoints: " + "; ".join(self.skipped)


class Checkpointer:
    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = root, keep

    # ------------------------------------------------------------------ reading
    def step_dirs(self) -> list[Path]:
        """Every `step_*` directory, oldest first (temporaries and set-aside ones are not step directories)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("step_*") if p.is_dir())

    def newest(self) -> Found:
        """The newest checkpoint whose every file matches its manifest (checksums read in full)."""
        skipped = []
        for path in reversed(self.step_dirs()):
            try:
                manifest = verify_manifest(path)
            except ManifestError as err:
                skipped.append(str(err))
                continue
            return Found(path, int(manifest["step"]), skipped)
        return Found(None, None, skipped)

    def latest(self) -> Path | None:
        """The newest intact checkpoint (what a resume takes), or None."""
        return self.newest().path

    def intact(self, step: int) -> Path | None:
        """The checkpoint of `step` when it is there whole (sizes checked; the save is what wrote it)."""
        path = self.root / f"step_{step:06d}"
        try:
            verify_manifest(path, checksums=False)
        except ManifestError:
            return None
        return path

    def load(self, path: Path, learner: Any) -> DriverState:
        try:
            learner.load_checkpoint(str(path / "learner"), tag="learner")
            return load_state(path)
        except Exception as err:  # verified files that still do not load, e.g. written by another DeepSpeed
            raise CheckpointError(f"checkpoint {path} verified but did not load: {_first_line(err)}") from err

    # ------------------------------------------------------------------ writing
    def save(self, state: DriverState, learner: Any, config_yaml: str) -> Path:
        """`learner`: the LearnerGroup (every rank writes its DeepSpeed shards); `config_yaml`: the run's
        config as dump_config writes it."""
        final = self.root / f"step_{state.step:06d}"
        if self.intact(state.step) is not None:
            return final  # this step is saved: never write into a checkpoint that resume may read
        if final.exists():
            self.set_aside(final, "damaged")
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_temporaries()
        tmp = self.root / f"{_TMP_PREFIX}{final.name}"
        try:
            tmp.mkdir()
            learner.save_checkpoint(str(tmp / "learner"), tag="learner")
            self.write_state(state.to_plain(), tmp / STATE_FILE)
            (tmp / CONFIG_FILE).write_text(config_yaml)
            write_manifest(tmp, {"step": state.step, "log_rows": state.log_rows})
            verify_manifest(tmp, checksums=False)
            os.replace(tmp, final)
            _fsync_dir(self.root)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            failure = self._save_failed(err, final) if isinstance(err, Exception) else err
            if failure is err:
                raise
            raise failure from err
        self._mark_latest(final)
        self.rotate()
        return final

    def write_state(self, plain: dict[str, Any], path: Path) -> None:
        """The file-write boundary of the driver's state (tests inject a full disk here)."""
        torch.save(plain, path)

    def rotate(self) -> None:
        intact = [p for p in self.step_dirs() if self.intact(int(p.name.split("_")[1])) is not None]
        for old in intact[: -self.keep or None]:
            shutil.rmtree(old, ignore_errors=True)

    def set_aside(self, path: Path, why: str) -> Path:
        target = self.root / SET_ASIDE / f"{path.name}.{why}.{time.strftime('%Y%m%d-%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return target

    def remove_temporaries(self) -> None:
        """Directories of saves that never finished (a kill mid-save); the run lock says no save is running."""
        for tmp in self.root.glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def clear(self) -> None:
        """`trainer.overwrite`: a fresh start deletes the old run's checkpoints (the user asked for it)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def _mark_latest(self, path: Path) -> None:
        (self.root / "latest.tmp").write_text(path.name)
        os.replace(self.root / "latest.tmp", self.root / "latest")

    def _save_failed(self, err: Exception, final: Path) -> Exception:
        from rayunify.driver.runtime import is_actor_death

        if is_actor_death(err):  # the learner is gone: the trainer names the actor and the last checkpoint
            return err
        last = self.newest().path
        kept = f"the last intact checkpoint is {last}" if last else "no earlier checkpoint exists"
        if _is_disk_full(err):
            free = shutil.disk_usage(self.root).free
            need = _checkpoint_bytes(last)
            wanted = f"about {need / 2**20:.1f} MiB needed (the last checkpoint's size)" if need else "more needed"
            return CheckpointError(
                f"disk full writing checkpoint {final.name} under {self.root}: {free / 2**20:.1f} MiB free, {wanted}; "
                f"the partial copy was removed and {kept}: free space, then rerun with --resume"
            )
        return CheckpointError(f"checkpoint {final.name} could not be written ({_first_line(err)}); {kept}")


def load_state(path: Path) -> DriverState:
    return DriverState.from_plain(torch.load(path / STATE_FILE, weights_only=True))


def _is_disk_full(err: BaseException | None) -> bool:
    for _ in range(8):  # the chain of causes (a rank's error inside Ray's), never a cycle
        if err is None:
            return False
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(err):  # a rank's OSError, as Ray hands it back as text
            return True
        err = getattr(err, "cause", None) or err.__cause__
    return False


def _checkpoint_bytes(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return manifest_bytes(verify_manifest(path, checksums=False))
    except ManifestError:
        return 0


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "cause", None) or err).strip()
    return (text.splitlines() or [type(err).__name__])[-1 if text.startswith("Traceback") else 0]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
