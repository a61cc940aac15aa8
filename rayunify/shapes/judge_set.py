"""The judge on a fixed set: balanced, labelled images for a split's prompts, the same at every evaluation.

The model's own images are mostly wrong, so a judge scored on them is rewarded for saying no. This set is
half accepted, half rejected by ShapesWorld's checker within each category, from two sources:
- "own": the base model's own samples for the split's prompts (its real mistakes and its few successes);
- "render": a render of the prompt (nearly always right) and a render of a spec one attribute away
  (`one_attribute_away`, by kind: nearly always wrong), both passed through the model's VQ tokenizer
  first, so the judge sees what it sees in training and in its own samples.
Every image is labelled by the checker against its prompt, whatever its source. The set is built once
per (model, prompts, size, seed, sampling) and cached on disk, so every run from the same base, whatever
its training seed, is scored on the same images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayunify.shapes.worlds import world_of_prompts
from rayunify.types import Prompt, SamplingSettings

log = logging.getLogger(__name__)

JUDGE_SET_VERSION = 1  # bump when the construction changes, so cached sets are rebuilt
CHUNK_PROMPTS = 16  # prompts per generate call


@dataclass
class JudgeSet:
    texts: list[str]  # the prompt each image is judged against
    categories: list[str]
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) bool: the checker accepts the image for its prompt
    sources: list[str]  # "own" or "render"

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path, texts=np.array(self.texts), categories=np.array(self.categories), images=self.images,
            labels=self.labels, sources=np.array(self.sources),
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> JudgeSet:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                [str(t) for t in data["texts"]], [str(c) for c in data["categories"]], data["images"],
                data["labels"].astype(bool), [str(s) for s in data["sources"]],
            )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {
            "images": len(self.texts),
            "accepted": int(self.labels.sum()),
            "own": sum(s == "own" for s in self.sources),
            "categories": sorted(set(self.categories)),
        }


def build_judge_set(model: Any, prompts: Sequence[Prompt], size: int, seed: int, settings: SamplingSettings) -> JudgeSet:
    """`size` images (fewer where a category lacks images of one label) balanced by label within each
    category, categories equally. `model` is a UnifiedModel; its own samples are drawn with `settings`."""
    by_category = distinct_prompts_by_category(prompts)
    per_cell = size // (2 * len(by_category))  # images per (category, label)
    if per_cell < 1:
        raise ValueError(f"trainer.judge_set_size={size} is too small for {len(by_category)} categories x 2 labels")
    rng = np.random.default_rng(seed)
    parts = []
    for index, (category, texts) in enumerate(by_category.items()):
        chosen = [texts[i] for i in np.sort(rng.permutation(len(texts))[: 2 * per_cell])]
        per_text = math.ceil(2 * per_cell / len(chosen))  # enough candidates of each label, even for 1 text
        candidates = _own(model, chosen, per_text, settings, seed + 1000 * index) + _renders(model, chosen, per_text, rng)
        parts.append(_balanced(category, candidates, per_cell, rng))
    items = [item for part in parts for item in part]
    missing = [c for c, part in zip(by_category, parts, strict=True) if not part]
    if len(missing) == len(parts):
        raise ValueError(
            "no category has both an image the checker accepts and one it rejects: the model's own samples and "
            "its tokenizer's round trips of renders are all one label, so no balanced judge set exists"
        )
    if missing:
        log.warning("the judge set leaves out %s: no image of one label among its candidates", ", ".join(missing))
    return JudgeSet(
        texts=[p.text for _, p, _, _ in items], categories=[p.category for _, p, _, _ in items],
        images=np.stack([img for _, _, img, _ in items]), labels=np.array([ok for _, _, _, ok in items], dtype=bool),
        sources=[source for source, _, _, _ in items],
    )  # fmt: skip


def distinct_prompts_by_category(prompts: Sequence[Prompt]) -> dict[str, list[Prompt]]:
    """Each category's distinct texts (a split's repeats are one text), first occurrence kept, in order."""
    out: dict[str, dict[str, Prompt]] = {}
    for p in prompts:
        if p.spec is None:
            raise ValueError(f"the judge set needs ShapesWorld prompts with a spec; {p.text!r} has none")
        out.setdefault(p.category, {}).setdefault(p.text, p)  # a split's repeats are one text here
    if not out:
        raise ValueError("the judge set needs at least one prompt")
    return {category: list(texts.values()) for category, texts in out.items()}


Candidate = tuple[str, Prompt, np.ndarray, bool]  # (source, prompt, image, checker accepts)


def _own(model: Any, prompts: list[Prompt], n: int, settings: SamplingSettings, seed: int) -> list[Candidate]:
    images = []
    for start in range(0, len(prompts), CHUNK_PROMPTS):
        chunk = prompts[start : start + CHUNK_PROMPTS]
        seeds = [seed + start + i for i in range(len(chunk))]  # per prompt: independent of the chunking
        out = model.generate([p.text for p in chunk], n=n, settings=settings, seed=seeds, decode=True)
        images.extend(out.images)
    expanded = [p for p in prompts for _ in range(n)]
    return _labelled("own", expanded, np.stack(images))


def _renders(model: Any, prompts: list[Prompt], n: int, rng: np.random.Generator) -> list[Candidate]:
    expanded = [p for p in prompts for _ in range(n)] * 2
    world = world_of_prompts(expanded)
    specs = [world.spec_from_dict(p.spec) for p in expanded]
    half = len(specs) // 2
    drawn = [world.render(s, rng) for s in specs[:half]]  # positives first: the rng's order is the set's
    drawn += [world.render(world.one_attribute_away(s, rng, by_kind=True), rng) for s in specs[half:]]
    return _labelled("render", expanded, _vq_round_trip(model, np.stack(drawn)))


def _labelled(source: str, prompts: list[Prompt], images: np.ndarray) -> list[Candidate]:
    world = world_of_prompts(prompts)
    results = world.check_batch(images, [world.spec_from_dict(p.spec) for p in prompts])
    return [(source, p, img, r.aligned) for p, img, r in zip(prompts, images, results, strict=True)]


def _vq_round_trip(model: Any, images: np.ndarray) -> np.ndarray:
    """Renders as the model's tokenizer passes them (what its judge learnt from); unchanged for a model
    without a Janus VQ."""
    vq = getattr(getattr(model.module(), "model", None), "vqmodel", None)
    if vq is None:
        return images
    from rayunify.shapes.vq import decode_tokens, encode_tokens

    return decode_tokens(vq, encode_tokens(vq, images))


def _balanced(category: str, candidates: list[Candidate], per_cell: int, rng: np.random.Generator) -> list[Candidate]:
    """k accepted and k rejected images, k = min(per_cell, the fewer label's count), each label's taken
    alternately from the two sources (own first) in a seeded order, so own mistakes and renders mix."""
    cells = {label: [c for c in candidates if c[3] == label] for label in (True, False)}
    k = min(per_cell, *(len(cell) for cell in cells.values()))
    chosen = []
    for cell in cells.values():
        by_source = {s: [c for c in cell if c[0] == s] for s in ("own", "render")}
        queues = [[group[i] for i in rng.permutation(len(group))] for group in by_source.values()]
        picked: list[Candidate] = []
        while len(picked) < k:
            for queue in queues:
                if queue and len(picked) < k:
                    picked.append(queue.pop(0))
        chosen += picked
    return chosen


def cached_judge_set(
    model_dir: str | Path, prompts: Sequence[Prompt], size: int, seed: int, settings: SamplingSettings
) -> JudgeSet:
    """`build_judge_set` for the model in `model_dir`, built once and cached under the cache root, keyed by the
    model's weights file (path, size and time), the prompts, size, seed and sampling."""
    from rayunify.models.base import cache_root

    path = cache_root() / "judge_sets" / f"{_cache_key(Path(model_dir), prompts, size, seed, settings)}.npz"
    if path.is_file():
        return JudgeSet.load(path)
    from rayunify.config import JanusModelConfig
    from rayunify.models import build_model

    model = build_model(JanusModelConfig(path=str(model_dir), device="cpu"))
    judge_set = build_judge_set(model, prompts, size, seed, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    judge_set.save(tmp)
    os.replace(tmp, path)  # atomic: a reader never sees half a set
    return judge_set


def _cache_key(model_dir: Path, prompts: Sequence[Prompt], size: int, seed: int, settings: SamplingSettings) -> str:
    weights = sorted(model_dir.glob("*.safetensors"))
    stamp = [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
    payload = [str(model_dir.resolve()), stamp, [p.prompt_id for p in prompts], size, seed,
               dataclasses.asdict(settings), JUDGE_SET_VERSION]  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
