"""Both families at bfloat16 on the real-weights load path: a tiny model saved to disk, loaded through
`build_model` as a checkpoint directory is, then a self-judgement and a generation. (The in-memory factories
cast every part to one dtype; a real load keeps Show-o's MAGVIT in float32 under a bf16 Phi, which once broke
the first self-judgement with `Input type (BFloat16) and bias type (float)`.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayunify.config import load_config
from rayunify.models import build_model
from rayunify.types import Verdict


@pytest.fixture(scope="module")
def saved_showo(tmp_path_factory):
    from rayunify.models.showo.factory import build_showo, save_showo_dir

    path = tmp_path_factory.mktemp("showo") / "tiny-showo"
    save_showo_dir(path, *build_showo())
    return path


@pytest.fixture(scope="module")
def saved_janus(tmp_path_factory):
    from rayunify.models.janus.factory import build_janus

    path = tmp_path_factory.mktemp("janus") / "tiny-janus"
    model, processor = build_janus()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _judge_and_generate(family: str, path) -> None:
    cfg = load_config(
        None, [f"model.type={family}", f"model.path={path}", "model.dtype=bfloat16", "model.device=cpu"]
    )
    model = build_model(cfg.model)
    assert next(p for p in model.module().parameters() if p.requires_grad).dtype == torch.bfloat16
    out = model.generate(["a red circle", "a blue square"], n=1, seed=0, decode=True)
    assert out.images is not None and out.images.dtype == np.uint8
    judgements = model.judge(list(out.images), ["a red circle", "a blue square"])
    assert len(judgements) == 2
    for judgement in judgements:
        assert isinstance(judgement.verdict, Verdict) and 0.0 <= judgement.score <= 1.0


def test_show_o_judges_its_images_at_bfloat16_when_loaded_from_disk(saved_showo):
    _judge_and_generate("showo", saved_showo)


def test_janus_judges_its_images_at_bfloat16_when_loaded_from_disk(saved_janus):
    _judge_and_generate("janus", saved_janus)
