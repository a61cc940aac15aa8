"""How a run stops: on request (SIGINT, SIGTERM) at the next step boundary with a checkpoint, or on a fault
with one line that says what happened and what to do.

The first SIGINT or SIGTERM only sets a flag: the loop finishes the step it is in, writes a checkpoint
and stops (exit 130 or 143, with the command that resumes). A second one stops at once, without a new
checkpoint (the last intact one is named). Handlers are installed after Ray started (Ray's driver installs
its own SIGTERM handler, which exits at once) and restored on exit.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class RunStopped(RuntimeError):
    """The run ended early; `str()` is the one line for the user, `exit_code` the process's."""

    exit_code = 1


class LearnerFailure(RunStopped):
    """The learner could not take a step (e.g. a non-finite loss); the message says how to resume."""


class StopRequested(RunStopped):
    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 1)


class StopFlag:
    """Set by the first SIGINT/SIGTERM; the trainer reads it at step boundaries."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: stop now
            self.signum = signum
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint (send it again to stop "
            "at once, without one)",
            file=sys.stderr,
            flush=True,
        )


STOP = StopFlag()


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """SIGINT and SIGTERM set STOP while the block runs (the main thread only, as Python's signals are)."""
    STOP.signum = None
    previous = {sig: signal.signal(sig, STOP.handle) for sig in EXIT_CODES}
    try:
        yield STOP
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same arguments, --resume instead of any resume or
    overwrite flag (an overwrite would delete the checkpoint just written)."""
    kept = [
        a
        for a in argv
        if not a.startswith(("--resume", "--overwrite", "trainer.resume=", "trainer.overwrite="))
    ]
    return " ".join(["rayunify", "train", *kept, "--resume"])


def actor_role(err: BaseException) -> str:
    """Which of the run's actors an actor-death error names (Ray's message carries the class name)."""
    text = str(err)
    for cls, role in (("LearnerWorker", "a learner rank"), ("TrainingData", "the training-data actor"),
                      ("RolloutWorker", "a rollout actor"), ("JudgeWorker", "a judge actor")):  # fmt: skip
        if cls in text:
            return role
    return "an actor"


def last_good(path: Path | None) -> str:
    return f"the last intact checkpoint is {path}" if path else "no checkpoint was written yet"


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def actor_lost(err: BaseException, step: int, checkpoints: Any) -> RunStopped:
    """The training data or a learner rank died: its state went with it, so no new checkpoint can be written."""
    last = checkpoints.newest().path
    return RunStopped(
        f"{actor_role(err)} was lost after step {step} ({_first_line(err)}); no new checkpoint can be written "
        f"(its state is gone); {last_good(last)}: rerun with --resume"
    )


class Diverged(RunStopped):
    """`guard.divergence` stopped the run."""


def diverged(problem: str, step: int, checkpoints: Any) -> Diverged:
    """The gradient of step `step + 1` was computed on the weights step `step` wrote: checkpoints from that
    step on are moved to set_aside/ (not deleted), so a resume starts from the last one written before."""
    suspect = [p for p in checkpoints.step_dirs() if int(p.name.split("_")[1]) >= max(step, 1)]
    for path in suspect:
        checkpoints.set_aside(path, "diverged")
    moved = (
        f"{len(suspect)} checkpoint(s) from step {step} on moved to {checkpoints.root / 'set_aside'}; "
        if suspect
        else ""
    )
    last = checkpoints.newest().path
    todo = "lower learner.lr and rerun with --resume" if last else "lower learner.lr and start again"
    return Diverged(f"{problem}; {moved}{last_good(last)}: {todo}")
