"""Draws 32x32 images of a v2 spec (`world_v2`), with v1's layout rules (square boxes, GAP px apart).

A named size draws the box at SIZE_RANGES[size]; an unnamed one at v1's 8 to 11-13 px, which the checker
reads as neither small nor large only when it is asked for a size (a single-object prompt). Pure numpy.
"""

from __future__ import annotations

import functools
from functools import lru_cache

import numpy as np

from rayunify.shapes.render import BORDER, MAX_SIZE, MIN_SIZE, RENDER_RELATION_OFFSET, _apart
from rayunify.shapes.world import BACKGROUND, CATEGORIES, IMAGE_SIZE, SceneObject, relation_holds
from rayunify.shapes.world_v2 import COLOURS_V2, PALETTE_V2, SIZE_RANGES, SpecV2, all_specs_v2

_MAX_LAYOUT_TRIES = 200


def render_v2(spec: SpecV2, rng: np.random.Generator) -> np.ndarray:
    """A (32, 32, 3) uint8 image showing `spec`."""
    return render_v2_with_objects(spec, rng)[0]


@functools.cache
def _specs(category: str) -> tuple[SpecV2, ...]:
    return tuple(all_specs_v2(category))


def rendered_cases_v2(n: int, seed: int) -> tuple[np.ndarray, list[SpecV2]]:
    """n rendered v2 images, categories in turn (each a random spec of it), with their specs."""
    rng = np.random.default_rng(seed)
    specs = [_specs(CATEGORIES[i % len(CATEGORIES)]) for i in range(n)]
    picked = [s[int(rng.integers(len(s)))] for s in specs]
    return np.stack([render_v2(s, rng) for s in picked]), picked


def render_v2_with_objects(spec: SpecV2, rng: np.random.Generator) -> tuple[np.ndarray, tuple[SceneObject, ...]]:
    kinds = [(o.shape, o.colour, o.size) for o in spec.objects for _ in range(o.count)]
    for _ in range(_MAX_LAYOUT_TRIES):
        boxes = _layout([size for _, _, size in kinds], rng)
        if boxes is None:
            continue
        objects = tuple(
            _place(shape, colour or COLOURS_V2[int(rng.integers(len(COLOURS_V2)))], box)
            for (shape, colour, _), box in zip(kinds, boxes, strict=True)
        )
        if spec.relation is None or relation_holds(objects[0], objects[1], spec.relation, RENDER_RELATION_OFFSET):
            return draw_v2(objects), objects
    raise RuntimeError(f"could not lay out {spec} in {_MAX_LAYOUT_TRIES} tries")


def draw_v2(objects: tuple[SceneObject, ...]) -> np.ndarray:
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    for obj in objects:
        x0, y0, size, _ = obj.box
        image[y0 : y0 + size, x0 : x0 + size][shape_mask_v2(obj.shape, size)] = PALETTE_V2[obj.colour]
    return image


def _layout(sizes: list[str | None], rng: np.random.Generator) -> list[tuple[int, int, int, int]] | None:
    boxes: list[tuple[int, int, int, int]] = []
    for named in sizes:
        low, high = SIZE_RANGES[named] if named else (MIN_SIZE, MAX_SIZE[len(sizes)])
        side = int(rng.integers(low, high + 1))
        for _ in range(20):
            x0, y0 = rng.integers(BORDER, IMAGE_SIZE - BORDER - side + 1, size=2)
            box = (int(x0), int(y0), side, side)
            if all(_apart(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _place(shape: str, colour: str, box: tuple[int, int, int, int]) -> SceneObject:
    x0, y0, side, _ = box
    ys, xs = np.nonzero(shape_mask_v2(shape, side))
    return SceneObject(shape, colour, (x0 + float(xs.mean()), y0 + float(ys.mean())), int(xs.size), box)


@lru_cache(maxsize=256)
def shape_mask_v2(shape: str, size: int) -> np.ndarray:
    """Boolean (size, size) mask; pixel centres decide coverage. Triangles are v1's, turned."""
    centres = np.arange(size) + 0.5
    x, y = np.meshgrid(centres, centres)
    half = size / 2
    up = np.abs(x - half) <= half * y / size
    masks = {
        "square": lambda: np.ones((size, size), bool),
        "circle": lambda: (x - half) ** 2 + (y - half) ** 2 <= half**2,
        "diamond": lambda: _diamond(size),
        "triangle": lambda: up,
        "inverted triangle": lambda: up[::-1],
        "left triangle": lambda: up.T,  # apex at the left edge: points left
        "right triangle": lambda: up.T[:, ::-1],
    }
    if shape not in masks:
        raise ValueError(f"unknown v2 shape {shape!r}")
    mask = np.ascontiguousarray(masks[shape]())
    mask.setflags(write=False)
    return mask


def _diamond(size: int) -> np.ndarray:
    """An odd-sided pixel diamond has one-pixel tips that spur removal trims into an octagon (fill ~0.7,
    circle-like), so an odd box gets the even diamond one pixel smaller in its top-left corner."""
    even = size - size % 2
    centres = np.arange(even) + 0.5
    x, y = np.meshgrid(centres, centres)
    mask = np.zeros((size, size), bool)
    mask[:even, :even] = np.abs(x - even / 2) + np.abs(y - even / 2) <= even / 2
    mask.setflags(write=False)
    return mask


def random_training_images_v2(n: int, rng: np.random.Generator) -> np.ndarray:
    """v2 images of random specs, category first (uniformly), as `vq.random_training_images` draws v1's:
    the batches `vq.train_vq(..., images=random_training_images_v2)` trains a v2 tokenizer on."""
    images = []
    for _ in range(n):
        specs = _specs(CATEGORIES[int(rng.integers(len(CATEGORIES)))])
        images.append(render_v2(specs[int(rng.integers(len(specs)))], rng))
    return np.stack(images)
