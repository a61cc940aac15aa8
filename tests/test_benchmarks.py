"""The GPU suite's scripts and their CUDA-only logic, run on CPU so they cannot rot between GPU loans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Runs a script the way the GPU machine does: with `import ray` failing (Ray cannot be brought there).
WITHOUT_RAY = """
import importlib.abc, runpy, sys
class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("ray is not installed on the GPU machine")
sys.meta_path.insert(0, NoRay())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_without_ray(script: str, *args: str, timeout: float = 240) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY, str(ROOT / script), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def test_online_steps_script_runs_without_ray_on_cpu():
    """generate → judge → pair → reference → one-rank DeepSpeed step (gloo) → push, twice, Ray unimportable."""
    lines = run_without_ray(
        "benchmarks/gpu_online_steps.py", "--model", "builtin:tiny", "--device", "cpu", "--steps", "2",
        "--prompts", "4", "--n", "2", "--batch", "2", "--max-rows", "8", "--threads", "1", "--verify",
    )  # fmt: skip
    assert lines[-1].startswith("online_steps ratio=")
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    setup, steps, summary = rows[0], rows[1:-1], rows[-1]
    assert setup["zero_stage"] == 2 and setup["device"] == "cpu"
    assert [s["step"] for s in steps] == [0, 1]
    trained = [s for s in steps if "version" in s]
    assert trained, "no step formed a DPO pair"
    assert trained[-1]["version"] == len(trained) and trained[-1]["push_bytes"] > 0
    assert summary["pushed_weights_match"] is True
    assert 0.99 < sum(summary["phase_share"].values()) <= 1.0 + 1e-6


