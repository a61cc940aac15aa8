"""The in-process judges (python, noisy), ShapesWorld's checker judge and `build_judge`."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from judge_samples import random_images, text_prompts

from rayunify.config import load_config
from rayunify.judges.base import build_judge, load_callable
from rayunify.judges.inprocess import NoisyJudge, PythonJudge
from rayunify.types import Judgement, Prompt, Verdict

# ---------------------------------------------------------------------------------------------- python judge
USER_JUDGE = """
import numpy as np

def score(images, prompts, threshold=0.5):
    assert all(p.text and p.category for p in prompts)  # Prompt objects: text, category, spec
    means = [float(np.asarray(i).mean()) / 255 for i in images]
    verdicts = [True, 0, "The score is 1", "1", "maybe"][: len(images)]
    return verdicts, [m * 3 - 1 for m in means]

def wrong_type(images, prompts):
    return [1] * len(images)

def wrong_length(images, prompts):
    return [1], [1.0]
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_judges.py").write_text(USER_JUDGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_judges", None)
    return "my_judges"


def test_python_judge_reads_any_verdict_form_and_clips_scores(user_module):
    judge = build_judge(load_config(None, ["judge.type=python", f"judge.import_path={user_module}:score"]).judge)
    assert isinstance(judge, PythonJudge) and judge.name == f"python:{user_module}:score"
    out = judge.judge(random_images(5), text_prompts(5))
    assert [j.verdict for j in out] == [Verdict.ACCEPT, Verdict.REJECT, Verdict.ACCEPT, Verdict.ACCEPT, Verdict.INVALID]
    assert all(0.0 <= j.score <= 1.0 for j in out)


def test_python_judge_errors_name_the_problem(user_module):
    with pytest.raises(TypeError, match="must return \\(verdicts, scores\\)"):
        PythonJudge(f"{user_module}:wrong_type").judge(random_images(2), text_prompts(2))
    with pytest.raises(ValueError, match="returned 1 verdicts and 1 scores for 2 images"):
        PythonJudge(f"{user_module}:wrong_length").judge(random_images(2), text_prompts(2))
    with pytest.raises(ImportError, match="cannot import module 'no_such_mod'"):
        load_callable("no_such_mod:fn")
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        load_callable(f"{user_module}:nope")
    with pytest.raises(ValueError, match="must look like"):
        load_callable("no_colon")


# ---------------------------------------------------------------------------------------------- noisy judge
class _Fixed:
    """A base judge whose verdict is a fixed function of the prompt id (even ids accept)."""

    name = "fixed"

    def judge(self, images, prompts):
        return [
            Judgement(Verdict(int(p.prompt_id) % 2 == 0), float(int(p.prompt_id) % 2 == 0), "a", self.name)
            for p in prompts
        ]


def test_noisy_judge_flip_random_always_accept():
    images, prompts = random_images(40), text_prompts(40)
    base = _Fixed().judge(images, prompts)
    flipped = NoisyJudge(_Fixed(), flip_fraction=1.0).judge(images, prompts)
    assert all(f.verdict != b.verdict and f.score == 1 - b.score for f, b in zip(flipped, base, strict=True))
    assert flipped[0].judge == "noisy(fixed)"
    assert all(j.accepted for j in NoisyJudge(_Fixed(), always_accept=True).judge(images, prompts))
    coin = NoisyJudge(_Fixed(), random_fraction=1.0, seed=3).judge(images, prompts)
    assert 5 < sum(j.accepted for j in coin) < 35  # a coin flip per sample, not a constant
    assert [j.verdict for j in NoisyJudge(_Fixed()).judge(images, prompts)] == [b.verdict for b in base]


def test_noisy_judge_is_deterministic_per_sample_not_per_call_order():
    images, prompts = random_images(30), text_prompts(30)
    judge = NoisyJudge(_Fixed(), flip_fraction=0.3, random_fraction=0.3, seed=7)
    whole = judge.judge(images, prompts)
    backwards = judge.judge(images[::-1], prompts[::-1])[::-1]
    in_chunks = judge.judge(images[:7], prompts[:7]) + judge.judge(images[7:], prompts[7:])
    assert whole == backwards == in_chunks
    other_seed = NoisyJudge(_Fixed(), flip_fraction=0.3, random_fraction=0.3, seed=8).judge(images, prompts)
    assert other_seed != whole


# ---------------------------------------------------------------------------------------------- shapes checker
def test_shapes_checker_judge_accepts_what_the_renderer_drew():
    from rayunify.shapes.render import render
    from rayunify.shapes.world import Spec, generate_prompts

    train, _ = generate_prompts(12, 1, seed=0)
    rng = np.random.default_rng(0)
    images = [render(Spec.from_dict(p.spec), rng) for p in train]
    judge = build_judge(load_config(None, ["judge.type=shapes_checker"]).judge)
    assert all(j.accepted and j.score == 1.0 for j in judge.judge(images, train))
    shifted = judge.judge(images[1:] + images[:1], train)  # each image now answers another prompt
    assert sum(not j.accepted for j in shifted) >= 6
    with pytest.raises(ValueError, match="needs ShapesWorld prompts with a spec"):
        judge.judge(images[:1], [Prompt("free", "a cat")])


