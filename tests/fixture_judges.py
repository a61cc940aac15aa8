"""Judges for tests, importable by `judge: {type: python, import_path: "fixture_judges:..."}` (tests/ is on
sys.path under pytest)."""

from __future__ import annotations

import numpy as np


def brighter_than_half(images, prompts):
    """Accepts an image whose mean brightness is above the middle grey: a deterministic referee that needs no
    model and, on a random model's images, accepts some and rejects others."""
    scores = [float(np.asarray(image, dtype=np.float64).mean() / 255.0) for image in images]
    return [score > 0.5 for score in scores], scores
