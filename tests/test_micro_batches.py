"""Bounded-memory rollouts and judging: `rollout.max_rows` cuts an actor's prompts into generate calls of
whole prompts, and the driver hands a chunk to its actors in parts of that size (one task each);
`judge_actors.batch_size` cuts a part's images into judge calls. None of it changes what is drawn or judged.
The roles run in-process here (no Ray): the cutting is theirs, not the cluster's.
"""

from __future__ import annotations

import numpy as np
import pytest

from rayunify.actors.workers import JudgeWorker, Rollout, RolloutWorker, prompts_per_call
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


def judge_in_parts(judge: JudgeWorker, parts: list[Rollout], fraction: float) -> list:
    return [item for part in parts for item in judge.judge_rollout(part, reference_fraction=fraction, seed=5)[0]]


def test_a_chunk_handed_over_in_parts_is_the_chunk_in_one_task():
    """The collector's parts: each a task of whole prompts; same images, sample ids and reference draws."""
    referee = ["guard.reference.type=python", "guard.reference.import_path=fixture_judges:brighter_than_half"]
    cfg = config("rollout.max_rows=8", "guard.enabled=true", "guard.fraction=0.5", *referee)  # 2 prompts a part
    per_part = prompts_per_call(cfg)
    assert per_part == 2
    worker = RolloutWorker(cfg.model_dump(mode="json"))
    whole = worker.generate(PROMPTS, N, seed=5, chunk=1)
    parts = [worker.generate(PROMPTS[i : i + per_part], N, seed=5, chunk=1, first=i) for i in range(0, len(PROMPTS), per_part)]
    assert [len(part.images) for part in parts] == [per_part * N] * 2  # no task holds more than its part
    assert [s.sample_id for p in parts for s in p.samples] == [s.sample_id for s in whole.samples]
    assert np.array_equal(np.concatenate([p.images for p in parts]), whole.images)
    judge = JudgeWorker(cfg.model_dump(mode="json"))
    one, split = judge_in_parts(judge, [whole], 0.5), judge_in_parts(judge, parts, 0.5)
    assert [a.reference is None for a in one] == [b.reference is None for b in split]
    assert any(a.reference is not None for a in one) and any(a.reference is None for a in one)


def test_parts_need_max_rows():
    worker = RolloutWorker(config().model_dump(mode="json"))
    assert prompts_per_call(worker.cfg) is None
    with pytest.raises(ValueError, match="only under rollout.max_rows"):
        worker.generate(PROMPTS[2:], N, seed=5, chunk=0, first=2)
