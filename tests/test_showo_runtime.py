"""Show-o through the whole loop on the local Ray cluster: `builtin:showo-tiny` trained online with DPO
(rollout, coin-flip judge, learner, weight pushes, checkpoint and resume) and offline with C-SFT, unchanged
trainer code: the family is only a `UnifiedModel` subclass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
from tiny_runs import COIN_FLIP_TINY_RUN, start_local_cluster

from rayunify.config import load_config
from rayunify.models.showo.model import ShowoUnifiedModel
from rayunify.train import Trainer

SHOWO_TINY_RUN = [
    *[o for o in COIN_FLIP_TINY_RUN if not o.startswith(("model.path", "prompts.n_train", "sampling.samples"))],
    "model.type=showo",
    "model.path=builtin:showo-tiny",
    "prompts.n_train=8",
    "sampling.samples_per_prompt=4",  # coin flips: a prompt pairs unless its 4 verdicts agree (1 in 8)
    "learner.batch_size=2",
    "learner.lr=1e-3",
    "trainer.prompts_per_step=4",
    "trainer.eval_every=100",
    "trainer.eval_prompts=4",
    "logger.type=jsonl",
    "guard.probe_size=4",
]


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    start_local_cluster()
    yield
    ray.shutdown()


def run(tmp_path: Path, name: str, *overrides: str) -> list[dict]:
    cfg = load_config(None, [*SHOWO_TINY_RUN, f"trainer.output_dir={tmp_path}", f"trainer.run_name={name}", *overrides])
    Trainer(cfg).run()
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def train_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "train/loss" in r]


@pytest.mark.slow
def test_online_dpo_trains_pushes_and_resumes(tmp_path):
    first = train_rows(run(tmp_path, "dpo", "trainer.steps=2", "trainer.checkpoint_every=1"))
    assert [r["train/version"] for r in first] == [1, 2]
    assert first[0]["train/dpo_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at step 1
    assert first[1]["train/kl_chosen"] != 0  # the pushed weights moved the policy away from its reference
    resumed = train_rows(run(tmp_path, "dpo", "trainer.steps=3", "trainer.checkpoint_every=1", "trainer.resume=true"))
    assert [r["step"] for r in resumed][-1] == 3 and resumed[-1]["train/version"] == 3
    exported = ShowoUnifiedModel.from_pretrained(tmp_path / "dpo" / "final_model")
    assert exported.generate(["a red circle"], n=1, seed=0).image_tokens.shape == (1, exported.num_image_tokens)


@pytest.mark.slow
def test_offline_c_sft_with_the_masked_estimator(tmp_path):
    rows = run(
        tmp_path, "sft", "trainer.mode=offline", "algorithm.type=sft", "trainer.epochs=1",
        "model.logprob_estimator=masked",
    )  # fmt: skip
    build = next(r for r in rows if "data/groups" in r and r["step"] == 0)
    steps = train_rows(rows)
    assert build["data/accepted"] > 0 and len(steps) == -(-int(build["data/accepted"]) // 2)
    assert all(0 < r["train/nll"] < 20 for r in steps)
    assert (tmp_path / "sft" / "final_model" / "vq" / "config.json").is_file()
