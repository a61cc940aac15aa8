"""One owner per run directory: `run.lock` names the process that holds it (pid, its start time, host,
when it started), created with a hard link so two starts cannot both succeed.

A lock whose process is gone (same host, pid not running, or running but a later process that reuses the
pid) is stale: the next start takes it over and says so. A lock from another host cannot be checked from
here; it is refused with the instruction to delete it once that run is known to be gone. Pure: os, json
and socket only (process identity from /proc where there is one).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rayunify.procs import ProcessId, process_id

LOCK_FILE = "run.lock"


class RunLocked(RuntimeError):
    """Another live run owns the directory; the message names it and what to do."""


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    started: str  # wall clock, for people
    process_start: int | None  # /proc start time in clock ticks (None where there is no /proc)

    @classmethod
    def me(cls) -> LockOwner:
        ident = process_id(os.getpid())
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        return cls(os.getpid(), socket.gethostname(), stamp, ident.start if ident else None)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"

    def alive(self) -> bool | None:
        """Whether the owner still runs; None when it is on another host (cannot tell from here)."""
        if self.host != socket.gethostname():
            return None
        if Path("/proc/self/stat").exists():
            if self.process_start is not None:  # this very process, not a later one reusing the pid
                return ProcessId(self.pid, self.process_start).running()
            return process_id(self.pid) is not None
        try:
            os.kill(self.pid, 0)  # no /proc (e.g. macOS): the pid alone
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.owner = LockOwner.me()
        self.taken_over: LockOwner | None = None  # the stale owner replaced, for the start's report

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._link():
            return self
        holder = self.holder()
        alive = holder.alive() if holder is not None else False
        if holder is not None and alive is None:
            raise RunLocked(
                f"{self.path.parent} is locked by {holder.describe()} (another host: cannot check it from "
                f"here); if that run is gone, delete {self.path}"
            )
        if holder is not None and alive:
            raise RunLocked(
                f"{self.path.parent} is in use by {holder.describe()}; wait for it, stop it, "
                "or choose another trainer.run_name"
            )
        self.taken_over = holder or LockOwner(0, "?", "unknown (unreadable lock)", None)
        self.path.unlink(missing_ok=True)
        if not self._link():  # a third start won the race between our unlink and link
            raise RunLocked(f"{self.path.parent} was locked by another start just now; try again")
        return self

    def holder(self) -> LockOwner | None:
        """The lock's owner as written; None if the file is unreadable (a start killed mid-write)."""
        try:
            return LockOwner(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def release(self) -> None:
        """Removes the lock only while it is still ours (never another run's that took over a stale one)."""
        if self.holder() == self.owner:
            self.path.unlink(missing_ok=True)

    def _link(self) -> bool:
        """Write our record to a private file, then hard-link it to the lock: the link either appears whole
        or fails because the lock exists."""
        tmp = self.path.with_name(f".{LOCK_FILE}.{os.getpid()}.{time.monotonic_ns()}")
        tmp.write_text(json.dumps(asdict(self.owner)))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
