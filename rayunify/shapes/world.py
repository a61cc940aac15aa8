"""ShapesWorld prompts: GenEval-like categories over coloured shapes, where the truth is machine-checkable.

A `Spec` is the meaning of a prompt (which objects, which colours, how many, where); `make_prompt_text`
writes it in English. numpy only: no torch, no ray.

The whole prompt space is small (about 1,500 texts), so the train/eval split is made over *meanings*, not
texts: "a red circle to the left of a blue square" and "a blue square to the right of a red circle" say the
same thing and always land on the same side. Hence the two splits are disjoint by text and by meaning.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayunify.types import Prompt

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# The six saturated corners of the RGB cube: pairwise 255+ apart, so they survive a lossy VQ round trip.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (0, 0, 0)  # fixed black canvas
IMAGE_SIZE = 32
MAX_OBJECTS = 4  # what fits in 32x32 with objects of 8-13 px and gaps between them
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
# The relation that holds when a related pair swaps places.
OPPOSITE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# Ordered from easiest to hardest. Count 1 is the single_object category ("a circle"), so counting uses 2-4.
CATEGORIES: tuple[str, ...] = (
    "single_object",
    "colour",
    "two_objects",
    "counting",
    "colour_attribution",
    "position",
)
_NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
_RELATION_WORDS = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}


@dataclass(frozen=True)
class ObjectSpec:
    """`count` objects of one shape; `colour` None means any palette colour is fine."""

    shape: str
    colour: str | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r} (known: {', '.join(SHAPES)})")
        if self.colour is not None and self.colour not in PALETTE:
            raise ValueError(f"unknown colour {self.colour!r} (known: {', '.join(COLOURS)})")
        if type(self.count) is not int or not 1 <= self.count <= MAX_OBJECTS:  # bool is no count
            raise ValueError(f"count must be an integer in 1..{MAX_OBJECTS}, got {self.count!r}")


@dataclass(frozen=True)
class Spec:
    """What an image must show. With a relation, it reads `objects[0] <relation> objects[1]`."""

    objects: tuple[ObjectSpec, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects:
            raise ValueError("a spec needs at least one object")
        if sum(o.count for o in self.objects) > MAX_OBJECTS:
            raise ValueError(f"at most {MAX_OBJECTS} objects fit in one {IMAGE_SIZE}x{IMAGE_SIZE} image")
        coloured = {o.colour is not None for o in self.objects}
        if len(coloured) > 1:
            raise ValueError("either every object names a colour or none does")
        kinds = [(o.shape, o.colour) for o in self.objects]
        if len(set(kinds)) != len(kinds):
            raise ValueError("objects must be distinguishable: no (shape, colour) twice")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r} (known: {', '.join(RELATIONS)})")
            if len(self.objects) != 2 or any(o.count != 1 for o in self.objects):
                raise ValueError("a relation links exactly two single objects")

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [{"shape": o.shape, "colour": o.colour, "count": o.count} for o in self.objects],
            "relation": self.relation,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Spec:
        """Builds a spec from `to_dict()` output; any problem is a ValueError that says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"spec must be an object, got {type(data).__name__}")
        _reject_unknown_keys(data, {"objects", "relation"}, "spec")
        if "objects" not in data:
            raise ValueError("spec is missing key 'objects'")
        if not isinstance(data["objects"], list):
            raise ValueError("spec 'objects' must be a list")
        return cls(tuple(_object_from_dict(o) for o in data["objects"]), data.get("relation"))


def _object_from_dict(data: Any) -> ObjectSpec:
    if not isinstance(data, dict):
        raise ValueError(f"each object must be an object, got {type(data).__name__}")
    _reject_unknown_keys(data, {"shape", "colour", "count"}, "object")
    if "shape" not in data:
        raise ValueError("object is missing key 'shape'")
    return ObjectSpec(data["shape"], data.get("colour"), data.get("count", 1))


