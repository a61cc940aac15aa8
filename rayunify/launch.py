"""Start, use and stop a Ray cluster through Ray's own CLI: `ray start --head`, `ray job submit`.

Pure subprocess helpers (no ray import), shared by the CLI and the tests. A local head is kept to one
machine's loopback: node, dashboard and client ports all on 127.0.0.1, usage stats off (the dashboard
would otherwise report to Ray's server), and its own temp dir so a plain `ray.init()` elsewhere on the
machine neither finds nor joins it.

The head runs as `ray start --head --block` in a process group of its own. Stopping it signals that
process (Ray then stops the node it started) and finally kills what is left of *that* group: `ray stop`
would kill every Ray process on the machine, other users' clusters included.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayunify.procs import (
    LOOPBACK,
    ProcessExited,
    free_ports,
    is_port_clash,
    log_tail,
    stop_process_group,
    wait_for_http_ok,
)


def ray_executable() -> str:
    """The `ray` CLI of the running interpreter's environment (a venv need not be activated)."""
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise FileNotFoundError("no `ray` executable beside this Python or on PATH; install ray[default]")
    return found


def ray_env(auth_mode: str = "disabled", extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Ray CLI calls and everything they start.

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray use 127.0.0.1 instead of resolving it to the machine's
    external address. RAY_AUTH_MODE: Ray 2.60 turns token auth on for new clusters; a
    loopback-only cluster can run without it ("disabled"), a shared one should use "token".
    """
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never let a stray address redirect our CLI calls
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE=auth_mode,
        # Job entrypoints say `python ...`: make that this environment's interpreter.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra or {})
    return env


class RayPortClash(RuntimeError):
    """`ray start` failed because a port it was given was taken."""


@dataclass
class HeadNode:
    """A running `ray start --head --block` and how to reach it."""

    process: subprocess.Popen
    gcs_address: str  # for ray.init(address=...) and worker nodes
    dashboard_url: str  # for `ray job submit --address`
    temp_dir: str
    env: dict[str, str] = field(repr=False)
    log_path: str = ""
    owns_temp_dir: bool = True

    def log_tail(self, chars: int = 4000) -> str:
        return log_tail(self.log_path, chars)


def start_local_head(
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    dashboard_port: int | None = None,
    auth_mode: str = "disabled",
    temp_dir: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: float = 120.0,
    port_retries: int = 2,
) -> HeadNode:
    """Start a Ray head with its dashboard (the job API) and wait until the dashboard answers.

    Ports we pick ourselves are probed free, but another process can take one before Ray binds it: a
    start that fails on a port clash is retried with fresh ports (`port_retries` times).
    """
    for attempt in range(port_retries + 1):
        try:
            return _start_local_head_once(
                num_cpus, num_gpus, host=host, port=port, dashboard_port=dashboard_port,
                auth_mode=auth_mode, temp_dir=temp_dir, extra_env=extra_env, extra_args=extra_args,
                timeout_s=timeout_s,
            )  # fmt: skip
        except RayPortClash:
            if attempt == port_retries:
                raise
    raise AssertionError("unreachable")


def _start_local_head_once(
    num_cpus: int | None,
    num_gpus: int | None,
    *,
    host: str,
    port: int | None,
    dashboard_port: int | None,
    auth_mode: str,
    temp_dir: str | None,
    extra_env: Mapping[str, str] | None,
    extra_args: Sequence[str],
    timeout_s: float,
) -> HeadNode:
    picked = free_ports(4, host)
    port = port or picked[0]
    dashboard_port = dashboard_port or picked[1]
    owns_temp_dir = temp_dir is None
    # Short path: Ray puts unix sockets under it, and those are limited to ~107 characters.
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="rayu-", dir="/tmp")
    env = ray_env(auth_mode, extra_env)
    cmd = [
        ray_executable(), "start", "--head", "--block",
        f"--node-ip-address={host}", f"--port={port}",
        "--include-dashboard=true", f"--dashboard-host={host}", f"--dashboard-port={dashboard_port}",
        # Fixed defaults (10001, 52365) would collide with any other cluster on this machine.
        f"--ray-client-server-port={picked[2]}", f"--dashboard-agent-listen-port={picked[3]}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]  # fmt: skip
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    cmd.extend(extra_args)
    log_path = os.path.join(temp_dir, "ray-start.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = HeadNode(
        process, f"{host}:{port}", f"http://{host}:{dashboard_port}", temp_dir, env, log_path, owns_temp_dir
    )
    try:
        _wait_for_dashboard(head, timeout_s)
    except BaseException:
        stop_head(head)
        raise
    return head


def _wait_for_dashboard(head: HeadNode, timeout_s: float) -> None:
    try:
        probe = f"{head.dashboard_url}/api/version"
        wait_for_http_ok(head.process, probe, timeout_s, name="`ray start --head`", log_path=head.log_path)
    except ProcessExited as err:
        if is_port_clash(err.log):
            raise RayPortClash(str(err)) from None
        raise


def stop_head(head: HeadNode, timeout_s: float = 60.0) -> None:
    """Stop the head and every process it started; safe to call twice."""
    # TERM to `ray start --block` alone: it then stops its raylet, GCS, dashboard... in order; whatever
    # survives in the head's own process group (it was started as a new session) is killed after.
    stop_process_group(head.process, timeout_s, term_leader_only=True)
    if head.owns_temp_dir:
        shutil.rmtree(head.temp_dir, ignore_errors=True)


@dataclass
class JobResult:
    submission_id: str
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED; or TIMEOUT, UNKNOWN from us
    returncode: int  # of `ray job submit`
    output: str  # the job's log as `ray job submit` tailed it, plus the CLI's own messages
    seconds: float


def submit(
    entrypoint: str | Sequence[str],
    working_dir: str | os.PathLike,
    *,
    dashboard_url: str,
    env: Mapping[str, str] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    submission_id: str | None = None,
    timeout_s: float = 600.0,
) -> JobResult:
    """`ray job submit --working-dir ... -- <entrypoint>`, wait for the end, and read the final status.

    `working_dir` is uploaded to the cluster (files in its .gitignore are left out); the entrypoint runs
    from there, e.g. "python -m rayunify.train --config configs/demo.yaml".
    """
    argv = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
    submission_id = submission_id or f"rayunify-{uuid.uuid4().hex[:12]}"
    env = dict(env) if env is not None else ray_env()
    cmd = [
        ray_executable(), "job", "submit", "--address", dashboard_url,
        "--submission-id", submission_id, "--working-dir", str(working_dir),
    ]  # fmt: skip
    if runtime_env:
        cmd += ["--runtime-env-json", json.dumps(dict(runtime_env))]
    start = time.monotonic()
    try:
        done = subprocess.run(
            [*cmd, "--", *argv], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        _cli(["job", "stop", "--address", dashboard_url, submission_id], env)
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return JobResult(submission_id, "TIMEOUT", -1, out, time.monotonic() - start)
    status = job_status(submission_id, dashboard_url=dashboard_url, token=env.get("RAY_AUTH_TOKEN"))
    output = done.stdout + done.stderr
    return JobResult(submission_id, status, done.returncode, output, time.monotonic() - start)


def job_status(submission_id: str, *, dashboard_url: str, token: str | None = None) -> str:
    """The job's status from the dashboard's REST API (the CLI prints it only as prose)."""
    return str(job_info(submission_id, dashboard_url=dashboard_url, token=token).get("status", "UNKNOWN"))


def job_info(submission_id: str, *, dashboard_url: str, token: str | None = None) -> dict[str, Any]:
    """The dashboard's record of a job (status, job_id, driver node...); {} when it cannot be read."""
    request = urllib.request.Request(f"{dashboard_url}/api/jobs/{submission_id}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            info = json.load(response)
    except OSError:
        return {}
    return info if isinstance(info, dict) else {}


def _cli(args: Sequence[str], env: Mapping[str, str] | None, timeout_s: float = 60.0) -> str:
    done = subprocess.run(
        [ray_executable(), *args], env=dict(env) if env is not None else ray_env(),
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr
