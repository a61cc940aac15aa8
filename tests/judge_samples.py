"""Images and prompts the judge tests share (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import numpy as np

from rayunify.types import Prompt


def random_images(n: int, seed: int = 0, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((size, size, 3)) * 255).astype(np.uint8) for _ in range(n)]


def text_prompts(n: int) -> list[Prompt]:
    texts = ["a red circle", "two blue squares left of a green triangle", "a cat", "a big yellow star", "x"]
    return [Prompt(str(i), texts[i % len(texts)] + f" {i}") for i in range(n)]
