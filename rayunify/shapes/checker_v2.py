"""The exact checker of ShapesWorld v2: does a 32x32 RGB image show a v2 spec?

v1's perception (`checker`) with v2's palette, shapes and sizes: pixels are classified by the same blend
rule against PALETTE_V2 (its own colour table), spurs removed and components labelled by v1's code, then
each blob's shape is read from its skewness (a triangle is lopsided; which axis and which sign say where it
points), its fill ratio (square ~1.0, circle ~0.8, diamond ~0.5) and its aspect; its size from its box.
`match_v2` is v1's GenEval-style rule: exactly the prompted objects and nothing else, sizes where named.
Deterministic and numpy-only.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

import numpy as np

from rayunify.shapes.checker import (
    _DROPPED_BITS,
    _KEPT_BITS,
    COLOUR_RESIDUAL,
    MAX_ASPECT,
    MAX_SIDE,
    MIN_COVERAGE,
    RELATION_MARGIN,
    TRIANGLE_MIN_SKEW,
    CheckResult,
    _label_components,
    _remove_spurs,
    check_in_chunks,
    describe_components,
)
from rayunify.shapes.world import SceneObject, relation_holds
from rayunify.shapes.world_v2 import COLOURS_V2, PALETTE_V2, SpecV2

TRIANGLE_FILL = (0.4, 0.88)
# A pixel diamond (even side, tips trimmed by spur removal) fills 0.56-0.62 of its box, a circle 0.75-0.8.
DIAMOND_FILL = (0.4, 0.68)
CIRCLE_FILL = (0.68, 0.93)  # at or above the upper end: square
# Read box side (the larger of width and height, px) -> size. Drawn sides are 8-9, 12-13 and 16-18; spur
# removal trims a diamond's and a triangle's one-pixel tips, so a read side can be up to 2 px short.
SMALL_MAX_SIDE = 10
LARGE_MIN_SIDE = 15

_PALETTE_RGB = np.array([PALETTE_V2[c] for c in COLOURS_V2], np.float32)
_PALETTE_NORMS = (_PALETTE_RGB**2).sum(1)


def size_of(box: tuple[int, int, int, int]) -> str:
    side = max(box[2], box[3])
    return "small" if side <= SMALL_MAX_SIDE else "large" if side >= LARGE_MIN_SIDE else "medium"


def check_v2(image: np.ndarray, spec: SpecV2) -> CheckResult:
    return check_batch_v2(image[None], [spec])[0]


def check_batch_v2(images: np.ndarray | Sequence[np.ndarray], specs: Sequence[SpecV2]) -> list[CheckResult]:
    """Judges (B, H, W, 3) uint8 images, one v2 spec each; vectorised as v1's `check_batch`."""
    return check_in_chunks(images, specs, perceive_batch_v2, match_v2)


def perceive_batch_v2(images: np.ndarray) -> list[tuple[SceneObject, ...]]:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (B, H, W, 3) uint8 images, got {images.dtype} of shape {images.shape}")
    quantised = (images >> _DROPPED_BITS).astype(np.int32)
    index = (quantised[..., 0] << (2 * _KEPT_BITS)) | (quantised[..., 1] << _KEPT_BITS) | quantised[..., 2]
    padded = _remove_spurs(np.pad(_colour_table_v2()[index], ((0, 0), (1, 1), (1, 1))))
    return _describe(padded, _label_components(padded))


@functools.cache
def _colour_table_v2() -> np.ndarray:
    """v1's blend rule (`checker._classify_colours`) over PALETTE_V2, for every 6-bit RGB colour."""
    levels = (np.arange(2**_KEPT_BITS) << _DROPPED_BITS) + (2**_DROPPED_BITS - 1) / 2
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(-1, 3).astype(np.float32)
    dots = rgb @ _PALETTE_RGB.T
    alpha = np.clip(dots / _PALETTE_NORMS, 0.0, 1.0)
    residual2 = (rgb**2).sum(1, keepdims=True) - 2 * alpha * dots + alpha**2 * _PALETTE_NORMS
    best = residual2.argmin(1)
    rows = np.arange(best.size)
    keep = (alpha[rows, best] >= MIN_COVERAGE) & (residual2[rows, best] <= COLOUR_RESIDUAL**2)
    return np.where(keep, best + 1, 0).astype(np.int8)


