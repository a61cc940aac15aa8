"""A Ray cluster of three nodes on loopback: Ray's own multi-node test cluster (`ray.cluster_utils.Cluster`),
every node bound to 127.0.0.1 with its own raylet, object store and agents.

Placement comes from config (`learner.resources`, `rollout.resources`, `judge_actors.resources`) against the
nodes' custom resources: the two learner ranks on the head and on worker 1, the rollout and judge actors on
worker 2. Worker 2 is then lost mid-run (every process of that node killed at once, as when a machine
dies): its actors restart on the head, catch up with the learner's weights, and the run finishes with every
prompt of every step counted once. The judge is the live model itself with coin-flip verdicts, so both the
rollout and the judge actor take every push: by broadcast in the run driven from here, by object store in
the same run submitted with `ray job submit`.

`ray start --address` cannot build this cluster on one machine: on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
=0) it refuses to start a worker node, and otherwise it turns 127.0.0.1 into the machine's external address.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, remove_placement_group

from rayunify.actors.cluster import ClusterRecord, leftovers
from rayunify.config import load_config
from rayunify.launch import JobResult, job_info, ray_env, submit
from rayunify.procs import LOOPBACK, free_ports, kill_processes, parent_pid, process_id, running_pids
from rayunify.train import Hooks, Trainer
from rayunify.weights import tensors_checksum

pytestmark = pytest.mark.slow

STEPS, PROMPTS_PER_STEP, SAMPLES = 3, 4, 4
HEAD = {"learner_node": 1, "actor_node": 2}  # learner rank 0; room for worker 2's actors once it is lost
WORKER_1 = {"learner_node": 1}
WORKER_2 = {"actor_node": 2}  # the rollout and the judge actor
# A lost node is declared dead within ~1.5 s instead of Ray's default ~15 s.
FAST_NODE_DEATH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}

RUN = """
model: {path: builtin:tiny}
judge: {type: noisy, base: {type: self, weights: live}, random_fraction: 1.0}
prompts: {n_train: 16, n_eval: 4}
sampling: {samples_per_prompt: SAMPLES, guidance_scale: 2.0}
rollout: {num_cpus: 0.5, resources: {actor_node: 1}}
judge_actors: {num_cpus: 0.5, resources: {actor_node: 1}}
learner: {num_ranks: 2, batch_size: 4, lr: 1.0e-3, resources: {learner_node: 1}, push_timeout_s: 30}
guard: {probe_size: 0}
trainer: {steps: STEPS, prompts_per_step: PROMPTS, eval_every: 100, eval_prompts: 2, checkpoint_every: 100,
          output_dir: OUT, run_name: RUN_NAME}
logger: {type: jsonl}
"""


def run_yaml(out: Path, run_name: str) -> str:
    values = {"SAMPLES": SAMPLES, "STEPS": STEPS, "PROMPTS": PROMPTS_PER_STEP, "OUT": out, "RUN_NAME": run_name}
    text = RUN
    for key, value in values.items():
        text = text.replace(key, str(value))
    return text


@dataclass
class ThreeNodes:
    cluster: Cluster
    head: str  # node ids
    worker_1: str
    worker_2: str
    dashboard_url: str
    standby: Any = None  # a placement group holding the head's actor_node capacity until worker 2 is lost

    def hold_head_capacity(self) -> None:
        """Keep the run's rollout and judge actors off the head at start (Ray may pick any node with room)."""
        bundle = {"actor_node": HEAD["actor_node"], "node:__internal_head__": 0.001}
        self.standby = placement_group([bundle], strategy="STRICT_PACK")
        ray.get(self.standby.ready(), timeout=60)

    def lose_worker_2(self) -> None:
        """Free the head's room for worker 2's actors, then kill every process of worker 2 at once."""
        remove_placement_group(self.standby)
        node = next(n for n in self.cluster.worker_nodes if n.node_id == self.worker_2)
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        started_by_raylet = [process_id(pid) for pid in running_pids() if parent_pid(pid) == raylet]
        self.cluster.remove_node(node, allow_graceful=False)  # raylet and the node's own processes, SIGKILL
        # Its agents and workers would outlive the raylet (re-parented to init) as they outlive a killed driver.
        kill_processes([p for p in started_by_raylet if p is not None])

    def replace_worker_2(self) -> None:
        self.worker_2 = self.cluster.add_node(num_cpus=1, resources=WORKER_2).node_id
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def nodes():
    ray_tmp = tempfile.mkdtemp(prefix="rayu-mn-", dir="/tmp")  # short: Ray's unix sockets live under it
    dashboard_port, agent_port = free_ports(2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", ray_tmp)  # this cluster's address file and sessions: private to it
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 2, "resources": HEAD, "include_dashboard": True, "dashboard_host": LOOPBACK,
                "dashboard_port": dashboard_port, "dashboard_agent_listen_port": agent_port,
                "_system_config": FAST_NODE_DEATH,
            },
        )  # fmt: skip
        try:
            head = cluster.head_node.node_id
            worker_1 = cluster.add_node(num_cpus=1, resources=WORKER_1).node_id
            worker_2 = cluster.add_node(num_cpus=1, resources=WORKER_2).node_id
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, logging_level="ERROR")
            yield ThreeNodes(cluster, head, worker_1, worker_2, f"http://{LOOPBACK}:{dashboard_port}")
        finally:
            ray.shutdown()
            cluster.shutdown()
            # Whatever of the test cluster is left (an agent of a node removed by SIGKILL): its files are
            # under this private temp dir.
            kill_processes(leftovers(ClusterRecord(process_id(os.getpid()), ray_tmp, os.path.dirname(ray.__file__), ())))
            shutil.rmtree(ray_tmp, ignore_errors=True)