def _reject_unknown_keys(data: dict[str, Any], known: set[str], what: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key(s) in {what}: {', '.join(map(repr, unknown))}")


@dataclass(frozen=True)
class SceneObject:
    """One object in an image: what the renderer drew, or what the checker saw.

    `shape` is "unknown" for a blob the checker could not recognise; `centre` is the pixel centroid (x, y);
    `box` is (x0, y0, width, height).
    """

    shape: str
    colour: str
    centre: tuple[float, float]
    area: int
    box: tuple[int, int, int, int]


def relation_holds(a: SceneObject, b: SceneObject, relation: str, margin: float) -> bool:
    """`a <relation> b` by centroids, with at least `margin` px to spare along the named axis (image y grows
    downwards). Only that axis counts, as in GenEval: a diagonal neighbour is both left of and above."""
    dx = b.centre[0] - a.centre[0]
    dy = b.centre[1] - a.centre[1]
    offset = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[relation]
    return offset >= margin


def make_prompt_text(spec: Spec) -> str:
    """English text for a spec: "a red circle", "three triangles", "a circle to the left of a square"."""
    phrases = [_object_phrase(o) for o in spec.objects]
    if spec.relation is not None:
        return f"{phrases[0]} {_RELATION_WORDS[spec.relation]} {phrases[1]}"
    return " and ".join(phrases)


def _object_phrase(obj: ObjectSpec) -> str:
    noun = obj.shape if obj.count == 1 else obj.shape + "s"
    words = [_NUMBER_WORDS[obj.count], obj.colour, noun]
    return " ".join(w for w in words if w)


def meaning_key(spec: Spec) -> tuple[Any, ...]:
    """Equal for specs that say the same thing in different words (object order, mirrored relations)."""
    objects = spec.objects
    relation = spec.relation
    if relation in ("right of", "below"):
        objects, relation = objects[::-1], OPPOSITE_RELATION[relation]
    if relation is None:
        objects = tuple(sorted(objects, key=lambda o: (o.shape, o.colour or "")))
    return (objects, relation)


def all_specs(category: str) -> list[Spec]:
    """Every spec of a category, in a fixed order."""
    kinds = list(itertools.product(SHAPES, COLOURS))
    if category == "single_object":
        return [Spec((ObjectSpec(s),)) for s in SHAPES]
    if category == "colour":
        return [Spec((ObjectSpec(s, c),)) for s, c in kinds]
    if category == "two_objects":
        return [Spec((ObjectSpec(a), ObjectSpec(b))) for a, b in itertools.permutations(SHAPES, 2)]
    if category == "counting":
        return [Spec((ObjectSpec(s, count=n),)) for s in SHAPES for n in range(2, MAX_OBJECTS + 1)]
    if category == "colour_attribution":
        return [Spec((ObjectSpec(*a), ObjectSpec(*b))) for a, b in itertools.permutations(kinds, 2)]
    if category == "position":
        return [
            Spec((ObjectSpec(*a), ObjectSpec(*b)), relation)
            for a, b in itertools.permutations(kinds, 2)
            for relation in RELATIONS
        ]
    raise ValueError(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")


def spec_prompt(spec: Spec, category: str) -> Prompt:
    """The ShapesWorld prompt of `spec`: its English text, and an id of its own scheme (`shapes_prompt_id`)."""
    text = make_prompt_text(spec)
    return Prompt(prompt_id=shapes_prompt_id(text), text=text, category=category, spec=spec.to_dict())


def shapes_prompt_id(text: str) -> str:
    """"shapes-" + a hash of the text: the same prompt has the same id in every split and seed, and a
    ShapesWorld prompt's id never equals that of a prompt read from a plain prompt file."""
    return "shapes-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def generate_prompts(n_train: int, n_eval: int, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """Deterministic train/eval prompt lists, disjoint by text and by meaning, spread evenly over categories.

    Each category's meanings are shuffled with `seed` and cut in the ratio n_eval : n_train (every category
    with two or more meanings gives at least one to each side). Each list then takes categories in turn
    (round robin), so small categories are fully used before large ones fill the rest. Texts never repeat
    within a list; asking for more prompts than a side holds is a ValueError.
    """
    if n_train < 0 or n_eval < 0:
        raise ValueError("n_train and n_eval must be non-negative")
    want = (n_eval > 0, n_train > 0)
    train_pools, eval_pools = _split_pools(n_eval / max(n_train + n_eval, 1), seed, *want)
    return _draw_round_robin(train_pools, n_train, "train"), _draw_round_robin(eval_pools, n_eval, "eval")


def held_out_split(
    n_train: int, n_eval: int, seed: int, categories: Sequence[str] | None = None
) -> tuple[list[Prompt], list[Prompt]]:
    """The first n_train train and n_eval eval prompts of the 2 : 1 split of meanings that the ShapesWorld
    base model trains on (`generate_prompts(2k, k, seed)`; each list is a prefix of every larger one), so
    the eval prompts are never among the base's training prompts and stay the same list whatever n_train
    is. A direct `generate_prompts(n_train, n_eval)` cuts the meanings in the ratio of the sizes instead:
    another eval list for each ratio, and, where the eval share is above a third, prompts the base
    trained on.

    `categories` keeps only those categories' prompts of the same split (same sides, same order); n_train
    and n_eval are then upper bounds, since a few categories may hold fewer texts (single objects and
    colours: 14 train, 7 eval)."""
    # generate_prompts(2k, k) cuts at a share of exactly 1/3 whatever k is: one split, drawn here directly.
    wanted = set(CATEGORIES if categories is None else check_categories(categories))
    train_pools, eval_pools = (
        {c: specs if c in wanted else [] for c, specs in pools.items()} for pools in _split_pools(1 / 3, seed)
    )
    if categories is not None:
        n_train = min(n_train, sum(map(len, train_pools.values())))
        n_eval = min(n_eval, sum(map(len, eval_pools.values())))
    return _draw_round_robin(train_pools, n_train, "train"), _draw_round_robin(eval_pools, n_eval, "eval")


def check_categories(categories: Sequence[str]) -> list[str]:
    """`categories` as a list, or a ValueError naming the first unknown one (or an empty list)."""
    categories = list(categories)
    if not categories:
        raise ValueError(f"categories is empty; choose from: {', '.join(CATEGORIES)}")
    for category in categories:
        if category not in CATEGORIES:
            raise ValueError(f"unknown ShapesWorld category {category!r}; choose from: {', '.join(CATEGORIES)}")
    return categories


def _split_pools(
    eval_share: float, seed: int, want_eval: bool = True, want_train: bool = True
) -> tuple[dict[str, list[Spec]], dict[str, list[Spec]]]:
    """Each category's meanings shuffled with `seed` and cut at `eval_share`: (train, eval) specs per category."""
    train_groups, eval_groups = split_meaning_groups(eval_share, seed, want_eval, want_train)
    return _flat(train_groups), _flat(eval_groups)


def split_meaning_groups(
    eval_share: float, seed: int, want_eval: bool = True, want_train: bool = True
) -> tuple[dict[str, list[list[Spec]]], dict[str, list[list[Spec]]]]:
    """`_split_pools` before flattening: each side's meaning groups (the specs of one meaning) per category,
    in the seeded order."""
    rng = np.random.default_rng(seed)
    train_groups, eval_groups = {}, {}
    for category in CATEGORIES:
        groups = _meaning_groups(all_specs(category))
        order = rng.permutation(len(groups))
        n_eval_groups = _eval_group_count(len(groups), eval_share, want_eval, want_train)
        eval_groups[category] = [groups[i] for i in order[:n_eval_groups]]
        train_groups[category] = [groups[i] for i in order[n_eval_groups:]]
    return train_groups, eval_groups


def _flat(groups: dict[str, list[list[Spec]]]) -> dict[str, list[Spec]]:
    return {category: [s for group in gs for s in group] for category, gs in groups.items()}


def _meaning_groups(specs: Sequence[Spec]) -> list[list[Spec]]:
    groups: dict[tuple[Any, ...], list[Spec]] = {}
    for spec in specs:
        groups.setdefault(meaning_key(spec), []).append(spec)
    return list(groups.values())


def _eval_group_count(n_groups: int, eval_share: float, want_eval: bool, want_train: bool) -> int:
    n = round(n_groups * eval_share)
    if want_eval and n_groups >= 2:
        n = max(n, 1)
    if want_train and n_groups >= 2:
        n = min(n, n_groups - 1)
    return n


def _draw_round_robin(pools: dict[str, list[Spec]], n: int, side: str) -> list[Prompt]:
    prompts = {category: [spec_prompt(spec, category) for spec in specs] for category, specs in pools.items()}
    return draw_round_robin(prompts, n, side)


def draw_round_robin(pools: dict[str, list[Prompt]], n: int, side: str, unit: str = "distinct texts") -> list[Prompt]:
    """The first n prompts taking categories in turn (CATEGORIES order), each category's in its pool's order:
    every prefix is spread evenly over the categories. More than the pools hold is a ValueError."""
    available = sum(len(p) for p in pools.values())
    if n > available:
        raise ValueError(f"asked for {n} {side} prompts but this split holds only {available} {unit}")
    prompts: list[Prompt] = []
    rank = 0
    while len(prompts) < n:
        for category in CATEGORIES:
            if rank < len(pools.get(category, [])) and len(prompts) < n:
                prompts.append(pools[category][rank])
        rank += 1
    return prompts


def save_prompts_jsonl(path: str | Path, prompts: Iterable[Prompt]) -> None:
    """One {"prompt", "category", "spec"} object per line."""
    with Path(path).open("w", encoding="utf-8") as f:
        for p in prompts:
            if p.spec is None:
                raise ValueError(f"prompt {p.text!r} has no spec: ShapesWorld prompts must be checkable")
            f.write(json.dumps({"prompt": p.text, "category": p.category, "spec": p.spec}) + "\n")


def load_prompts_jsonl(path: str | Path) -> list[Prompt]:
    """Reads `save_prompts_jsonl` output with the project's one JSONL prompt reader; each line must be a
    checkable ShapesWorld prompt (`prompt_from_record`). The text may paraphrase the spec: the spec alone
    is the truth. Every problem is a ValueError naming the file and the line."""
    from rayunify.prompts import read_prompt_file  # the core's reader (pydantic config): imported on use

    return read_prompt_file(path, "jsonl", make=prompt_from_record)


def prompt_from_record(text: str, category: Any, spec: Any) -> Prompt:
    """A ShapesWorld prompt from a prompt file's fields: category and spec required, the spec valid."""
    for key, value in (("category", category), ("spec", spec)):
        if value is None:
            raise ValueError(f"missing key {key!r}")
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")
    return Prompt(prompt_id=shapes_prompt_id(text), text=text, category=category, spec=Spec.from_dict(spec).to_dict())