def _describe(padded: np.ndarray, labels: np.ndarray) -> list[tuple[SceneObject, ...]]:
    return describe_components(padded, labels, classify_shapes_v2, COLOURS_V2)


def classify_shapes_v2(stats: dict[str, np.ndarray]) -> list[str]:
    """Lopsided blobs are triangles pointing away from their heavy side (skewness < 0 along y: the tail,
    the apex, is up); symmetric ones are squares, circles or diamonds by fill; anything else "unknown"."""
    skew_x, skew_y, fill = stats["skew_x"], stats["skew_y"], stats["fill"]
    aspect = np.maximum(stats["width"], stats["height"]) / np.minimum(stats["width"], stats["height"])
    lopsided = np.maximum(np.abs(skew_x), np.abs(skew_y)) >= TRIANGLE_MIN_SKEW
    along_y = np.abs(skew_y) >= np.abs(skew_x)
    pointing = np.where(
        along_y, np.where(skew_y < 0, "triangle", "inverted triangle"), np.where(skew_x < 0, "left triangle", "right triangle")
    )
    shapes = np.full(fill.shape, "unknown", dtype=object)
    triangle = lopsided & (fill >= TRIANGLE_FILL[0]) & (fill < TRIANGLE_FILL[1])
    shapes[triangle] = pointing[triangle]
    shapes[~lopsided & (fill >= DIAMOND_FILL[0]) & (fill < DIAMOND_FILL[1])] = "diamond"
    shapes[~lopsided & (fill >= CIRCLE_FILL[0]) & (fill < CIRCLE_FILL[1])] = "circle"
    shapes[~lopsided & (fill >= CIRCLE_FILL[1])] = "square"
    shapes[(aspect > MAX_ASPECT) | (np.maximum(stats["width"], stats["height"]) > MAX_SIDE)] = "unknown"
    return list(shapes)


def match_v2(objects: Sequence[SceneObject], spec: SpecV2) -> CheckResult:
    """Do these objects show exactly `spec`? A named size must be read back too."""
    coloured = spec.objects[0].colour is not None
    sized = spec.objects[0].size is not None  # only single-object specs name a size

    def kind(obj: SceneObject | None, shape: str, colour: str | None, size: str | None) -> str:
        words = [size if sized else None, colour if coloured else None, shape]
        return " ".join(w for w in words if w)

    found = Counter(kind(o, o.shape, o.colour, size_of(o.box)) for o in objects)
    expected = Counter({kind(None, o.shape, o.colour, o.size): o.count for o in spec.objects})
    reasons = [f"expected {n} x {k}, found {found[k]}" for k, n in expected.items() if found[k] != n]
    reasons += [f"unexpected {n} x {k}" for k, n in found.items() if k not in expected]
    relation_ok = None
    if spec.relation is not None:
        relation_ok, reason = _relation(objects, spec, coloured)
        reasons += [reason] if reason else []
    return CheckResult(
        aligned=not reasons,
        objects=tuple(objects),
        counts=dict(Counter((o.shape, o.colour) for o in objects)),
        relation_ok=relation_ok,
        reasons=tuple(reasons),
    )


def _relation(objects: Sequence[SceneObject], spec: SpecV2, coloured: bool) -> tuple[bool | None, str]:
    first, second = (
        [o for o in objects if o.shape == want.shape and (not coloured or o.colour == want.colour)] for want in spec.objects
    )
    if len(first) != 1 or len(second) != 1:
        return None, "relation not checked: the related objects are not each found exactly once"
    if relation_holds(first[0], second[0], spec.relation, RELATION_MARGIN):
        return True, ""
    return False, f"relation '{spec.relation}' does not hold (centroids {first[0].centre} vs {second[0].centre})"
