"""GRPO on the runtime: behaviour log-probs, rewards, the groups' store, and `Trainer` runs on a local Ray
cluster with a tiny Janus (sync, async, skipped groups, several judges' weighted reward, resume)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
import yaml
from tiny_runs import start_local_cluster

from rayunify.actors.policy import PolicyModule, TrainBatch, grpo_loss_fn
from rayunify.actors.workers import behaviour_logprobs
from rayunify.config import load_config
from rayunify.models.janus.factory import TINY, build_janus
from rayunify.models.janus.model import JanusUnifiedModel
from rayunify.preflight import UserError, check_algorithm
from rayunify.rewards import judgement_reward, weighted_rewards
from rayunify.train import Trainer
from rayunify.training_data import TrainingData
from rayunify.types import JudgedSample, Judgement, Prompt, Sample, SamplingSettings, Verdict

STEPS = 3
PROMPTS_PER_STEP = 2

# ---------------------------------------------------------------------------------------------------------
# Unit level: no Ray.


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_janus(TINY, seed=0)
    return JanusUnifiedModel(model, processor)


@pytest.mark.parametrize("geometry", ["conditional", "cfg"])
def test_first_on_policy_ratio_is_one(tiny, geometry):
    """Behaviour log-probs recorded as the rollout actor does (one prompt's group at a time, eval mode) against
    the learner's loss on the whole batch (train mode, prompts of other lengths beside them): ratio 1."""
    settings = SamplingSettings(guidance_scale=2.0, temperature=0.9, top_k=50, geometry=geometry)
    prompts, n = ["a red circle", "two big blue squares left of a green triangle"], 3
    out = tiny.generate(prompts, n=n, settings=settings, seed=3)
    policy = PolicyModule(tiny)
    texts = [p for p in prompts for _ in range(n)]
    behaviour = np.concatenate(
        [behaviour_logprobs(policy, texts[i : i + n], out.image_tokens[i : i + n], settings) for i in (0, n)]
    )
    policy.train()
    batch = TrainBatch(
        prompts=texts[::-1], chosen=out.image_tokens.flip(0), geometry=geometry, guidance_scale=2.0,
        old_logp=torch.as_tensor(behaviour[::-1].copy()), advantages=torch.linspace(-1, 1, len(texts)),
    )  # fmt: skip
    loss, metrics = grpo_loss_fn(policy, batch, clip_eps=0.2, clip_eps_high=None, beta=0.0)
    assert abs(metrics["ratio_min"] - 1) < 1e-5 and abs(metrics["ratio_max"] - 1) < 1e-5
    assert metrics["clip_fraction"] == 0.0
    loss.backward()  # the gradient reaches the trained parameters
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters() if p.requires_grad)


def test_generation_logprobs_are_the_scored_distribution_only_for_cfg_at_temperature_one(tiny):
    """Why the rollout actor recomputes: sampling's own log-probs are the guided logits at temperature 1."""
    policy = PolicyModule(tiny).eval()
    settings = SamplingSettings(guidance_scale=2.0, geometry="cfg")
    out = tiny.generate(["a red circle"], n=2, settings=settings, seed=1)
    scored = behaviour_logprobs(policy, ["a red circle"] * 2, out.image_tokens, settings)
    np.testing.assert_allclose(out.logprobs.numpy(), scored, atol=1e-4)
    conditional = behaviour_logprobs(policy, ["a red circle"] * 2, out.image_tokens, SamplingSettings(guidance_scale=2.0))
    assert np.abs(out.logprobs.numpy() - conditional).max() > 1e-3


def test_grpo_needs_the_online_loop(tmp_path):
    with pytest.raises(UserError, match="trainer.mode=online"):
        check_algorithm(load_config(None, ["algorithm.type=grpo", "trainer.mode=offline"]))


def judgement(verdict: Verdict, score: float) -> Judgement:
    return Judgement(verdict, score)


