"""Joining or starting the Ray cluster a job runs on (training and `rayunify eval` alike), and cleaning up
after a driver that was killed with its local cluster still running.

A local cluster's node processes (GCS, raylet, monitors) are the driver's children and die with it, but the
raylet's own children -- Ray's DashboardAgent and RuntimeEnvAgent -- outlive a driver killed with SIGKILL
(they are re-parented to init and ignore SIGTERM). So every local cluster we start is recorded in a small
file: the driver's identity (pid and start time), the cluster's session directory (its name holds the
driver's pid and the start time to the microsecond) and the node processes. Each later start reads the
records of drivers no longer running and kills what is left of their clusters: the recorded processes, if
each is still the very process recorded, and every Ray process (`ray::...`, or a program of the ray
package) that holds a file open in that session directory (every process of the node logs there). Nothing
is killed by name alone. Linux only (/proc); elsewhere nothing is recorded or cleaned.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rayunify.config import Config
from rayunify.procs import (
    ProcessId,
    command_line,
    kill_processes,
    open_files,
    parent_pid,
    process_id,
    running_pids,
)

# Where the records live; one machine-wide directory, so any later run cleans up after any dead one.
RECORDS_ENV = "RAYUNIFY_CLUSTER_RECORDS"
_started_record: Path | None = None  # the record of the cluster this process started, removed at stop_ray


def init_ray(cfg: Config) -> bool:
    """Connect to a cluster (`ray.address`, or RAY_ADDRESS inside `ray job submit`) or start a local one.
    Returns whether we started it (and so must stop it, with `stop_ray`)."""
    import ray

    clean_up_dead_clusters()
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address, cfg.ray.connect_timeout_s)
    if ray.is_initialized():
        return False
    _skip_dedup_notice()
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    from rayunify.preflight import local_cluster_cpus

    num_cpus = local_cluster_cpus(cfg)
    # A private loopback cluster for this run: no token file, no usage report, never someone else's cluster.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    context = ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_level="ERROR"
    )
    global _started_record
    _started_record = record_local_cluster(context.address_info["session_dir"], os.path.dirname(ray.__file__))
    return True


def _skip_dedup_notice() -> None:
    """Ray appends a one-time notice on how to turn log deduplication off the first time it folds repeated
    actor lines (e.g. every actor's weight-loading bar). The folding stays; the notice is taken as already
    shown, since it tells a user of `rayunify train` nothing about the run."""
    from ray.util.debug import log_once

    log_once("log_dedup_warning")  # the key ray._private.ray_logging._warn_once checks


def check_reachable(address: str, timeout_s: float) -> None:
    """A named cluster answers within `timeout_s`, or one line says so: ray.init would wait for it for
    minutes. `auto` is Ray's to resolve (it fails fast when there is no cluster)."""
    from rayunify.preflight import UserError

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"ray.address={address!r} is not host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UserError(
            f"ray.address={address}: nothing answers there within {timeout_s:g} s ({err.strerror or err}); start the "
            "cluster (`ray start --head`), fix ray.address, or leave it unset for a local cluster"
        ) from None


def stop_ray() -> None:
    """Stop the local cluster `init_ray` started; its record goes with it."""
    import ray

    global _started_record
    ray.shutdown()
    if _started_record is not None:
        _started_record.unlink(missing_ok=True)
        _started_record = None


# ------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ClusterRecord:
    driver: ProcessId
    session_dir: str  # every process of the node holds its log files open under it
    ray_dir: str  # the ray package: its programs, and `ray::` workers, are the only processes we kill
    processes: tuple[ProcessId, ...]  # the node processes the driver started

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ClusterRecord:
        raw = json.loads(text)
        processes = tuple(ProcessId(**p) for p in raw["processes"])
        return cls(ProcessId(**raw["driver"]), str(raw["session_dir"]), str(raw["ray_dir"]), processes)

    def is_ray_program(self, pid: int) -> bool:
        args = command_line(pid)
        return bool(args) and (args[0].startswith("ray::") or any(a.startswith(self.ray_dir) for a in args))


def records_dir() -> Path:
    return Path(os.environ.get(RECORDS_ENV) or Path(tempfile.gettempdir()) / "rayunify" / "local-clusters")


def record_local_cluster(session_dir: str, ray_dir: str, driver_pid: int | None = None) -> Path | None:
    """Write the record of the local cluster `driver_pid` (default: this process) just started: its session
    directory and its children that run Ray's programs (their command lines name a file under `ray_dir`)."""
    driver = process_id(driver_pid or os.getpid())
    if driver is None:  # no /proc: nothing could be cleaned up anyway
        return None
    record = ClusterRecord(driver, os.path.abspath(session_dir), os.path.abspath(ray_dir), ())
    children = [pid for pid in running_pids() if parent_pid(pid) == driver.pid and record.is_ray_program(pid)]
    record = replace(record, processes=tuple(p for p in map(process_id, children) if p is not None))
    directory = records_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{driver.pid}-{driver.start}.json"
    partial = path.with_suffix(".part")  # written whole, then renamed: a reader never sees half a record
    partial.write_text(record.to_json())
    os.replace(partial, path)
    return path


def leftovers(record: ClusterRecord) -> list[ProcessId]:
    """What still runs of a recorded cluster: its recorded processes, and every Ray process that holds a
    file open in its session directory."""
    found = {p for p in record.processes if p.running()}
    inside = record.session_dir.rstrip("/") + "/"
    for pid in running_pids():
        if any(path.startswith(inside) for path in open_files(pid)) and record.is_ray_program(pid):
            proc = process_id(pid)
            if proc is not None:
                found.add(proc)
    return sorted(found, key=lambda p: p.pid)


def clean_up_dead_clusters(directory: Path | None = None) -> list[ProcessId]:
    """Kill what is left of the local clusters of drivers that no longer run; returns the processes killed.
    A record whose driver still runs is left alone (that run is alive, on this machine or in this process)."""
    killed: list[ProcessId] = []
    for path in sorted((directory or records_dir()).glob("*.json")):
        try:
            record = ClusterRecord.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a record of ours: leave it
        if record.driver.running():
            continue
        killed += kill_processes(leftovers(record))
        with contextlib.suppress(OSError):
            path.unlink()
    return killed
