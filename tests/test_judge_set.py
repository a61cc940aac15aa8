"""The fixed judge set: balanced by the checker's label within each category, deterministic, cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rayunify.shapes.checker import check_batch
from rayunify.shapes.judge_set import JudgeSet, build_judge_set, cached_judge_set
from rayunify.shapes.render import render
from rayunify.shapes.splits import prompt_split
from rayunify.shapes.world import Spec
from rayunify.types import SamplingSettings

_, PROMPTS = prompt_split(0, 60, seed=0, eval_split="test")
SPECS = {p.text: Spec.from_dict(p.spec) for p in PROMPTS}


class FakeModel:
    """Generates a render of its prompt for even sample indices and a blank canvas for odd ones."""

    class _Out:
        def __init__(self, images):
            self.images = images

    def __init__(self):
        self.calls = 0

    def module(self):
        return object()  # no Janus VQ: renders are used as drawn

    def generate(self, texts, n, settings, seed, decode):
        self.calls += 1
        rng = np.random.default_rng(list(seed))
        blank = np.zeros((32, 32, 3), dtype=np.uint8)
        return self._Out([render(SPECS[t], rng) if i % 2 == 0 else blank for t in texts for i in range(n)])


def test_judge_set_is_balanced_per_category_labelled_by_the_checker_and_deterministic():
    judge_set = build_judge_set(FakeModel(), PROMPTS, size=48, seed=3, settings=SamplingSettings())
    for category in set(judge_set.categories):
        labels = judge_set.labels[[c == category for c in judge_set.categories]]
        assert labels.sum() == (~labels).sum() == 4, category  # 48 / (6 categories x 2 labels)
    truth = [r.aligned for r in check_batch(judge_set.images, [SPECS[t] for t in judge_set.texts])]
    assert list(judge_set.labels) == truth
    assert {"own", "render"} == set(judge_set.sources)
    again = build_judge_set(FakeModel(), PROMPTS, size=48, seed=3, settings=SamplingSettings())
    assert np.array_equal(again.images, judge_set.images) and again.texts == judge_set.texts
    with pytest.raises(ValueError, match="judge_set_size=6 is too small"):
        build_judge_set(FakeModel(), PROMPTS, size=6, seed=3, settings=SamplingSettings())


def test_judge_set_round_trips_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import rayunify.models

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv("RAYUNIFY_CACHE", str(tmp_path / "cache"))
    fake = FakeModel()
    monkeypatch.setattr(rayunify.models, "build_model", lambda cfg: fake)
    first = cached_judge_set(model_dir, PROMPTS, 24, 0, SamplingSettings())
    calls = fake.calls
    second = cached_judge_set(model_dir, PROMPTS, 24, 0, SamplingSettings())
    assert fake.calls == calls  # read from the cache, not drawn again
    assert second.texts == first.texts and np.array_equal(second.images, first.images)
    assert np.array_equal(second.labels, first.labels) and second.sources == first.sources
    first.save(tmp_path / "set.npz")
    assert JudgeSet.load(tmp_path / "set.npz").categories == first.categories


def test_config_refuses_a_judge_set_without_a_checker():
    from rayunify.config import Config

    assert Config.model_validate({"trainer": {"judge_set_size": 96}}).trainer.judge_set_size == 96
    with pytest.raises(ValueError, match="judge_set_size=96 needs a prompt source that labels images"):
        Config.model_validate({"prompts": {"source": "file", "path": "x.txt"}, "trainer": {"judge_set_size": 96}})
