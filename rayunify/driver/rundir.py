"""What a start does to its run directory before any actor exists: take the run's lock, then decide between
resuming and starting fresh, and refuse (one line, exit 2) whatever would lose or mix up finished work.

- `trainer.resume=true`: the newest intact checkpoint (damaged newer ones are skipped and named), or the
  offline build's checkpoint; nothing intact refuses. `auto`: the same, or a fresh start when the directory
  holds no checkpoint at all.
- The resumed config is compared with the checkpoint's (`rayunify.config.resume`): changed keys that shape
  what the checkpoint holds refuse; the others are reported.
- A fresh start in a directory that holds checkpoints refuses unless `trainer.overwrite=true`; a fresh start
  moves an old `final_model/` (and its `final.json`) and `metrics.jsonl` to `superseded/`, so `rayunify eval
  --run` never scores a previous run's model and no log is lost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rayunify.config import Config
from rayunify.config.resume import compare
from rayunify.driver.build import BUILD_FILE
from rayunify.driver.checkpointer import CONFIG_FILE, Checkpointer, Found
from rayunify.preflight import UserError
from rayunify.runlock import RunLock, RunLocked

FINAL_MODEL, FINAL_RECORD, METRICS, SUPERSEDED = "final_model", "final.json", "metrics.jsonl", "superseded"


@dataclass
class StartPlan:
    resume: bool
    found: Found = field(default_factory=lambda: Found(None, None, []))  # the step checkpoint resumed from


class RunDirectory:
    def __init__(self, cfg: Config, say: Callable[[str], None] = print) -> None:
        self.cfg, self.say = cfg, say
        self.path = Path(cfg.trainer.output_dir) / cfg.trainer.run_name
        self.checkpoints = Checkpointer(self.path / "checkpoints", cfg.trainer.keep_checkpoints)
        self.lock = RunLock(self.path)

    def open(self) -> StartPlan:
        """Lock, then plan the start; the lock is released again if the start is refused."""
        try:
            self.lock.acquire()
        except RunLocked as err:
            raise UserError(str(err)) from None
        if self.lock.taken_over is not None:
            self.say(f"took over the stale lock of {self.lock.taken_over.describe()} (that process is gone)")
        try:
            return self._plan()
        except BaseException:
            self.lock.release()
            raise

    def _plan(self) -> StartPlan:
        resume, found = self.cfg.trainer.resume, self.checkpoints.newest()
        build = self.checkpoints.root / BUILD_FILE
        if resume and (found.path is not None or build.is_file()):
            if found.skipped:
                self.say(found.report())
            self._check_config(found.path / CONFIG_FILE if found.path else self.path / "config.yaml", found)
            return StartPlan(True, found)
        holds = bool(self.checkpoints.step_dirs()) or build.is_file()
        if resume is True or (resume == "auto" and holds):
            why = "; ".join(found.skipped) if found.skipped else "it holds no checkpoint"
            fresh = (
                "start over with --overwrite (deletes them)"
                if holds
                else "start fresh without --resume (or --resume=auto)"
            )
            raise UserError(f"nothing to resume in {self.path}: {why}; {fresh}")
        if holds and not self.cfg.trainer.overwrite:
            newest = found.path.name if found.path else "damaged ones only"
            raise UserError(
                f"{self.path} holds checkpoints ({newest}): continue it with --resume, or start over with "
                "--overwrite (deletes them), or choose another trainer.run_name"
            )
        if holds:
            self.checkpoints.clear()
            self.say(f"--overwrite: deleted the checkpoints of the previous run in {self.path}")
        self._supersede()
        return StartPlan(False)

    def _check_config(self, saved_path: Path, found: Found) -> None:
        saved = _read_config(saved_path)
        if saved is None:
            self.say(f"no recorded config at {saved_path}: the resumed config cannot be compared")
            return
        changes = compare(saved, self.cfg.model_dump(mode="json"))
        if changes.refused:
            raise UserError(changes.refusal(str(found.path or self.checkpoints.root / BUILD_FILE)))
        if changes.allowed:
            self.say(changes.report())

    def _supersede(self) -> None:
        """A fresh start keeps what a previous run under this name left (its exported model and its log) in
        superseded/, so neither is mistaken for this run's."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name in (FINAL_MODEL, FINAL_RECORD, METRICS):
            old = self.path / name
            if not old.exists():
                continue
            target = self.path / SUPERSEDED / f"{name}.{stamp}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, target)
            if name != FINAL_RECORD:
                self.say(f"moved the previous run's {name} to {target} (this run starts fresh)")


def _read_config(path: Path) -> dict[str, Any] | None:
    """A recorded config as the current code would fill it (defaults of newer keys included); None if absent."""
    if not path.is_file():
        return None
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        return Config.model_validate(raw).model_dump(mode="json")
    except ValueError:  # written by an older version with keys renamed since: compare what is there
        return raw
