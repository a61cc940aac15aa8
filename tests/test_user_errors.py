"""Settings that would silently lose work are refused with a message that names them; outputs stay bounded."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rayunify.config import ConfigError, load_config
from rayunify.evaluation import MAX_GRID_SIDE, JudgedImage, save_grid
from rayunify.types import Judgement, Prompt, Verdict


def test_sync_with_sparse_pushes_is_refused():
    with pytest.raises(ConfigError, match=r"trainer.push_every=2 with trainer.sync=sync"):
        load_config(None, ["trainer.push_every=2"])


def test_async_pushes_rarer_than_the_staleness_bound_are_refused():
    with pytest.raises(ConfigError, match=r"push_every=3 exceeds trainer.max_staleness=2"):
        load_config(None, ["trainer.sync=async", "trainer.max_staleness=2", "trainer.push_every=3"])
    load_config(None, ["trainer.sync=async", "trainer.max_staleness=2", "trainer.push_every=2"])
    load_config(None, ["trainer.mode=offline", "trainer.push_every=4"])  # offline data has no staleness bound


@pytest.mark.parametrize("image_side", [32, 384])
def test_image_grids_are_bounded_thumbnails(tmp_path, image_side):
    verdict = Judgement(Verdict.ACCEPT, 0.9)
    items = [
        JudgedImage(Prompt(str(i), f"prompt {i}"), np.zeros((image_side, image_side, 3), np.uint8), verdict, verdict, None)
        for i in range(48)
    ]
    save_grid(items, tmp_path / "grid.png")
    width, height = Image.open(tmp_path / "grid.png").size
    assert width <= MAX_GRID_SIDE and height <= MAX_GRID_SIDE
    assert width >= 8 * min(image_side, 128)  # small images are still enlarged to be readable


def test_memory_estimate_follows_the_zero_stages():
    from rayunify.sizing import GIB, ModelShape, RunShape, kv_cache_bytes, learner_memory

    model = ModelShape(
        total_params=8 * GIB, language_model_params=4 * GIB, trainable_params=4 * GIB, num_layers=2,
        hidden_size=8, num_kv_heads=2, head_dim=4, num_image_tokens=4, prompt_tokens=4,
    )  # fmt: skip
    run = RunShape("bfloat16", True, 0, 4, 1, 2, False, True, 16)
    stage0 = learner_memory(model, run)
    # bf16 gradients and the fp32 copy the optimizer steps on; fp32 master weights and two moments
    assert stage0["weights"] == 16 and stage0["gradients"] == 24 and stage0["optimizer"] == 48
    assert stage0["reference_copy"] == 8
    stage2 = learner_memory(model, RunShape("bfloat16", True, 2, 4, 1, 2, False, True, 16))
    assert stage2["weights"] == 16 and stage2["gradients"] == 6 and stage2["optimizer"] == 12
    stage3 = learner_memory(model, RunShape("bfloat16", True, 3, 4, 1, 2, False, True, 16))
    assert stage3["weights"] == 4
    fp32 = learner_memory(model, RunShape("float32", False, 1, 4, 1, 2, False, False, 16))
    assert fp32["optimizer"] == 8 and fp32["reference_copy"] == 0  # no master copy in fp32; LoRA keeps none
    assert fp32["gradients"] == 16  # fp32 gradients, no second copy
    assert kv_cache_bytes(model, rows=3, dtype="bfloat16") == 2 * 2 * 2 * 4 * 8 * 3 * 2


def test_placement_that_can_never_fit_is_named():
    from rayunify.sizing import RoleRequest, placement_problems

    nodes = [{"CPU": 16, "GPU": 4}, {"CPU": 16, "GPU": 4}]
    fits = [RoleRequest("learner", 4, 2, 1), RoleRequest("rollout", 2, 2, 1)]
    assert placement_problems(fits, nodes) == []
    too_many = placement_problems([RoleRequest("learner", 8, 2, 1), RoleRequest("rollout", 2, 2, 1)], nodes)
    assert too_many == ["the run asks for 10 GPU (learner 8 x 1 + rollout 2 x 1) but the cluster has 8"]
    too_big = placement_problems([RoleRequest("learner", 1, 2, 8)], nodes)
    assert too_big == ["no node can hold one learner actor (2 CPU, 8 GPU); nodes have 16 CPU / 4 GPU, 16 CPU / 4 GPU"]


def test_a_renamed_key_names_its_new_name(tmp_path):
    (tmp_path / "old.yaml").write_text("judging: {num_actors: 2}\n")
    with pytest.raises(ConfigError, match="'judging' was renamed to 'judge_actors'"):
        load_config(tmp_path / "old.yaml")
    with pytest.raises(ConfigError, match="'judging' was renamed to 'judge_actors'"):
        load_config(None, ["judging.num_actors=2"])
    assert load_config(None, ["judge_actors.num_actors=2"]).judge_actors.num_actors == 2