def test_rewards_score_verdict_invalid_and_weighted_sum():
    yes, no, bad = judgement(Verdict.ACCEPT, 0.8), judgement(Verdict.REJECT, 0.3), judgement(Verdict.INVALID, 0.6)
    assert [judgement_reward(j, "score") for j in (yes, no, bad)] == [0.8, 0.3, 0.0]
    assert [judgement_reward(j, "verdict") for j in (yes, no, bad)] == [1.0, 0.0, 0.0]
    rewards, invalid = weighted_rewards([[yes, no, bad], [no, bad, yes]], [1.0, -0.5], "score")
    assert rewards == pytest.approx([0.8 - 0.15, 0.3, -0.4]) and invalid == [0, 1, 1]
    with pytest.raises(ValueError):
        weighted_rewards([[yes], [yes, no]], [1.0, 1.0], "score")


def group(prompt_id: str, rewards: list[float], version: int = 0) -> list[JudgedSample]:
    prompt = Prompt(prompt_id, f"prompt {prompt_id}")
    return [
        JudgedSample(
            Sample(f"{prompt_id}-{i}", prompt, np.arange(4), version, behaviour_logprobs=np.full(4, -1.0, np.float32)),
            judgement(Verdict.ACCEPT if r > 0.5 else Verdict.REJECT, r), reward=r,
        )  # fmt: skip
        for i, r in enumerate(rewards)
    ]


def test_groups_are_taken_freshest_first_once_with_equal_and_stale_ones_counted():
    prompts = [Prompt(f"p{i}", f"prompt p{i}") for i in range(4)]
    data = TrainingData(prompts, keep_groups=True)
    data.add_groups([group("p0", [1.0, 0.0], version=0), group("p1", [0.5, 0.5], version=1)], step=0)
    data.add_groups([group("p2", [0.2, 0.9], version=1), group("p3", [0.1, 0.4], version=1)], step=1)
    taken, counts = data.take_groups(1, current_version=1, max_lag=0)
    assert [g[0].sample.prompt.prompt_id for g in taken] == ["p3"]
    assert counts == {"skipped_groups": 1, "stale_groups": 1, "invalid_rewards": 0}
    restored = TrainingData(prompts, keep_groups=True)
    restored.load_state_dict(data.state_dict())
    again, _ = restored.take_groups(4, current_version=1, max_lag=0)
    assert [g[0].sample.prompt.prompt_id for g in again] == ["p2"]
    np.testing.assert_array_equal(again[0][0].sample.behaviour_logprobs, np.full(4, -1.0))
    assert again[0][1].reward == 0.9 and restored.take_groups(4, 1, 0)[0] == []


# ---------------------------------------------------------------------------------------------------------
# Through `Trainer` on a local Ray cluster.


@pytest.fixture(scope="module")
def local_cluster():
    start_local_cluster(3)  # actors import tests/fixture_judges.py as a user's package
    yield
    ray.shutdown()


def grpo_config(tmp_path: Path, run_name: str, *overrides: str, extra: dict | None = None):
    path = None
    if extra is not None:
        path = tmp_path / f"{run_name}.yaml"
        path.write_text(yaml.safe_dump(extra))
    return load_config(path, [
        "model.path=builtin:tiny", "algorithm.type=grpo", "algorithm.reward=verdict",
        "judge.type=noisy", "judge.base.type=shapes_checker", "judge.random_fraction=1.0",
        "prompts.n_train=8", "prompts.n_eval=2", "sampling.samples_per_prompt=4", "sampling.guidance_scale=2.0",
        "rollout.num_cpus=0.5", "judge_actors.num_cpus=0.5", "learner.batch_size=2", "learner.lr=1e-3",
        f"trainer.steps={STEPS}", f"trainer.prompts_per_step={PROMPTS_PER_STEP}", "trainer.eval_every=100",
        "trainer.eval_prompts=2", "trainer.checkpoint_every=2", f"trainer.output_dir={tmp_path}",
        f"trainer.run_name={run_name}", "logger.type=jsonl", "logger.image_every=100", "guard.probe_size=2",
        *overrides,
    ])  # fmt: skip


def train_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/skipped_batches" in r]


