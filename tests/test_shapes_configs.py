"""The ShapesWorld experiment configs load, and a lax accept threshold turns the own judge's doubts into yeses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rayunify.config import load_config
from rayunify.judges.inprocess import SelfJudge
from rayunify.types import Judgement, Prompt, Verdict

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "shapes").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shapes_config_loads(path: Path):
    cfg = load_config(path)
    assert cfg.prompts.eval_split == "test" and cfg.trainer.judge_set_size > 0


def test_co_degradation_trains_generation_on_its_own_lax_judge():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "shapes" / "co_degradation.yaml")
    assert cfg.judge.type == "self" and cfg.judge.weights == "live"
    assert cfg.judge.accept_threshold is not None and cfg.judge.accept_threshold < 0.5
    assert cfg.algorithm.type == "dpo"  # a loss on image tokens only: generation is what trains


class _Answers:
    """A stand-in model whose answers say no while its soft scores vary."""

    def judge(self, images, texts, max_new_tokens):
        return [Judgement(Verdict.REJECT, score, "The score is 0") for score in (0.02, 0.1, 0.6)][: len(images)]


def test_accept_threshold_reads_the_verdict_from_the_soft_score():
    images, prompts = [np.zeros((2, 2, 3), np.uint8)] * 3, [Prompt(f"p{i}", "a circle") for i in range(3)]
    assert [j.verdict for j in SelfJudge(_Answers()).judge(images, prompts)] == [Verdict.REJECT] * 3
    lax = SelfJudge(_Answers(), accept_threshold=0.05).judge(images, prompts)
    assert [j.verdict for j in lax] == [Verdict.REJECT, Verdict.ACCEPT, Verdict.ACCEPT]
    assert [j.score for j in lax] == [0.02, 0.1, 0.6] and lax[1].answer == "The score is 0"


def test_accept_threshold_reaches_the_built_judge_and_is_checked():
    from rayunify.config import Config
    from rayunify.judges.base import build_judge

    cfg = Config.model_validate({"judge": {"type": "self", "accept_threshold": 0.2}})
    assert build_judge(cfg.judge, lambda: _Answers()).accept_threshold == 0.2  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="accept_threshold"):
        Config.model_validate({"judge": {"type": "self", "accept_threshold": 1.5}})