def node_of(actor: Any) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()), timeout=60)


def trainable_checksum(actor: Any) -> str:
    """The receiver's trainable tensors, hashed as the learner hashes its own (`param_checksum`)."""
    holder = lambda self: getattr(self, "holder", None) or self  # noqa: E731 - a judge keeps its model in a holder
    return ray.get(actor.__ray_call__.remote(
        lambda self: tensors_checksum((n, p.detach()) for n, p in holder(self).policy.named_parameters() if p.requires_grad)
    ), timeout=60)  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def train_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "train/loss" in r or "train/skipped_batches" in r]


def assert_every_prompt_counted_once(rows: list[dict]) -> None:
    steps = train_rows(rows)
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    # Running totals of the training-data actor: each step adds its prompts' groups, no more, no fewer.
    assert [r["data/groups"] for r in steps] == [PROMPTS_PER_STEP * (i + 1) for i in range(STEPS)]
    assert [r["data/prompts_consumed"] for r in steps] == [PROMPTS_PER_STEP * (i + 1) for i in range(STEPS)]
    assert steps[-1]["actors/restarts"] >= 2  # the rollout and the judge actor of the lost node


class LoseWorker2AfterFirstStep(Hooks):
    """Checks placement, loses worker 2 while step 2's collection is in flight, and at the last step checks
    where the actors run now and that every receiver holds the learner's weights."""

    def __init__(self, nodes: ThreeNodes):
        self.nodes = nodes
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}

    def after_step(self, trainer: Trainer) -> None:
        if trainer.step == 0:
            self.before = self.placement(trainer)
            self.nodes.lose_worker_2()
        elif trainer.step == STEPS - 1:  # the last push is done and nothing is in flight
            self.after = self.placement(trainer)
            receivers = trainer.collector.rollout.actors + trainer.collector.judges.actors
            self.after["versions"] = ray.get([r.get_version.remote() for r in receivers])
            self.after["learner_version"] = trainer.learner.versions()[0]
            self.after["checksums"] = {trainable_checksum(r) for r in receivers}
            self.after["learner_checksum"] = trainer.learner.param_checksums()[0]

    @staticmethod
    def placement(trainer: Trainer) -> dict[str, Any]:
        c = trainer.collector
        return {
            "learner": [node_of(a) for a in trainer.learner.group.actors],
            "rollout": node_of(c.rollout.actors[0]),
            "judge": node_of(c.judges.actors[0]),
        }


