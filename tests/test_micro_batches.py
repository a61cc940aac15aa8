"""Bounded-memory rollouts and judging: `rollout.max_rows` cuts an actor's prompts into generate calls of
whole prompts, `judge_actors.batch_size` cuts a chunk's images into judge calls. Neither changes what is
drawn or judged. The roles run in-process here (no Ray): the cutting is theirs, not the cluster's.
"""

from __future__ import annotations

import numpy as np
import pytest

from rayunify.actors.workers import JudgeWorker, RolloutWorker
from rayunify.config import ConfigError, load_config
from rayunify.models import resolve_model_path
from rayunify.types import Prompt

N = 2
# Different lengths: each call pads its prompts differently, which must not change a prompt's images.
TEXTS = ["a circle", "three small yellow triangles above a big square", "a red square", "two blue circles"]
PROMPTS = [Prompt(f"p{i}", text) for i, text in enumerate(TEXTS)]


def config(*overrides: str):
    base = [
        f"model.path={resolve_model_path('builtin:tiny')}",
        f"sampling.samples_per_prompt={N}",
        "sampling.guidance_scale=2.0",  # CFG: a prompt takes 2 x N rows
        "judge.type=self",  # the model judges: batched forwards over padded questions
        "guard.enabled=false",
    ]
    return load_config(None, base + list(overrides))


def rollout_tokens(max_rows: str) -> np.ndarray:
    worker = RolloutWorker(config(f"rollout.max_rows={max_rows}").model_dump(mode="json"))
    rollout = worker.generate(PROMPTS, N, seed=7, chunk=0)
    assert [s.prompt.prompt_id for s in rollout.samples] == [p.prompt_id for p in PROMPTS for _ in range(N)]
    assert len(rollout.images) == len(PROMPTS) * N
    return np.stack([s.image_tokens for s in rollout.samples])


def test_a_prompt_draws_the_same_images_whatever_max_rows_is():
    one_per_call = rollout_tokens("4")  # 2 samples x 2 (CFG twins): one prompt per call
    three_per_call = rollout_tokens("14")  # three whole prompts (12 rows), then the last one
    all_at_once = rollout_tokens("1000")
    assert np.array_equal(one_per_call, all_at_once) and np.array_equal(three_per_call, all_at_once)
    assert len({row.tobytes() for row in all_at_once}) == len(all_at_once)  # samples still differ


def test_max_rows_below_one_prompt_is_refused_with_the_rows_it_needs():
    with pytest.raises(ConfigError, match=r"rollout.max_rows=3 is less than one prompt's rows \(4"):
        config("rollout.max_rows=3")
    config("rollout.max_rows=2", "sampling.guidance_scale=1.0")  # no CFG twins: a prompt takes N rows


def test_judging_in_batches_gives_the_same_verdicts():
    rollout = RolloutWorker(config().model_dump(mode="json")).generate(PROMPTS, N, seed=3, chunk=0)
    judged = {}
    for batch_size in ("null", "3"):
        judge = JudgeWorker(config(f"judge_actors.batch_size={batch_size}").model_dump(mode="json"))
        judged[batch_size] = judge.judge_rollout(rollout, reference_fraction=0.0, seed=3)[0]
    for a, b in zip(judged["null"], judged["3"], strict=True):
        assert a.sample.sample_id == b.sample.sample_id and a.judgement.verdict == b.judgement.verdict
        assert a.judgement.score == pytest.approx(b.judgement.score, abs=1e-5)
