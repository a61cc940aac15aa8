"""Helpers for the servers we start as subprocesses (the Ray head, a vLLM judge server): free ports, waiting
until one answers over HTTP, reading its log, and stopping it with everything it started.

Standard library only. Every server runs in a process group of its own (`start_new_session=True`), so
stopping it stops its children too, and nothing else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct free ports. The sockets are held open together: probing one port at a time can
    hand out the same port twice (the kernel may reuse a just-closed ephemeral port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


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
