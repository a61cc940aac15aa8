"""The golden runs themselves: `python tests/golden_runs.py OUT_DIR [NAME ...]` runs them one after another on
one local Ray cluster and writes `OUT_DIR/<name>.json` (the run's logged rows without wall-clock times, and
a summary of every exported tensor) and `OUT_DIR/kernels.json` (the numerics the driver and a Ray worker ran
with).

`tests/test_golden.py` starts this script in a fresh process under `rayunify.numerics.PORTABLE_ENV`: the
records then hold on any x86-64 CPU, whatever kernels the host would otherwise pick.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

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
# Wall-clock measurements differ from run to run; everything else in a row must not.
TIMING_PREFIXES = ("time/", "idle/", "busy/")
TIMING_KEYS = {"step_s", "train/step_s", "push/pack_s"}


def deterministic(row: dict) -> dict:
    return {
        k: v
        for k, v in row.items()
        if not k.startswith(TIMING_PREFIXES) and k not in TIMING_KEYS and not k.endswith("_s")
    }


def tensor_summary(tensor) -> dict:
    """dtype, shape and three float64 figures of one tensor: its sum, its sum of squares and its dot product
    with a fixed ±1 pattern (which moves when any element moves, even where sum and norm happen to hold)."""
    values = tensor.float().double().reshape(-1).numpy()
    signs = np.where(np.random.default_rng(len(values)).random(len(values)) < 0.5, -1.0, 1.0)
    return {
        "dtype": str(tensor.dtype),
        "shape": list(tensor.shape),
        "sum": float(values.sum()),
        "sumsq": float((values**2).sum()),
        "signed": float(values @ signs),
    }


def weights_summary(model_dir: Path) -> dict[str, dict]:
    from safetensors.torch import load_file

    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in sorted(load_file(path).items()):
            out[f"{path.name}:{name}"] = tensor_summary(tensor)
    return out


def run_one(name: str, out_dir: Path) -> dict:
    from rayunify.config import load_config
    from rayunify.train import Trainer

    work = out_dir / "runs"
    cfg = load_config(None, COMMON + RUNS[name] + [f"trainer.output_dir={work}", f"trainer.run_name={name}"])
    Trainer(cfg).run()
    run_dir = work / name
    rows = [deterministic(json.loads(line)) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"metrics": rows, "weights": weights_summary(run_dir / "final_model")}


def kernels() -> dict:
    """The numerics of this driver and of one Ray worker process (the actors' processes start the same way)."""
    import ray

    from rayunify.numerics import kernel_report

    return {"driver": kernel_report(), "worker": ray.get(ray.remote(kernel_report).remote())}


def main(argv: list[str]) -> int:
    import ray

    out_dir, names = Path(argv[0]), argv[1:] or sorted(RUNS)
    out_dir.mkdir(parents=True, exist_ok=True)
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR")
    try:
        (out_dir / "kernels.json").write_text(json.dumps(kernels(), indent=1))
        for name in names:
            (out_dir / f"{name}.json").write_text(json.dumps(run_one(name, out_dir), indent=1, sort_keys=True) + "\n")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