def test_decode_step_bytes_counts_weights_and_the_mean_filled_cache():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_rollout import decode_step_bytes
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from rayunify.models.janus.factory import TINY, build_janus
    from rayunify.models.janus.model import JanusUnifiedModel

    um = JanusUnifiedModel(*build_janus(TINY, seed=0))
    weights, kv = decode_step_bytes(um, rows=8, prompt_tokens=10)
    lm = um.language_model
    assert weights == sum(p.numel() * 4 for p in lm.parameters())
    head_dim = TINY.hidden_size // TINY.num_heads
    per_token = TINY.num_layers * 2 * TINY.num_kv_heads * head_dim * 4
    assert kv == 8 * (10 + TINY.num_image_tokens // 2) * per_token


def test_bucketed_graph_decode_moves_fewer_bytes_than_the_whole_buffer():
    """The byte model bench_rollout reports: whole-buffer reads exceed the bound by the unwritten slots;
    buckets leave at most one bucket's worth over what is written."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_rollout import bytes_moved_per_step, kv_bytes_per_slot
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from rayunify.models.janus.factory import TINY, build_janus
    from rayunify.models.janus.model import JanusUnifiedModel

    um = JanusUnifiedModel(*build_janus(TINY, seed=0))
    um.decode_bucket = 4
    moved = bytes_moved_per_step(um, rows=64, prompt_tokens=10)
    weights = sum(p.numel() * 4 for p in um.language_model.parameters())
    slot = kv_bytes_per_slot(um) * 64
    steps = range(11, 10 + TINY.num_image_tokens)  # filled slots as each of the 15 decode steps reads
    assert moved["step_bytes_full_buffer"] == weights + slot * (10 + TINY.num_image_tokens)
    assert moved["step_bytes_bound"] == pytest.approx(weights + slot * sum(steps) / len(steps))
    spans = [min(26, -(-f // 4) * 4) for f in steps]
    assert moved["step_bytes_bucketed"] == pytest.approx(weights + slot * sum(spans) / len(spans))
    assert moved["moved_over_bound_before"] > moved["moved_over_bound_after"] >= 1.0


@pytest.mark.parametrize(
    ("learner", "receivers", "expected"),
    [
        (0, [0, 0], "gloo"),  # all on CPU
        (1, [0], "gloo"),  # a receiver without a GPU cannot take part in NCCL: host memory
        (1, [1, 1], "nccl"),  # whole GPUs: Ray gives every actor its own device
        (2, [1], "nccl"),
    ],
)
def test_push_backend_choice(learner, receivers, expected):
    from rayunify.actors.collective import push_backend

    assert push_backend(learner, receivers) == expected


@pytest.mark.parametrize(("learner", "receivers"), [(0.5, [0.5]), (1, [0.25]), (0.5, [1, 1])])
def test_push_backend_refuses_a_gpu_the_learner_may_share(learner, receivers):
    from rayunify.actors.collective import push_backend

    with pytest.raises(ValueError, match="distinct GPUs"):
        push_backend(learner, receivers)


def test_config_refuses_broadcast_on_gpus_the_learner_may_share():
    from rayunify.config import load_config

    gpus = ["learner.num_gpus=0.5", "rollout.num_gpus=0.25", "judge_actors.num_gpus=0.25"]
    with pytest.raises(Exception, match="learner.weight_transport=broadcast: a broadcast push needs distinct GPUs"):
        load_config(None, ["learner.weight_transport=broadcast", *gpus])
    load_config(None, ["learner.weight_transport=object_store", *gpus])  # the object store works there
    # A frozen self-judge takes no pushes, so its fractional GPU does not matter; a CPU member means gloo.
    frozen = ["learner.num_gpus=1", "rollout.num_gpus=1", "judge_actors.num_gpus=0.5", "judge.weights=frozen"]
    assert load_config(None, ["learner.weight_transport=broadcast", *frozen]).push_receiver_gpus() == [1]
    live = load_config(None, ["learner.weight_transport=broadcast", "learner.num_gpus=0.5", "rollout.num_gpus=0.5"])
    assert live.push_receiver_gpus() == [0.5, 0]  # the live judge on CPU: gloo, so sharing is harmless


def test_write_measured_rows_come_from_what_each_benchmark_prints(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import write_measured as wm
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    (tmp_path / "good.py").write_text('print("{}"); print("summary: 3 things/s"); print("good ratio=1.50")\n')
    (tmp_path / "plain.py").write_text('print("x: 2 per s"); print("plain ratio=0.90")\n')
    (tmp_path / "bad.py").write_text('import sys; sys.exit("broke here")\n')
    results = [wm.run_benchmark(wm.Benchmark(f"{name}.py", (), name), tmp_path) for name in ("good", "plain", "bad")]
    assert [(r.figure, r.ratios) for r in results[:2]] == [("3 things/s", ["good ratio=1.50"]), ("x: 2 per s", ["plain ratio=0.90"])]
    assert results[2].returncode == 1 and results[2].figure == "failed (exit 1): broke here"
    block = wm.table(results, "machine line")
    assert block.splitlines()[0] == "machine line" and "| `good.py`: good | 3 things/s | good ratio=1.50 |" in block
    readme = f"# R\n\n## Measured\n{wm.BEGIN}\nold table\n{wm.END}\n\nafter\n"
    assert wm.replace_between_markers(readme, block) == f"# R\n\n## Measured\n{wm.BEGIN}\n{block}\n{wm.END}\n\nafter\n"
    with pytest.raises(ValueError, match="measured:begin"):
        wm.replace_between_markers("# R without markers\n", block)
    speed = wm.SPEED_PAGE.read_text()  # the Speed page is where `make bench` writes the table
    assert speed.count(wm.BEGIN) == 1 and speed.index(wm.BEGIN) < speed.index(wm.END) and "## Measured" in speed


def test_write_measured_stops_a_benchmark_out_of_time_with_what_it_started(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import write_measured as wm
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    pid_file = tmp_path / "child.pid"
    (tmp_path / "slow.py").write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    result = wm.run_benchmark(wm.Benchmark("slow.py", (), "slow", timeout_s=3.0), tmp_path)
    assert result.returncode == -1 and result.figure == "did not finish within 3 s"
    stat = Path(f"/proc/{int(pid_file.read_text())}/stat")
    assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"  # its own child is gone too