class CountingTrainer(Trainer):
    """Records how many samples of each prompt every collection returned."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.samples_per_prompt: list[Counter] = []

    def collect(self, pending):
        collected = super().collect(pending)
        self.samples_per_prompt.append(Counter(j.sample.prompt.prompt_id for j in collected.judged))
        return collected


def test_nodes_are_on_loopback_with_their_own_resources(nodes):
    alive = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    assert set(alive) == {nodes.head, nodes.worker_1, nodes.worker_2}
    assert {n["NodeManagerAddress"] for n in alive.values()} == {LOOPBACK}
    assert alive[nodes.worker_1]["Resources"]["learner_node"] == 1 and "actor_node" not in alive[nodes.worker_1]["Resources"]


def test_a_node_lost_mid_run_broadcast_pushes_reach_the_restarted_actors(nodes, tmp_path):
    (tmp_path / "run.yaml").write_text(run_yaml(tmp_path, "broadcast"))
    cfg = load_config(tmp_path / "run.yaml", ["learner.weight_transport=broadcast"])
    nodes.hold_head_capacity()
    lost = nodes.worker_2
    hooks = LoseWorker2AfterFirstStep(nodes)
    trainer = CountingTrainer(cfg, hooks=hooks)
    trainer.run()
    nodes.replace_worker_2()
    assert sorted(hooks.before["learner"]) == sorted([nodes.head, nodes.worker_1])  # one rank per node
    assert hooks.before["rollout"] == hooks.before["judge"] == lost
    assert hooks.after["rollout"] == hooks.after["judge"] == nodes.head  # restarted where there was room
    assert hooks.after["learner"] == hooks.before["learner"]
    assert hooks.after["versions"] == [hooks.after["learner_version"]] * 2 and hooks.after["learner_version"] >= 1
    assert hooks.after["checksums"] == {hooks.after["learner_checksum"]}  # bit-identical to the learner's
    assert len(trainer.samples_per_prompt) == STEPS
    for counts in trainer.samples_per_prompt:  # every prompt of every step: all its samples, once
        assert len(counts) == PROMPTS_PER_STEP and set(counts.values()) == {SAMPLES}
    assert_every_prompt_counted_once(read_rows(tmp_path / "broadcast" / "metrics.jsonl"))


def submit_in_background(entrypoint: str, working_dir: Path, dashboard_url: str, submission_id: str):
    """`ray job submit` (which waits for the job's end) on a thread; its JobResult lands in the list."""
    result: list[JobResult] = []
    env = ray_env()  # `python` is this interpreter; no RAY_ADDRESS of ours leaks into the CLI
    thread = threading.Thread(
        target=lambda: result.append(
            submit(entrypoint, working_dir, dashboard_url=dashboard_url, env=env, submission_id=submission_id, timeout_s=400)
        ),
        daemon=True,
    )  # fmt: skip
    thread.start()
    return thread, result


def actor_nodes(job_id: str, alive_only: bool = True) -> dict[str, list[str]]:
    """Class name -> the nodes of the job's actors of that class (Ray's state API, through the dashboard)."""
    from ray.util.state import list_actors

    filters = [("job_id", "=", job_id)] + ([("state", "=", "ALIVE")] if alive_only else [])
    found: dict[str, list[str]] = {}
    for actor in list_actors(filters=filters, limit=1000):
        found.setdefault(actor.class_name, []).append(actor.node_id)
    return found


def test_the_same_run_through_ray_job_submit_survives_a_lost_node(nodes, tmp_path):
    (tmp_path / "run.yaml").write_text(run_yaml(tmp_path, "job"))
    nodes.hold_head_capacity()
    submission_id = f"rayunify-multinode-{os.getpid()}"
    entrypoint = f"{sys.executable} -m rayunify.train --config run.yaml"
    thread, result = submit_in_background(entrypoint, tmp_path, nodes.dashboard_url, submission_id)
    metrics = tmp_path / "job" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    # A timed loss: once the start evaluation is logged, with every step still to come (a step of this tiny
    # run can take under a second, so waiting for one would risk losing the node after the last).
    while not read_rows(metrics) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert read_rows(metrics), f"the job logged nothing: {result[0].output[-3000:] if result else 'still running'}"
    job_id = job_info(submission_id, dashboard_url=nodes.dashboard_url)["job_id"]
    before = actor_nodes(job_id)
    lost = nodes.worker_2
    nodes.lose_worker_2()
    thread.join(timeout=400)
    nodes.replace_worker_2()
    assert result and result[0].status == "SUCCEEDED", result[0].output[-4000:] if result else "no result"
    assert f"run finished: {STEPS} steps" in result[0].output
    assert sorted(before["LearnerWorker"]) == sorted([nodes.head, nodes.worker_1])
    assert before["RolloutWorker"] == before["JudgeWorker"] == [lost]
    ran = actor_nodes(job_id, alive_only=False)  # the job is over: every actor it had, dead now
    assert sorted(ran["RolloutWorker"]) == sorted(ran["JudgeWorker"]) == sorted([lost, nodes.head])
    rows = read_rows(metrics)
    assert_every_prompt_counted_once(rows)
    versions = [r["push/version"] for r in train_rows(rows) if "push/version" in r]
    assert versions == sorted(versions) and versions[-1] >= 1
