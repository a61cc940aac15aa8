"""Helpers for the servers we start as subprocesses (the Ray head, a vLLM judge server): free ports, waiting
until one answers over HTTP, reading its log, and stopping it with everything it started.

Standard library only. Every server runs in a process group of its own (`start_new_session=True`), so
stopping it stops its children too, and nothing else on the machine. For processes we did not start
ourselves (a dead driver's Ray cluster), `ProcessId` names a process by pid and start time, so a kill never
reaches an unrelated process that reuses the pid.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    return free_ports(1, host)[0]


# Ray's workers take ports 10002-19999 by default; ours start above them.
_FIRST_PORT = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct ports free on `host` right now, for a server that binds them a moment later.

    They come from between Ray's worker ports and the kernel's ephemeral range. A port the kernel hands out
    (bind to 0) goes back to the pool that outgoing connections draw their local ports from, and on a busy
    node (Ray and gloo open hundreds) one of those can take it before our server binds it: EADDRINUSE. The
    sockets are held open together, so no port is handed out twice.
    """
    candidates = _ports_below_ephemeral_range()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for port in candidates:
            if len(ports) == count:
                break
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            with contextlib.suppress(OSError):
                sock.bind((host, port))
                ports.append(port)
        while len(ports) < count:  # no such range here (or all taken): what the kernel picks
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _ports_below_ephemeral_range(tries: int = 256) -> list[int]:
    """Up to `tries` distinct ports from [_FIRST_PORT, start of the ephemeral range), in random order (so
    processes asking at once rarely try the same ones); [] where the range cannot be read."""
    try:
        ephemeral_start = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    span = range(_FIRST_PORT, ephemeral_start)
    return random.SystemRandom().sample(span, min(tries, len(span)))


# What a server's log or error says when a port it was handed is taken: the kernel's words (as Python and
# torch's TCPStore print them) and Ray's.
_PORT_CLASH_SIGNS = ("Address already in use", "EADDRINUSE", "used by other components", "port is in use")


def is_port_clash(text: str) -> bool:
    """Whether `text` (a log, an error message) says a port was taken before its server bound it."""
    return any(sign in text for sign in _PORT_CLASH_SIGNS)


def log_tail(path: str | os.PathLike, chars: int = 4000) -> str:
    """The end of a server's log file ("" if there is none): what goes into an error about that server."""
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class ProcessExited(RuntimeError):
    """The server exited before it answered; the message holds its exit code and its log's tail."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def wait_for_http_ok(
    process: subprocess.Popen, probe_url: str, timeout_s: float, *, name: str, log_path: str | os.PathLike
) -> None:
    """Poll `probe_url` until it answers 200.

    Raises ProcessExited when `process` ends first, TimeoutError after `timeout_s`; both messages name the
    server and end with its log's tail.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_tail(log_path)
            raise ProcessExited(f"{name} exited with {process.returncode}:\n{log}", log)
        with contextlib.suppress(OSError), urllib.request.urlopen(probe_url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{name} not up after {timeout_s:.0f} s ({probe_url}):\n{log_tail(log_path)}")


def stop_process_group(
    leader: subprocess.Popen, timeout_s: float = 30.0, *, term_leader_only: bool = False, kill_wait_s: float = 10.0,
) -> None:  # fmt: skip
    """Stop `leader` and every process of its group: TERM, then KILL what is left after `timeout_s`.

    `term_leader_only`: TERM the leader alone and wait for it to exit, for a leader that stops its own
    children in order (`ray start --block`); otherwise the whole group gets TERM and we wait until all of it
    is gone (vLLM's engine workers exit after the server). Safe to call twice.
    """
    if term_leader_only:
        if leader.poll() is None:
            leader.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                leader.wait(timeout=timeout_s)
    else:
        _signal_group(leader, signal.SIGTERM)
        if _group_gone(leader, timeout_s):
            return
    _signal_group(leader, signal.SIGKILL)
    _group_gone(leader, kill_wait_s)


def _signal_group(leader: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader.pid, sig)


def _group_gone(leader: subprocess.Popen, wait_s: float) -> bool:
    """Wait until no process of the leader's group is left."""
    deadline = time.monotonic() + wait_s
    while True:
        leader.poll()  # reap the leader, or it lingers as a zombie of ours
        try:
            os.killpg(leader.pid, 0)
        except (ProcessLookupError, PermissionError):  # PermissionError: the id now names others' processes
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------------------
# Processes by identity (Linux /proc). A pid alone names a process only while it runs: once it exits the
# kernel may give the number to an unrelated process. A pid with its start time names one process for the
# life of the machine, which is what a cleanup must check before it kills anything it did not start itself.


@dataclass(frozen=True)
class ProcessId:
    pid: int
    start: int  # clock ticks after boot (/proc/<pid>/stat field 22)

    def running(self) -> bool:
        """Still this very process (not a later one that reuses the pid), and not a zombie."""
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.start


def process_id(pid: int) -> ProcessId | None:
    """`pid`'s identity now, or None if no such process runs (or /proc is not there, e.g. macOS)."""
    stat = _stat(pid)
    return None if stat is None else ProcessId(pid, int(stat[19]))


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first, so field 22 is index 19)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses


def running_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def parent_pid(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else int(stat[1])


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def open_files(pid: int) -> list[str]:
    """The paths another process holds open ([] when unreadable: another user's, or gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    paths = []
    for fd in fds:
        with contextlib.suppress(OSError):
            paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return paths


def kill_processes(processes: list[ProcessId], wait_s: float = 10.0) -> list[ProcessId]:
    """SIGKILL each process that is still the one named (checked just before the signal); wait until they are
    gone. Returns those that were signalled."""
    killed = []
    for proc in processes:
        if proc.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc)
    deadline = time.monotonic() + wait_s
    while any(p.running() for p in killed) and time.monotonic() < deadline:
        time.sleep(0.1)
    return killed
