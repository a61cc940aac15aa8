"""Draws 32x32 images of a Spec: crisp palette-coloured shapes on black, at random sizes and places.

Every object gets an axis-aligned s x s box (8 <= s <= 13 px: at least two 4x4 VQ tokens across) with a gap
of GAP px to every other box, so the checker can tell objects apart even after a blurry VQ round trip.
The renderer also returns what it drew (`SceneObject`s), which is the ground truth the checker is tested
against. Pure numpy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from rayunify.shapes.world import (
    BACKGROUND,
    CATEGORIES,
    COLOURS,
    IMAGE_SIZE,
    PALETTE,
    SceneObject,
    Spec,
    all_specs,
    relation_holds,
)

MIN_SIZE = 8
MAX_SIZE = {1: 13, 2: 13, 3: 12, 4: 11}  # by object count: four 11 px objects still fit in a 2x2 layout
GAP = 3  # free pixels between object boxes (and a 1 px border to the image edge)
BORDER = 1
# Relation prompts are drawn with this much centroid offset, well above the checker's RELATION_MARGIN,
# so a correct rendering is never a borderline case.
RENDER_RELATION_OFFSET = 6.0
_MAX_LAYOUT_TRIES = 200


def render(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """A (32, 32, 3) uint8 image showing `spec`. Draw one for another spec to get a negative."""
    return render_with_objects(spec, rng)[0]


def rendered_cases(n: int, seed: int) -> tuple[np.ndarray, list[Spec]]:
    """n rendered images, categories in turn (each a random spec of it), with the spec each was drawn for."""
    rng = np.random.default_rng(seed)
    by_category = [all_specs(c) for c in CATEGORIES]
    picks = [by_category[i % len(by_category)] for i in range(n)]
    specs = [specs[rng.integers(len(specs))] for specs in picks]
    return np.stack([render(s, rng) for s in specs]), specs


def render_with_objects(spec: Spec, rng: np.random.Generator) -> tuple[np.ndarray, tuple[SceneObject, ...]]:
    """The image and the objects drawn in it (shape, colour, pixel centroid, area, box)."""
    kinds = [(o.shape, o.colour) for o in spec.objects for _ in range(o.count)]
    for _ in range(_MAX_LAYOUT_TRIES):
        kinds_coloured = [(shape, colour or COLOURS[rng.integers(len(COLOURS))]) for shape, colour in kinds]
        boxes = _random_layout(len(kinds), rng)
        if boxes is None:
            continue
        objects = tuple(
            _place(shape, colour, box) for (shape, colour), box in zip(kinds_coloured, boxes, strict=True)
        )
        if spec.relation is None or relation_holds(
            objects[0], objects[1], spec.relation, RENDER_RELATION_OFFSET
        ):
            return draw(objects), objects
    raise RuntimeError(f"could not lay out {spec} in {_MAX_LAYOUT_TRIES} tries")


def draw(objects: tuple[SceneObject, ...]) -> np.ndarray:
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    for obj in objects:
        x0, y0, size, _ = obj.box
        mask = shape_mask(obj.shape, size)
        image[y0 : y0 + size, x0 : x0 + size][mask] = PALETTE[obj.colour]
    return image


def _random_layout(n: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]] | None:
    """n square boxes (x0, y0, size, size) with GAP px between them, or None if this draw did not fit."""
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(n):
        size = int(rng.integers(MIN_SIZE, MAX_SIZE[n] + 1))
        for _ in range(20):
            x0, y0 = rng.integers(BORDER, IMAGE_SIZE - BORDER - size + 1, size=2)
            box = (int(x0), int(y0), size, size)
            if all(_apart(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """At least GAP free pixels between the boxes along x or along y."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return bx >= ax + aw + GAP or ax >= bx + bw + GAP or by >= ay + ah + GAP or ay >= by + bh + GAP


def _place(shape: str, colour: str, box: tuple[int, int, int, int]) -> SceneObject:
    x0, y0, size, _ = box
    ys, xs = np.nonzero(shape_mask(shape, size))
    centre = (x0 + float(xs.mean()), y0 + float(ys.mean()))
    return SceneObject(shape=shape, colour=colour, centre=centre, area=int(xs.size), box=box)


@lru_cache(maxsize=64)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean (size, size) mask; pixel centres decide coverage. The triangle points up."""
    centres = np.arange(size) + 0.5
    x, y = np.meshgrid(centres, centres)
    half = size / 2
    if shape == "square":
        mask = np.ones((size, size), bool)
    elif shape == "circle":
        mask = (x - half) ** 2 + (y - half) ** 2 <= half**2
    elif shape == "triangle":
        mask = np.abs(x - half) <= half * y / size
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask.setflags(write=False)
    return mask
