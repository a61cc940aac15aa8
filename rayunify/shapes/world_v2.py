"""ShapesWorld v2's prompt space: more shapes, more colours, sizes, and two wordings per meaning.

v1 (`world`) is unchanged; v2 lives beside it. The categories are v1's (GenEval's). What v2 adds:

- shapes: v1's circle, square and (upward) triangle, plus a diamond and triangles pointing down, left and
  right, each read back exactly by `checker_v2`;
- colours: v1's six corners of the RGB cube plus white and orange (see `MIN_COLOUR_DISTANCE`);
- sizes (small, medium, large), named only by single-object prompts: v1's single-object category has three
  meanings, v2's has 7 shapes x 3 sizes = 21;
- two wordings of every meaning ("a red circle", "a picture of a red circle"): the texts of one meaning
  always land in the same split (`meaning_key_v2`).

A v2 spec's dict carries `"world": "v2"`, which is how the `shapes_checker` judge tells the worlds apart.
numpy only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayunify.shapes.world import CATEGORIES, OPPOSITE_RELATION, PALETTE, RELATIONS

WORLD_V2 = "v2"
SHAPES_V2: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",  # points up, as v1's
    "diamond",
    "inverted triangle",  # points down
    "left triangle",  # points left
    "right triangle",  # points right
)
# v1's six corners of the RGB cube, white, and orange. Why these: the checker reads a pixel as a blend of one
# palette colour with the black background, so two colours on one ray from black (dark red vs red) could
# never be told apart; these differ in direction, and the closest pair (orange vs yellow) is 127 apart in
# RGB (orange vs red 128), half v1's 255 but far beyond what the VQ's round trip moves a solid pixel.
PALETTE_V2: dict[str, tuple[int, int, int]] = {**PALETTE, "white": (255, 255, 255), "orange": (255, 128, 0)}
COLOURS_V2: tuple[str, ...] = tuple(PALETTE_V2)
MIN_COLOUR_DISTANCE = 127.0  # the smallest pairwise RGB distance of PALETTE_V2; tests recompute it
# Box side (px) a size is drawn at, and the cut points the checker reads sizes with (midway between).
SIZE_RANGES: dict[str, tuple[int, int]] = {"small": (8, 9), "medium": (12, 13), "large": (16, 18)}
SIZES: tuple[str, ...] = tuple(SIZE_RANGES)
MAX_OBJECTS = 4
TEMPLATES: tuple[str, ...] = ("{}", "a picture of {}")  # the wordings of each meaning
_NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
_RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


@dataclass(frozen=True)
class ObjectSpecV2:
    """`count` objects of one shape; `colour` / `size` None means any colour / any size."""

    shape: str
    colour: str | None = None
    count: int = 1
    size: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES_V2:
            raise ValueError(f"unknown v2 shape {self.shape!r} (known: {', '.join(SHAPES_V2)})")
        if self.colour is not None and self.colour not in PALETTE_V2:
            raise ValueError(f"unknown v2 colour {self.colour!r} (known: {', '.join(COLOURS_V2)})")
        if self.size is not None and self.size not in SIZE_RANGES:
            raise ValueError(f"unknown size {self.size!r} (known: {', '.join(SIZES)})")
        if type(self.count) is not int or not 1 <= self.count <= MAX_OBJECTS:
            raise ValueError(f"count must be an integer in 1..{MAX_OBJECTS}, got {self.count!r}")
        if self.size is not None and self.count != 1:
            raise ValueError("a size is named for a single object only")


@dataclass(frozen=True)
class SpecV2:
    """What a v2 image must show; with a relation it reads `objects[0] <relation> objects[1]`."""

    objects: tuple[ObjectSpecV2, ...]
    relation: str | None = None
    template: int = 0  # which of TEMPLATES words it: the text, not the meaning

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects:
            raise ValueError("a spec needs at least one object")
        if sum(o.count for o in self.objects) > MAX_OBJECTS:
            raise ValueError(f"at most {MAX_OBJECTS} objects fit in one image")
        if len({o.colour is not None for o in self.objects}) > 1:
            raise ValueError("either every object names a colour or none does")
        if len(self.objects) > 1 and any(o.size is not None for o in self.objects):
            raise ValueError("a size is named for a single object only")
        kinds = [(o.shape, o.colour) for o in self.objects]
        if len(set(kinds)) != len(kinds):
            raise ValueError("objects must be distinguishable: no (shape, colour) twice")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r} (known: {', '.join(RELATIONS)})")
            if len(self.objects) != 2 or any(o.count != 1 for o in self.objects):
                raise ValueError("a relation links exactly two single objects")
        if self.template not in range(len(TEMPLATES)):
            raise ValueError(f"template must be in 0..{len(TEMPLATES) - 1}, got {self.template!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "world": WORLD_V2,
            "objects": [{"shape": o.shape, "colour": o.colour, "count": o.count, "size": o.size} for o in self.objects],
            "relation": self.relation,
            "template": self.template,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SpecV2:
        """Builds a spec from `to_dict()` output; any problem is a ValueError that says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"spec must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"world", "objects", "relation", "template"})
        if unknown:
            raise ValueError(f"unknown key(s) in v2 spec: {', '.join(map(repr, unknown))}")
        if data.get("world") != WORLD_V2:
            raise ValueError(f"spec 'world' must be {WORLD_V2!r}, got {data.get('world')!r}")
        if not isinstance(data.get("objects"), list):
            raise ValueError("v2 spec 'objects' must be a list")
        objects = []
        for o in data["objects"]:
            if not isinstance(o, dict) or set(o) - {"shape", "colour", "count", "size"} or "shape" not in o:
                raise ValueError(f"each v2 object needs 'shape' and at most 'colour', 'count', 'size': got {o!r}")
            objects.append(ObjectSpecV2(o["shape"], o.get("colour"), o.get("count", 1), o.get("size")))
        return cls(tuple(objects), data.get("relation"), data.get("template", 0))


