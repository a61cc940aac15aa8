"""Golden runs: a short seeded online run and a short offline C-SFT run must reproduce, key for key, the
`metrics.jsonl` (every loss, reward, count and version; wall-clock times excluded) and the exported weights
recorded in `tests/golden/`. They pin the driver's behaviour while its code moves.

A deliberate change of behaviour rewrites the records: `RAYUNIFY_UPDATE_GOLDEN=1 pytest tests/test_golden.py`
(and say why in the commit).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import ray
import torch
from safetensors.torch import load_file

from rayunify.config import load_config
from rayunify.train import Trainer

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("RAYUNIFY_UPDATE_GOLDEN") == "1"
# Wall-clock measurements differ from run to run; everything else in a row must not.
TIMING_PREFIXES = ("time/", "idle/", "busy/")
TIMING_KEYS = {"step_s", "train/step_s", "push/pack_s"}

COMMON = [
    "model.path=builtin:tiny",
    "judge.type=noisy",
    "judge.base.type=shapes_checker",
    "judge.random_fraction=1.0",  # seeded coin flips: a random tiny model's own judge parses nothing
    "prompts.n_train=16",
    "prompts.n_eval=4",
    "sampling.guidance_scale=2.0",
    "rollout.num_cpus=0.5",
    "judge_actors.num_cpus=0.5",
    "learner.batch_size=4",
    "learner.lr=1e-3",
    "trainer.eval_prompts=4",
    "logger.type=jsonl",
    "logger.image_every=2",
    "guard.probe_size=4",
    "guard.every=1",
]
RUNS = {
    "online_dpo_async": [
        "sampling.samples_per_prompt=4",
        "trainer.steps=4",
        "trainer.prompts_per_step=4",
        "trainer.sync=async",
        "trainer.max_staleness=1",
        "trainer.eval_every=2",
        "trainer.checkpoint_every=2",
        "curriculum.type=adaptive",
    ],
    "online_dpo_sync_broadcast_lora": [
        "sampling.samples_per_prompt=4",
        "trainer.steps=3",
        "trainer.prompts_per_step=4",
        "trainer.sync=sync",
        "trainer.eval_every=3",
        "learner.weight_transport=broadcast",
        "model.trainable=lora",
        "algorithm.reference=recompute",
    ],
    "offline_c_sft": [
        "algorithm.type=sft",
        "trainer.mode=offline",
        "trainer.epochs=2",
        "curriculum.type=replay",
        "curriculum.replay_at=[1]",
        "sampling.samples_per_prompt=2",
        "trainer.eval_every=3",
        "trainer.checkpoint_every=100",
    ],
}


def deterministic(row: dict) -> dict:
    return {
        k: v
        for k, v in row.items()
        if not k.startswith(TIMING_PREFIXES) and k not in TIMING_KEYS and not k.endswith("_s")
    }


def weights_digest(model_dir: Path) -> dict[str, str]:
    """sha256 of every exported tensor (names, dtypes, shapes and bytes), file by file."""
    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in sorted(load_file(path).items()):
            digest = hashlib.sha256(f"{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
            out[f"{path.name}:{name}"] = digest.hexdigest()
    return out


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("name", sorted(RUNS))
def test_golden_run_is_reproduced_exactly(tmp_path, name):
    cfg = load_config(None, COMMON + RUNS[name] + [f"trainer.output_dir={tmp_path}", f"trainer.run_name={name}"])
    Trainer(cfg).run()
    run_dir = tmp_path / name
    rows = [deterministic(json.loads(line)) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    record = {"metrics": rows, "weights": weights_digest(run_dir / "final_model")}
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"golden record rewritten: {path}")
    golden = json.loads(path.read_text())
    assert len(rows) == len(golden["metrics"]), "number of logged rows changed"
    for i, (got, want) in enumerate(zip(rows, golden["metrics"], strict=True)):
        assert sorted(got) == sorted(want), f"row {i}: keys differ: {sorted(set(got) ^ set(want))}"
        diff = {k: (got[k], want[k]) for k in want if not same(got[k], want[k])}
        assert not diff, f"row {i} (step {want.get('step')}): {diff}"
    assert record["weights"] == golden["weights"], "exported weights differ"
