"""The exact judge of ShapesWorld: does an arbitrary 32x32 RGB image show a Spec?

Two steps, kept apart so each can be tested on its own:
1. `perceive_batch`: images -> objects. Each pixel is read as a blend of one palette colour with the black
   background and keeps that colour if it covers at least MIN_COVERAGE of it (else background: white, grey
   and murky pixels are background too). Pixels with fewer than two same-colour neighbours are dropped
   (specks, one-pixel bumps), same-colour pixels are grouped into 4-connected components (vectorised over
   the batch) and blobs under MIN_AREA px ignored. A blob's shape comes from its skewness (a triangle is
   lopsided, circles and squares are not) and its fill ratio area / box area (square ~1.0, circle ~0.8);
   a blob that fits no shape is "unknown".
2. `match`: objects -> verdict, GenEval-style. The image must show exactly the prompted objects: the right
   number of each (shape, colour) -- or of each shape, when the prompt names no colour -- and nothing else,
   so an extra object of any kind, or an unknown blob, fails. A relation holds when the two objects'
   centroids are at least RELATION_MARGIN px apart along the named axis.

Deterministic and numpy-only; `match` is also the symbolic truth for rendered scenes.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayunify.shapes.world import COLOURS, PALETTE, SceneObject, Spec, relation_holds

MIN_COVERAGE = 0.35  # share of a palette colour (vs black) a pixel needs to count as that colour
COLOUR_RESIDUAL = 90.0  # max RGB distance from the blend line black -> palette colour
MIN_AREA = 16  # px; the smallest rendered object (an 8 px triangle) has 32
RELATION_MARGIN = 3.0  # px of centroid offset along the relation's axis
# Shape cut points, midway between what rendered, blurred, noisy and JPEG'd shapes measure: fill ratio
# (area / box area) is ~0.5-0.8 for triangles, ~0.8-0.9 for circles, ~1.0 for squares; a triangle's
# skewness along its axis is ~0.3-0.6, a symmetric shape's under 0.1.
TRIANGLE_MIN_SKEW = 0.2
TRIANGLE_FILL = (0.4, 0.88)
CIRCLE_FILL = (0.68, 0.93)  # at or above the upper end: square
MAX_ASPECT = 1.6  # every shape is drawn in a square box; a long blob is no shape of this world
MAX_SIDE = 28  # px; rendered objects are at most 13, and a canvas-filling colour is no object

_PALETTE_RGB = np.array([PALETTE[c] for c in COLOURS], np.float32)
_PALETTE_NORMS = (_PALETTE_RGB**2).sum(1)
_KEPT_BITS = 6  # per channel in the colour table; moves a pixel's class only within 2 levels of a boundary
_DROPPED_BITS = 8 - _KEPT_BITS
_CHUNK = 64  # images per vectorised pass: bigger arrays fall out of cache and run slower per image


@dataclass(frozen=True)
class CheckResult:
    """The verdict and why. `counts` maps (shape, colour) to how many were found; `relation_ok` is None when
    the prompt has no relation or the related objects were not both found once."""

    aligned: bool
    objects: tuple[SceneObject, ...]
    counts: dict[tuple[str, str], int]
    relation_ok: bool | None
    reasons: tuple[str, ...] = field(default=())


def check(image: np.ndarray, spec: Spec) -> CheckResult:
    """Judges one (H, W, 3) uint8 image."""
    return check_batch(image[None], [spec])[0]


def check_batch(images: np.ndarray | Sequence[np.ndarray], specs: Sequence[Spec]) -> list[CheckResult]:
    """Judges (B, H, W, 3) uint8 images, one spec each; vectorised, so much faster than a loop of `check`."""
    return check_in_chunks(images, specs, perceive_batch, match)


def check_in_chunks(
    images: np.ndarray | Sequence[np.ndarray], specs: Sequence[Any], perceive: Callable[[np.ndarray], list[Any]],
    judge: Callable[[Any, Any], CheckResult],
) -> list[CheckResult]:
    """Perceives the images `_CHUNK` at a time (bounded memory) and judges each one's objects against its spec;
    `perceive` and `judge` name the world (v1's or v2's)."""
    images = np.asarray(images)
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images but {len(specs)} specs")
    seen = [objects for i in range(0, len(images), _CHUNK) for objects in perceive(images[i : i + _CHUNK])]
    return [judge(objects, spec) for objects, spec in zip(seen, specs, strict=True)]


def perceive_batch(images: np.ndarray) -> list[tuple[SceneObject, ...]]:
    """The objects seen in each of (B, H, W, 3) uint8 images."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (B, H, W, 3) uint8 images, got {images.dtype} of shape {images.shape}")
    padded = _remove_spurs(np.pad(_classify_pixels(images), ((0, 0), (1, 1), (1, 1))))
    return describe_components(padded, _label_components(padded))