def is_v2_spec(data: Any) -> bool:
    return isinstance(data, dict) and data.get("world") == WORLD_V2


def make_prompt_text_v2(spec: SpecV2) -> str:
    """"a small circle", "a picture of two red squares", "a diamond to the left of a white circle"."""
    phrases = [_object_phrase(o) for o in spec.objects]
    if spec.relation is not None:
        body = f"{phrases[0]} {_RELATION_WORDS[spec.relation]} {phrases[1]}"
    else:
        body = " and ".join(phrases)
    return TEMPLATES[spec.template].format(body)


def _object_phrase(obj: ObjectSpecV2) -> str:
    noun = obj.shape if obj.count == 1 else obj.shape + "s"
    words = [w for w in (obj.size, obj.colour, noun) if w]
    article = _NUMBER_WORDS[obj.count]
    if article == "a" and words[0][0] in "aeiou":
        article = "an"  # "an orange circle", "an inverted triangle"
    return " ".join([article, *words])


def meaning_key_v2(spec: SpecV2) -> tuple[Any, ...]:
    """Equal for specs that say the same thing in other words: wording, object order, mirrored relation."""
    objects, relation = spec.objects, spec.relation
    if relation in ("right of", "below"):
        objects, relation = objects[::-1], OPPOSITE_RELATION[relation]
    if relation is None:
        objects = tuple(sorted(objects, key=lambda o: (o.shape, o.colour or "", o.size or "")))
    return (objects, relation)