@pytest.fixture(scope="module")
def sync_run(local_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpo")
    Trainer(grpo_config(tmp, "sync")).run()
    return tmp / "sync"


def test_sync_grpo_trains_on_policy_and_pushes(sync_run):
    rows = train_rows(sync_run)
    assert len(rows) == STEPS
    trained = [r for r in rows if "train/loss" in r]
    assert trained, "no step trained"
    for r in trained:
        assert r["train/first_ratio_deviation"] < 1e-4  # the learner scores the recorded behaviour exactly
        assert r["train/staleness_max"] == 0
        for key in ("clip_fraction", "kl", "reward_mean", "advantage_abs_mean", "skipped_groups", "ratio_mean"):
            assert math.isfinite(r[f"train/{key}"]), key
    assert any(r.get("train/grad_norm", 0.0) > 0 for r in trained)
    versions = [r["push/version"] for r in rows if "push/version" in r]
    assert versions == sorted(versions) and versions[-1] >= 1


def test_async_grpo_bounds_staleness(local_cluster, tmp_path):
    Trainer(grpo_config(tmp_path, "async", "trainer.sync=async", "trainer.max_staleness=1",
                        "algorithm.ppo_epochs=2", "algorithm.mini_batch_size=4")).run()  # fmt: skip
    rows = train_rows(tmp_path / "async")
    assert len(rows) == STEPS
    trained = [r for r in rows if "train/loss" in r]
    assert trained and all(r["train/updates"] >= 2 for r in trained)
    # A step is ppo_epochs × mini-batches versions: lag at most max_staleness steps' worth of updates.
    assert max(r["train/staleness_max"] for r in trained) <= 2 * 2 * 2
    # The ratio is against the policy that drew each image: 1 where it is the learner's, not where it lags.
    for r in trained:
        assert (r["train/first_ratio_deviation"] < 1e-4) == (r["train/staleness_max"] == 0), r


def test_all_equal_rewards_are_skipped_and_counted(local_cluster, tmp_path):
    Trainer(grpo_config(tmp_path, "accept", "judge.always_accept=true")).run()
    rows = train_rows(tmp_path / "accept")
    assert all("train/loss" not in r for r in rows)
    assert rows[-1]["train/skipped_groups"] == STEPS * PROMPTS_PER_STEP
    assert rows[-1]["train/skipped_batches"] == STEPS


def test_weighted_rewards_from_a_python_judge_and_a_noisy_judge(local_cluster, tmp_path):
    rewards = [
        {"judge": {"type": "python", "import_path": "fixture_judges:brighter_than_half"}, "weight": 1.0},
        {"judge": {"type": "noisy", "base": {"type": "shapes_checker"}, "random_fraction": 1.0}, "weight": 0.5},
    ]
    cfg = grpo_config(tmp_path, "weighted", "algorithm.reward=score", extra={"algorithm": {"rewards": rewards}})
    Trainer(cfg).run()
    trained = [r for r in train_rows(tmp_path / "weighted") if "train/loss" in r]
    assert trained
    # brighter_than_half's score is the mean brightness in [0, 1]; the noisy judge adds 0 or 0.5.
    assert all(0.0 <= r["train/reward_mean"] <= 1.5 for r in trained)


def test_resume_continues_like_an_uninterrupted_run(tmp_path, sync_run):
    Trainer(grpo_config(tmp_path, "sync", f"trainer.steps={STEPS - 1}")).run()
    Trainer(grpo_config(tmp_path, "sync", "trainer.resume=true")).run()
    resumed = {r["step"]: r for r in train_rows(tmp_path / "sync")}
    straight = {r["step"]: r for r in train_rows(sync_run)}
    assert sorted(resumed) == sorted(straight)
    for key in ("train/loss", "train/skipped_groups", "data/prompts_consumed", "push/version"):
        a, b = resumed[STEPS].get(key), straight[STEPS].get(key)
        assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), (key, a, b)


def test_kl_to_the_reference_with_lora_and_two_ranks(local_cluster, tmp_path):
    """beta > 0: per-token reference log-probs (LoRA adapter off), computed by both learner ranks on their
    shards; the KL starts at 0 (policy = reference) and the run trains."""
    Trainer(grpo_config(tmp_path, "kl", "algorithm.beta=0.1", "model.trainable=lora", "learner.num_ranks=2",
                        "learner.num_cpus=0.5", "learner.zero_stage=2")).run()  # fmt: skip
    trained = [r for r in train_rows(tmp_path / "kl") if "train/loss" in r]
    assert trained and abs(trained[0]["train/kl"]) < 1e-5 and all(math.isfinite(r["train/kl"]) for r in trained)