def _classify_pixels(images: np.ndarray) -> np.ndarray:
    """(B, H, W) int8: 0 background, 1 + palette index otherwise, looked up per pixel in `_colour_table`."""
    quantised = (images >> _DROPPED_BITS).astype(np.int32)
    index = (quantised[..., 0] << (2 * _KEPT_BITS)) | (quantised[..., 1] << _KEPT_BITS) | quantised[..., 2]
    return _colour_table()[index]


@functools.cache
def _colour_table() -> np.ndarray:
    """The colour class of every RGB colour at 6 bits a channel (the centre of each 4x4x4 cube of colours),
    built once: a table lookup is several times faster than classifying each pixel of every image."""
    levels = (np.arange(2**_KEPT_BITS) << _DROPPED_BITS) + (2**_DROPPED_BITS - 1) / 2
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return _classify_colours(np.stack([r, g, b], axis=-1).reshape(-1, 3).astype(np.float32))


def _classify_colours(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) float RGB -> (N,) int8 colour class.

    A colour p is read as a blend alpha * c of a palette colour c with the black background; it takes the
    colour whose blend fits best, if that fit is close (residual <= COLOUR_RESIDUAL) and covers at least
    MIN_COVERAGE. A threshold below one half keeps blurred thin parts (a triangle's tip) that a nearest-colour
    rule would erode, while the 3 px gaps between objects stay empty.
    """
    dots = rgb @ _PALETTE_RGB.T
    alpha = np.clip(dots / _PALETTE_NORMS, 0.0, 1.0)
    residual2 = (rgb**2).sum(1, keepdims=True) - 2 * alpha * dots + alpha**2 * _PALETTE_NORMS
    best = residual2.argmin(1)
    rows = np.arange(best.size)
    keep = (alpha[rows, best] >= MIN_COVERAGE) & (residual2[rows, best] <= COLOUR_RESIDUAL**2)
    return np.where(keep, best + 1, 0).astype(np.int8)


def _remove_spurs(padded: np.ndarray) -> np.ndarray:
    """Clears pixels with fewer than two same-colour 4-neighbours: noise specks and one-pixel bumps that
    noise or blur glue onto an edge, which would otherwise stretch the object's box and spoil its fill."""
    centre = padded[:, 1:-1, 1:-1]
    neighbours = sum(
        (centre == padded[:, 1 + dy : padded.shape[1] - 1 + dy, 1 + dx : padded.shape[2] - 1 + dx]).astype(
            np.int8
        )
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
    )
    cleaned = padded.copy()
    cleaned[:, 1:-1, 1:-1][(centre > 0) & (neighbours < 2)] = 0
    return cleaned


def _label_components(padded: np.ndarray) -> np.ndarray:
    """4-connected components of equal non-background class, on the flat padded array of the whole batch.

    Every pixel starts with its own flat index as label; foreground neighbours of the same class take the
    minimum, and pointer jumping (label = label[label]) shortens chains, so a 32x32 image converges in a
    handful of vectorised sweeps. The zero border keeps images and rows apart. Background pixels keep their
    own index.
    """
    flat = padded.ravel()
    foreground = flat > 0
    no_link = np.int32(flat.size)
    shifts = []
    for step in (1, padded.shape[2]):
        shifts.append((step, foreground[:-step] & (flat[:-step] == flat[step:])))
    labels = np.arange(flat.size, dtype=np.int32)
    while True:
        merged = labels.copy()
        for step, same in shifts:
            np.minimum(merged[:-step], np.where(same, labels[step:], no_link), out=merged[:-step])
            np.minimum(merged[step:], np.where(same, labels[:-step], no_link), out=merged[step:])
        merged = merged[merged]
        if np.array_equal(merged, labels):
            return merged.reshape(padded.shape)
        labels = merged


def describe_components(
    padded: np.ndarray, labels: np.ndarray, classify: Callable[[dict[str, np.ndarray]], list[str]] | None = None,
    colours: Sequence[str] = COLOURS,
) -> list[tuple[SceneObject, ...]]:
    """Every object of every image from its labelled components; `classify` and `colours` name the world's
    shapes and colours (default: v1's)."""
    batch, padded_h, padded_w = padded.shape
    classes = padded.ravel()
    fg = np.nonzero(classes > 0)[0]
    if fg.size == 0:
        return [()] * batch
    roots, component = np.unique(labels.ravel()[fg], return_inverse=True)
    stats = _component_stats(component, xs=fg % padded_w - 1, ys=(fg // padded_w) % padded_h - 1)
    shapes = (classify or _classify_shapes)(stats)
    image_of = roots // (padded_h * padded_w)
    colour_of = classes[roots]
    found: list[list[SceneObject]] = [[] for _ in range(batch)]
    for k in np.nonzero(stats["area"] >= MIN_AREA)[0]:
        found[image_of[k]].append(
            SceneObject(
                shape=shapes[k],
                colour=colours[colour_of[k] - 1],
                centre=(float(stats["cx"][k]), float(stats["cy"][k])),
                area=int(stats["area"][k]),
                box=(
                    int(stats["x0"][k]),
                    int(stats["y0"][k]),
                    int(stats["width"][k]),
                    int(stats["height"][k]),
                ),
            )
        )
    return [tuple(f) for f in found]


def _component_stats(component: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> dict[str, np.ndarray]:
    """Per-component area, centroid, box, fill ratio and skewness, from the component index of each pixel."""
    area = np.bincount(component)
    order = np.argsort(component, kind="stable")
    starts = np.concatenate([[0], np.cumsum(area)[:-1]])
    stats: dict[str, np.ndarray] = {"area": area}
    for name, coord in (("x", xs), ("y", ys)):
        lo = np.minimum.reduceat(coord[order], starts)
        extent = np.maximum.reduceat(coord[order], starts) - lo + 1
        centre = np.bincount(component, weights=coord) / area
        offset = coord - centre[component]
        var = np.bincount(component, weights=offset**2) / area
        third = np.bincount(component, weights=offset**3) / area
        stats[f"{name}0"], stats[f"c{name}"] = lo, centre
        stats["width" if name == "x" else "height"] = extent
        stats[f"skew_{name}"] = third / np.maximum(var, 1e-6) ** 1.5
    stats["fill"] = area / (stats["width"] * stats["height"])
    return stats


def _classify_shapes(stats: dict[str, np.ndarray]) -> list[str]:
    """A triangle is lopsided (|skewness| ~0.5 along its axis, symmetric shapes ~0), which survives the blur
    that rounds its tip; a square fills its box (fill ~1.0), a circle does not (~0.8). Anything else -- a
    long or huge blob, a symmetric shape neither full nor round (a diamond, a ring), a lopsided box-filler
    -- is "unknown"."""
    skew = np.maximum(np.abs(stats["skew_x"]), np.abs(stats["skew_y"]))
    fill = stats["fill"]
    aspect = np.maximum(stats["width"], stats["height"]) / np.minimum(stats["width"], stats["height"])
    lopsided = skew >= TRIANGLE_MIN_SKEW
    shapes = np.full(fill.shape, "unknown", dtype=object)
    shapes[lopsided & (fill >= TRIANGLE_FILL[0]) & (fill < TRIANGLE_FILL[1])] = "triangle"
    shapes[~lopsided & (fill >= CIRCLE_FILL[0]) & (fill < CIRCLE_FILL[1])] = "circle"
    shapes[~lopsided & (fill >= CIRCLE_FILL[1])] = "square"
    shapes[(aspect > MAX_ASPECT) | (np.maximum(stats["width"], stats["height"]) > MAX_SIDE)] = "unknown"
    return list(shapes)


def match(objects: Sequence[SceneObject], spec: Spec) -> CheckResult:
    """Do these objects show exactly `spec`? Pure logic; the truth for rendered scenes as well."""
    coloured = spec.objects[0].colour is not None  # a Spec names colours for all its objects or for none

    def kind(shape: str, colour: str | None) -> str:
        return f"{colour} {shape}" if coloured else shape

    found = Counter(kind(o.shape, o.colour) for o in objects)
    expected = Counter({kind(o.shape, o.colour): o.count for o in spec.objects})
    reasons = [f"expected {n} x {k}, found {found[k]}" for k, n in expected.items() if found[k] != n]
    reasons += [f"unexpected {n} x {k}" for k, n in found.items() if k not in expected]
    relation_ok = None
    if spec.relation is not None:
        relation_ok, reason = _check_relation(objects, spec, spec.relation, coloured)
        if reason:
            reasons.append(reason)
    return CheckResult(
        aligned=not reasons,
        objects=tuple(objects),
        counts=dict(Counter((o.shape, o.colour) for o in objects)),
        relation_ok=relation_ok,
        reasons=tuple(reasons),
    )


def _check_relation(
    objects: Sequence[SceneObject], spec: Spec, relation: str, coloured: bool
) -> tuple[bool | None, str]:
    def candidates(i: int) -> list[SceneObject]:
        want = spec.objects[i]
        return [o for o in objects if o.shape == want.shape and (not coloured or o.colour == want.colour)]

    first, second = candidates(0), candidates(1)
    if len(first) != 1 or len(second) != 1:
        return None, "relation not checked: the related objects are not each found exactly once"
    if relation_holds(first[0], second[0], relation, RELATION_MARGIN):
        return True, ""
    return False, f"relation '{relation}' does not hold (centroids {first[0].centre} vs {second[0].centre})"