def all_specs_v2(category: str) -> list[SpecV2]:
    """Every v2 spec of a category (every wording), in a fixed order."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")
    return [SpecV2(objects, relation, t) for objects, relation in _meanings(category) for t in range(len(TEMPLATES))]


def _meanings(category: str) -> list[tuple[tuple[ObjectSpecV2, ...], str | None]]:
    kinds = list(itertools.product(SHAPES_V2, COLOURS_V2))
    if category == "single_object":
        return [((ObjectSpecV2(s, size=z),), None) for s in SHAPES_V2 for z in SIZES]
    if category == "colour":
        return [((ObjectSpecV2(s, c),), None) for s, c in kinds]
    if category == "two_objects":
        return [((ObjectSpecV2(a), ObjectSpecV2(b)), None) for a, b in itertools.permutations(SHAPES_V2, 2)]
    if category == "counting":
        return [((ObjectSpecV2(s, count=n),), None) for s in SHAPES_V2 for n in range(2, MAX_OBJECTS + 1)]
    if category == "colour_attribution":
        return [((ObjectSpecV2(*a), ObjectSpecV2(*b)), None) for a, b in itertools.permutations(kinds, 2)]
    return [((ObjectSpecV2(*a), ObjectSpecV2(*b)), r) for a, b in itertools.permutations(kinds, 2) for r in RELATIONS]


def random_spec_v2(category: str, rng: np.random.Generator) -> SpecV2:
    specs = all_specs_v2(category)
    return specs[int(rng.integers(len(specs)))]


def one_attribute_negatives(spec: SpecV2) -> list[SpecV2]:
    """Valid specs that differ from `spec` in exactly one attribute of one object (shape, colour, size,
    count) or in the relation: the hardest negatives, each of which an exact checker must tell apart."""
    found: list[SpecV2] = []
    for i, obj in enumerate(spec.objects):
        changes = [{"shape": s} for s in SHAPES_V2 if s != obj.shape]
        changes += [{"colour": c} for c in COLOURS_V2 if obj.colour is not None and c != obj.colour]
        changes += [{"size": z} for z in SIZES if obj.size is not None and z != obj.size]
        changes += [{"count": n} for n in (obj.count - 1, obj.count + 1) if obj.count > 1 and 2 <= n <= MAX_OBJECTS]
        for change in changes:
            fields = {"shape": obj.shape, "colour": obj.colour, "count": obj.count, "size": obj.size, **change}
            objects = spec.objects[:i] + (ObjectSpecV2(**fields),) + spec.objects[i + 1 :]
            try:
                found.append(SpecV2(objects, spec.relation, spec.template))
            except ValueError:  # e.g. two objects of one kind: no valid spec
                continue
    if spec.relation is not None:
        found.append(SpecV2(spec.objects, OPPOSITE_RELATION[spec.relation], spec.template))
    return found


def one_attribute_away_v2(spec: SpecV2, rng: np.random.Generator, by_kind: bool = False) -> SpecV2:
    """A random spec one attribute away from `spec` (a training negative): one of `one_attribute_negatives`,
    two objects' colours swapped (colour attribution's typical mistake), or an object dropped (two objects
    without a relation) or added (one kind of object). `by_kind` as v1's `data.one_attribute_away`: first the
    kind of change, each equally likely, then a spec of that kind; otherwise every such spec equally likely."""
    candidates = [("attribute", s) for s in one_attribute_negatives(spec)]
    objects = spec.objects
    distinct = len(objects) == 2 and objects[0].shape != objects[1].shape and objects[0].colour != objects[1].colour
    if distinct and objects[0].colour is not None:  # (with one shape or one colour the swap says the same)
        a, b = objects
        swapped = (ObjectSpecV2(a.shape, b.colour, a.count), ObjectSpecV2(b.shape, a.colour, b.count))
        candidates.append(("swap", SpecV2(swapped, spec.relation, spec.template)))
    if len(objects) == 2 and spec.relation is None:
        candidates += [("drop", SpecV2((o,), None, spec.template)) for o in objects]
    if len(objects) == 1:
        coloured = objects[0].colour is not None
        for shape in SHAPES_V2:
            extra = ObjectSpecV2(shape, COLOURS_V2[int(rng.integers(len(COLOURS_V2)))] if coloured else None)
            plain = ObjectSpecV2(objects[0].shape, objects[0].colour, objects[0].count)  # a size is for one object
            try:
                candidates.append(("add", SpecV2((plain, extra), None, spec.template)))
            except ValueError:  # the same kind twice, or too many objects
                continue
    if by_kind:
        kinds = list(dict.fromkeys(kind for kind, _ in candidates))
        chosen = kinds[int(rng.integers(len(kinds)))]
        candidates = [(kind, s) for kind, s in candidates if kind == chosen]
    return candidates[int(rng.integers(len(candidates)))][1]
