"""The documented launch path end to end: `ray start --head` + `ray job submit --working-dir`, on loopback.

Swap the entrypoint for the real trainer with one line, e.g.
    submit_job("python -m rayunify.train --config configs/demo.yaml --steps 2", REPO_ROOT)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from rayunify import launch
from rayunify.launch import JobResult, start_local_head, stop_head, submit

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs inside the job: connects to the cluster it was submitted to and checks that Ray stayed on loopback.
TINY_SCRIPT = """
import ray

ray.init()  # the job supervisor sets RAY_ADDRESS
node_ip = ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote())
assert node_ip == "127.0.0.1", node_ip
print("rayunify-job-ok", node_ip, ray.cluster_resources().get("CPU"))
"""


def submit_job(entrypoint: str, working_dir: str | os.PathLike, timeout_s: float = 300.0, num_cpus: int = 1) -> JobResult:
    """Start a loopback head, submit one job, wait for it, and always stop the head."""
    start = time.perf_counter()
    head = start_local_head(num_cpus=num_cpus)
    print(f"\nray start --head: {time.perf_counter() - start:.1f} s ({head.dashboard_url})")
    try:
        return submit(
            entrypoint, working_dir, dashboard_url=head.dashboard_url, env=head.env, timeout_s=timeout_s
        )
    finally:
        stop_start = time.perf_counter()
        stop_head(head)
        print(f"stop_head: {time.perf_counter() - stop_start:.1f} s")


def test_ray_job_submit_succeeds(tmp_path):
    (tmp_path / "script.py").write_text(TINY_SCRIPT)
    result = submit_job("python script.py", tmp_path)
    print(f"job: {result.status} in {result.seconds:.1f} s")
    assert result.status == "SUCCEEDED", result.output[-4000:]
    assert result.returncode == 0
    assert "rayunify-job-ok 127.0.0.1" in result.output


def test_free_ports_are_distinct():
    ports = launch.free_ports(64)
    assert len(set(ports)) == 64


def test_head_start_retries_with_fresh_ports_after_a_port_clash(monkeypatch):
    """CI once drew the same port for the GCS and the dashboard agent; Ray refused to start. A clash must
    cost a retry, not the run."""
    real_free_ports = launch.free_ports
    calls = []

    def clashing_first(count, host=launch.LOOPBACK):
        ports = real_free_ports(count, host)
        calls.append(ports)
        return ports if len(calls) > 1 else [ports[0], ports[1], ports[2], ports[0]]

    monkeypatch.setattr(launch, "free_ports", clashing_first)
    head = start_local_head(num_cpus=1)
    try:
        assert len(calls) == 2
        assert head.gcs_address.endswith(f":{calls[1][0]}")
    finally:
        stop_head(head)


def test_head_start_gives_up_on_a_persistent_clash(monkeypatch):
    monkeypatch.setattr(launch, "free_ports", lambda count, host=launch.LOOPBACK: [20001, 20002, 20003, 20001])
    with pytest.raises(launch.RayPortClash, match="used by other components"):
        start_local_head(num_cpus=1, port_retries=1)


TRAIN_CONFIG = """
model: {path: builtin:tiny}
judge: {type: noisy, base: {type: shapes_checker}, random_fraction: 1.0}
prompts: {n_train: 8, n_eval: 2}
sampling: {samples_per_prompt: 2, guidance_scale: 2.0}
rollout: {num_cpus: 0.5}
judge_actors: {num_cpus: 0.5}
learner: {batch_size: 2}
trainer: {steps: 2, prompts_per_step: 2, eval_prompts: 2, output_dir: runs, run_name: job}
logger: {type: jsonl}
"""


def test_ray_job_submit_runs_the_trainer(tmp_path):
    """What README tells users: `ray job submit --working-dir . -- python -m rayunify.train --config …`."""
    (tmp_path / "job.yaml").write_text(TRAIN_CONFIG)
    # The job runs the same interpreter (the cluster's Python environment has rayunify installed).
    result = submit_job(f"{sys.executable} -m rayunify.train --config job.yaml", tmp_path, num_cpus=3)
    assert result.status == "SUCCEEDED", result.output[-4000:]
    assert "run finished: 2 steps" in result.output
