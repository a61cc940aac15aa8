"""Two learner ranks under ZeRO-3 through the real trainer: reference log-probs are computed by every rank
on its shard (a ZeRO-3 forward is a collective, so rank 0 alone would wait forever), and the run matches
one rank's to float tolerance.

Rollouts never see a pushed weight here (`push_every` beyond the run, async with a matching staleness
bound), so both runs judge the very same images and only the learner's arithmetic differs. Each run is
bounded by a timeout: a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
from tiny_runs import COIN_FLIP_TINY_RUN

from rayunify.config import load_config
from rayunify.train import Hooks, Trainer

STEPS = 2
RUN_TIMEOUT_S = 300


def tiny_config(tmp_path: Path, run_name: str, *overrides: str):
    base = [
        *COIN_FLIP_TINY_RUN,
        "learner.num_cpus=0.5",
        "learner.zero_stage=3",
        "learner.batch_size=2",  # one pair per rank: equal shards, so the mean of rank means is the mean
        "learner.lr=1e-3",
        f"trainer.steps={STEPS}",
        "trainer.prompts_per_step=4",
        "trainer.sync=async",
        f"trainer.max_staleness={STEPS + 1}",
        f"trainer.push_every={STEPS + 1}",  # rollouts keep the base weights: both runs see the same images
        "trainer.eval_every=100",
        "trainer.eval_prompts=4",
        "trainer.checkpoint_every=100",
        f"trainer.output_dir={tmp_path}",
        f"trainer.run_name={run_name}",
        "logger.type=jsonl",
        "logger.image_every=100",
        "guard.enabled=false",
        "guard.probe_size=0",
    ]
    return load_config(None, base + list(overrides))


class RecordReferences(Hooks):
    def __init__(self) -> None:
        self.refs: list[list[tuple[float, float]]] = []

    def on_reference_logps(self, pairs, step):
        self.refs.append([(p.ref_chosen_logp, p.ref_rejected_logp) for p in pairs])


def within(seconds: float, fn: Callable[[], None]) -> None:
    """Run `fn` in a thread; fail (instead of hanging) if it has not returned after `seconds`."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        ray.shutdown()  # ends the stuck calls, so the thread and the cluster go away
        pytest.fail(f"the run did not finish within {seconds} s (a collective waiting for a rank?)")
    if errors:
        raise errors[0]


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[list[float], list[list[tuple[float, float]]]]:
    hooks = RecordReferences()
    trainer = Trainer(tiny_config(tmp_path, name, *overrides), hooks=hooks)
    within(RUN_TIMEOUT_S, trainer.run)

    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r], hooks.refs


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.mark.parametrize("trainable,reference", [("language_model", "stored"), ("lora", "recompute")])
def test_two_zero3_ranks_compute_references_together_and_match_one_rank(tmp_path, trainable, reference):
    overrides = (f"model.trainable={trainable}", f"algorithm.reference={reference}")
    one_losses, one_refs = run(tmp_path, "one", "learner.num_ranks=1", *overrides)
    two_losses, two_refs = run(tmp_path, "two", "learner.num_ranks=2", *overrides)
    assert len(one_losses) == STEPS and len(two_losses) == STEPS
    for a, b in zip(one_losses, two_losses, strict=True):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5), (one_losses, two_losses)
    assert len(one_refs) == len(two_refs) == STEPS
    for step_one, step_two in zip(one_refs, two_refs, strict=True):
        for (c1, r1), (c2, r2) in zip(step_one, step_two, strict=True):
            assert math.isclose(c1, c2, rel_tol=1e-5) and math.isclose(r1, r2, rel_tol=1e-5)
