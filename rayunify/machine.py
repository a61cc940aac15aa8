"""What this machine really has: usable CPU cores, GPUs (name and memory) and memory, each within the limits a
container or a CPU affinity mask puts on it.

`os.cpu_count()` counts the host's cores, not those this process may use (a 2-core container on a 64-core
host says 64), and a local Ray cluster declares as many logical CPUs as the actors ask for, so neither says
what a run will get. The dry run reports these figures; the local cluster is sized from `usable_cpus`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Machine:
    cpus: int
    memory_gib: float
    gpus: tuple[tuple[str, float], ...]  # (name, memory GiB) per GPU

    def describe(self) -> str:
        gpus = ", ".join(f"{name} ({memory:.0f} GiB)" for name, memory in self.gpus) or "none"
        return f"{self.cpus} CPU cores, {self.memory_gib:.1f} GiB memory, GPUs: {gpus}"


def this_machine() -> Machine:
    return Machine(usable_cpus(), usable_memory_gib(), gpus())


def usable_cpus() -> int:
    """Cores this process may run on: its affinity mask, bounded by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def usable_memory_gib() -> float:
    """Physical memory, bounded by a cgroup memory limit."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 0
    limit = _read_number(_CGROUP / "memory.max") or _read_number(_CGROUP / "memory" / "memory.limit_in_bytes")
    usable = min(physical, limit) if physical and limit else physical or limit or 0
    return usable / GIB


def gpus() -> tuple[tuple[str, float], ...]:
    import torch

    if not torch.cuda.is_available():
        return ()
    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return tuple((p.name, p.total_memory / GIB) for p in props)


def _cgroup_cpu_quota() -> float | None:
    text = _read_text(_CGROUP / "cpu.max")  # cgroup v2: "max 100000" or "200000 100000"
    if text:
        quota, _, period = text.partition(" ")
        return None if quota == "max" else float(quota) / float(period or 100000)
    quota = _read_number(_CGROUP / "cpu" / "cpu.cfs_quota_us")  # cgroup v1; -1: none
    period = _read_number(_CGROUP / "cpu" / "cpu.cfs_period_us")
    return quota / period if quota and quota > 0 and period else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_number(path: Path) -> int | None:
    text = _read_text(path)
    # cgroup v1 reports "no limit" as a number near 2**63
    return int(text) if text and text.isdigit() and int(text) < 2**60 else None
