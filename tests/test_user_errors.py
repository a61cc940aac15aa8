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
