"""The base model's training data: fresh batches from the renderer, the VQ tokenizer and the checker.

Generation batches are VQ tokens of renders of train prompts (optionally of specs one attribute away: noisy
captions). Understanding batches are (image, prompt, verdict) examples, half accepted and half rejected by
the checker, drawn from the mix's sources: VQ reconstructions of the prompt's renders, the same with
corrupted tokens, renders of a spec one attribute away (hard negatives), renders of random other prompts,
and the model's own samples -- because the judge must be right on imperfect images like the model's own.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from rayunify.shapes.recipe import MIX_SOURCES, BaseConfig
from rayunify.shapes.vq import decode_tokens, encode_tokens
from rayunify.shapes.world import (
    CATEGORIES,
    COLOURS,
    IMAGE_SIZE,
    MAX_OBJECTS,
    RELATIONS,
    SHAPES,
    ObjectSpec,
    Spec,
)
from rayunify.shapes.worlds import world_ops
from rayunify.types import Prompt, Verdict


class ShapesData:
    """Fresh training batches from the renderer, the VQ tokenizer and the checker (numpy RNG only)."""

    def __init__(self, vq, prompts: list[Prompt], cfg: BaseConfig, rng: np.random.Generator):
        self.vq, self.cfg, self.rng = vq, cfg, rng
        self.world = world_ops(cfg.world)
        by_category: dict[str, list[Prompt]] = {c: [] for c in CATEGORIES}
        for p in prompts:
            by_category[p.category].append(p)
        self.categories = [c for c in CATEGORIES if by_category[c]]
        self.prompts = by_category
        weights = np.array([w for c, w in zip(CATEGORIES, cfg.category_weights, strict=True) if by_category[c]])
        self.category_p = weights / weights.sum()
        self.specs = {p.text: self.world.spec_from_dict(p.spec) for p in prompts}
        self.all_prompts = prompts
        # The model's own recent samples, (prompt, image), split by the checker's verdict, and in order.
        self.own: dict[bool, list[tuple[Prompt, np.ndarray]]] = {True: [], False: []}
        self.own_recent: list[tuple[Prompt, np.ndarray, bool]] = []

    def add_own(self, prompts: list[Prompt], images: np.ndarray) -> None:
        verdicts = self.world.check_batch(images, [self.specs[p.text] for p in prompts])
        for prompt, image, verdict in zip(prompts, images, verdicts, strict=True):
            self.own[verdict.aligned].append((prompt, image))
            self.own_recent.append((prompt, image, verdict.aligned))
        for samples in self.own.values():
            del samples[: -self.cfg.own_buffer // 2]
        del self.own_recent[: -self.cfg.own_buffer]

    def _own_sample(self) -> tuple[Prompt, np.ndarray]:
        """An accepted or a rejected own sample with equal odds (when both exist): the judge must tell
        the model's good images from its bad ones, not learn that the model's images are usually bad."""
        pools = [pool for pool in self.own.values() if pool]
        pool = pools[self.rng.integers(len(pools))]
        return pool[self.rng.integers(len(pool))]

    def sample_prompts(self, n: int) -> list[Prompt]:
        cats = self.rng.choice(len(self.categories), size=n, p=self.category_p)
        return [self.prompts[self.categories[c]][self.rng.integers(len(self.prompts[self.categories[c]]))] for c in cats]

    def generation_batch(self, n: int) -> tuple[list[str], torch.Tensor]:
        prompts = self.sample_prompts(n)
        specs = [self.specs[p.text] for p in prompts]
        if self.cfg.caption_noise > 0:  # (no draw at 0, so the noiseless base's stream is unchanged)
            noisy = self.rng.random(n) < self.cfg.caption_noise
            specs = [self.world.one_attribute_away(s, self.rng) if bad else s for s, bad in zip(specs, noisy, strict=True)]
        images = np.stack([self.world.render(spec, self.rng) for spec in specs])
        return [p.text for p in prompts], encode_tokens(self.vq, images)

    def understanding_batch(self, n: int) -> tuple[list[np.ndarray], list[str], list[Verdict]]:
        """n (image, prompt, verdict) examples in random order: half accepted and half rejected by the
        checker (as far as the candidates allow), except own samples when `mix.own_balanced` is False."""
        mix = self.cfg.mix
        if mix.own_balanced or not self.own_recent:
            return self._balanced_rows(n, with_own=True)
        n_own = int((self.rng.random(n) < mix.own / self._source_shares(mix.own).sum()).sum())
        images, prompts, verdicts = self._balanced_rows(n - n_own, with_own=False)
        for _ in range(n_own):
            prompt, image, aligned = self.own_recent[self.rng.integers(len(self.own_recent))]
            images.append(image)
            prompts.append(prompt.text)
            verdicts.append(Verdict.ACCEPT if aligned else Verdict.REJECT)
        order = self.rng.permutation(n)
        return [images[i] for i in order], [prompts[i] for i in order], [verdicts[i] for i in order]

    def _source_shares(self, own_share: float) -> np.ndarray:
        """The mix's shares in MIX_SOURCES order, with `own_share` for the own samples."""
        mix = self.cfg.mix
        return np.array([mix.clean, mix.corrupted, mix.one_attribute_away, mix.random_prompt, own_share, mix.opposite_relation])

    def _balanced_rows(self, n: int, with_own: bool) -> tuple[list[np.ndarray], list[str], list[Verdict]]:
        if n == 0:
            return [], [], []
        mix = self.cfg.mix
        shares = self._source_shares(mix.own if with_own and any(self.own.values()) else 0.0)
        n_candidates = 2 * n
        prompts = self.sample_prompts(n_candidates)
        kinds = self.rng.choice(np.array(MIX_SOURCES), size=n_candidates, p=shares / shares.sum())
        rendered = np.nonzero(kinds != "own")[0]
        drawn = []
        for i in rendered:
            spec = self.specs[prompts[i].text]
            if kinds[i] == "opposite_relation" and spec.relation is not None:
                spec = self.world.opposite_relation(spec)
            elif kinds[i] in ("one_attribute_away", "opposite_relation"):
                spec = self.world.one_attribute_away(spec, self.rng, by_kind=mix.negatives_by_kind)
            elif kinds[i] == "random_prompt":
                spec = self.specs[self.all_prompts[self.rng.integers(len(self.all_prompts))].text]
            drawn.append(self.world.render(spec, self.rng))
        images = np.zeros((n_candidates, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        if len(rendered):
            tokens = encode_tokens(self.vq, np.stack(drawn)).numpy()
            for j in np.nonzero(kinds[rendered] == "corrupted")[0]:
                tokens[j] = self.corrupt(tokens[j], tokens[self.rng.integers(len(tokens))])
            images[rendered] = decode_tokens(self.vq, torch.from_numpy(tokens))
        for i in np.nonzero(kinds == "own")[0]:
            prompts[i], images[i] = self._own_sample()
        accepted = np.array([r.aligned for r in self.world.check_batch(images, [self.specs[p.text] for p in prompts])])
        chosen = balanced_choice(accepted, n)
        chosen = chosen[self.rng.permutation(len(chosen))]
        verdicts = [Verdict.ACCEPT if accepted[i] else Verdict.REJECT for i in chosen]
        return [images[i] for i in chosen], [prompts[i].text for i in chosen], verdicts

    def corrupt(self, tokens: np.ndarray, donor: np.ndarray) -> np.ndarray:
        """Replaces 1..max_corrupted_tokens tokens: random codes at random places, or a block copied from
        another image's grid (fragments and extra objects, the generator's typical mistakes)."""
        out = tokens.copy()
        side = int(math.isqrt(len(tokens)))
        k = int(self.rng.integers(1, self.cfg.mix.max_corrupted_tokens + 1))
        if self.rng.random() < 0.5:
            where = self.rng.choice(len(tokens), size=k, replace=False)
            out[where] = self.rng.integers(self.vq.config.num_embeddings, size=k)
        else:
            h = int(self.rng.integers(1, min(k, side) + 1))
            w = max(1, min(side, k // h))
            y, x = self.rng.integers(side - h + 1), self.rng.integers(side - w + 1)
            grid, donor_grid = out.reshape(side, side), donor.reshape(side, side)
            dy, dx = self.rng.integers(side - h + 1), self.rng.integers(side - w + 1)
            grid[y : y + h, x : x + w] = donor_grid[dy : dy + h, dx : dx + w]
        return out


def balanced_choice(accepted: np.ndarray, n: int) -> np.ndarray:
    """Indices of n candidates, half accepted and half rejected where the candidates allow: the first n // 2
    accepted ones, more of them only when too few were rejected, and rejected ones for the rest."""
    pos, neg = np.nonzero(accepted)[0], np.nonzero(~accepted)[0]
    n_pos = min(max(n // 2, n - len(neg)), len(pos))
    return np.concatenate([pos[:n_pos], neg[: n - n_pos]])


def one_attribute_away(spec: Spec, rng: np.random.Generator, by_kind: bool = False) -> Spec:
    """A random valid spec that differs from `spec` in one attribute: an object's shape, colour or count,
    the relation (or none), two objects' colours swapped, or one object added or dropped.

    by_kind=False draws uniformly over all such specs, so kinds with many values dominate (a two-object
    prompt has 14 colour or shape changes and 4 relation changes). by_kind=True first draws the kind of
    change, each equally likely, then a spec of that kind: for "a red circle left of a blue square" relation
    changes are then 1 in 4 of the negatives instead of 4 in 19, colour swaps 1 in 4 instead of 1 in 19.
    """
    objects = list(spec.objects)
    coloured = objects[0].colour is not None
    candidates: list[tuple[str, tuple[ObjectSpec, ...], str | None]] = []

    def with_object(i: int, obj: ObjectSpec) -> tuple[ObjectSpec, ...]:
        return tuple(obj if j == i else o for j, o in enumerate(objects))

    for i, o in enumerate(objects):
        candidates += [("shape", with_object(i, dataclasses.replace(o, shape=s)), spec.relation) for s in SHAPES if s != o.shape]
        if coloured:
            candidates += [("colour", with_object(i, dataclasses.replace(o, colour=c)), spec.relation) for c in COLOURS if c != o.colour]
        if spec.relation is None:
            candidates += [("count", with_object(i, dataclasses.replace(o, count=n)), None) for n in range(1, MAX_OBJECTS + 1) if n != o.count]
    if spec.relation is not None:
        candidates += [("relation", tuple(objects), r) for r in RELATIONS if r != spec.relation]
        candidates.append(("relation", tuple(objects), None))
    if len(objects) == 2:
        if spec.relation is None:  # dropping one of two related objects would also drop the relation
            candidates += [("drop", (objects[i],), None) for i in range(2)]
        if coloured:
            a, b = objects
            swapped = (dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour))
            candidates.append(("swap", swapped, spec.relation))
    else:
        extra = [ObjectSpec(s, COLOURS[rng.integers(len(COLOURS))] if coloured else None) for s in SHAPES]
        candidates += [("add", (*objects, e), None) for e in extra]
    valid: list[tuple[str, Spec]] = []
    for kind, objs, relation in candidates:
        try:
            valid.append((kind, Spec(objs, relation)))
        except ValueError:
            continue
    if by_kind:
        # Two objects of one colour make the colour swap a no-op. The flat draw keeps it (the checker labels
        # every negative anyway, and the bases trained with it stay reproducible); here it would be a kind.
        valid = [(kind, s) for kind, s in valid if s != spec]
        kinds = list(dict.fromkeys(kind for kind, _ in valid))
        chosen = kinds[rng.integers(len(kinds))]
        valid = [(kind, s) for kind, s in valid if kind == chosen]
    return valid[rng.integers(len(valid))][1]
