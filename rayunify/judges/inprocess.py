"""Judges that run in the calling process with no model of their own to load.

- SelfJudge: the unified model judging its own images with the paper's question (live or frozen weights);
- PythonJudge: user code `module:callable`, fn(images, prompts, **kwargs) -> (verdicts, scores);
- NoisyJudge: wraps another judge and flips / randomises / always accepts, to cause co-degradation on purpose.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rayunify.judges.base import Judge, load_callable
from rayunify.judges.question import parse_verdict
from rayunify.types import Judgement, Prompt, Verdict

if TYPE_CHECKING:
    from rayunify.models.base import UnifiedModel


class SelfJudge:
    """The unified model judging its own images with the paper's question."""

    def __init__(
        self, model: UnifiedModel, max_new_tokens: int = 8, batch_size: int = 64, accept_threshold: float | None = None
    ):
        self.model = model
        self.name = "self"
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.accept_threshold = accept_threshold  # None: the answer's verdict; else P(yes) >= it accepts

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        out: list[Judgement] = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            texts = [p.text for p in prompts[chunk]]
            out.extend(self.model.judge(images[chunk], texts, max_new_tokens=self.max_new_tokens))
        return out if self.accept_threshold is None else [thresholded(j, self.accept_threshold) for j in out]


def thresholded(judgement: Judgement, threshold: float) -> Judgement:
    """The verdict read from the soft score instead of the answer (the answer is kept, for the logs)."""
    verdict = Verdict.ACCEPT if judgement.score >= threshold else Verdict.REJECT
    return dataclasses.replace(judgement, verdict=verdict)


class PythonJudge:
    """User code by import path, called as `fn(images, prompts, **kwargs) -> (verdicts, scores)` with the
    `Prompt` objects (text, category and the benchmark's own spec, e.g. GenEval's metadata). Verdicts may
    be bools, 0/1 or answer strings ("The score is 1")."""

    def __init__(self, import_path: str, kwargs: dict[str, Any] | None = None):
        self.fn = load_callable(import_path)
        self.kwargs = kwargs or {}
        self.name = f"python:{import_path}"

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        result = self.fn(list(images), list(prompts), **self.kwargs)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"judge {self.name} must return (verdicts, scores), got {type(result).__name__}")
        verdicts, scores = result
        if len(verdicts) != len(images) or len(scores) != len(images):
            raise ValueError(
                f"judge {self.name} returned {len(verdicts)} verdicts and {len(scores)} scores for {len(images)} images"
            )
        return [
            Judgement(verdict=_as_verdict(v), score=float(np.clip(s, 0.0, 1.0)), answer=str(v), judge=self.name)
            for v, s in zip(verdicts, scores, strict=True)
        ]


def _as_verdict(value: Any) -> Verdict:
    if isinstance(value, Verdict):
        return value
    if isinstance(value, bool | np.bool_):
        return Verdict.ACCEPT if value else Verdict.REJECT
    if isinstance(value, int | np.integer) and int(value) in (0, 1):
        return Verdict(int(value))
    if isinstance(value, str):
        return parse_verdict(value) if "score" in value.lower() else parse_verdict(f"The score is {value.strip()}")
    return Verdict.INVALID


class NoisyJudge:
    """Poor supervision: corrupts a share of a base judge's verdicts (seeded, so experiments repeat)."""

    def __init__(self, base: Judge, flip_fraction=0.0, random_fraction=0.0, always_accept=False, seed=0):
        self.base = base
        self.flip_fraction = flip_fraction
        self.random_fraction = random_fraction
        self.always_accept = always_accept
        self.seed = seed
        self.name = f"noisy({base.name})"

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        verdicts = self.base.judge(images, prompts)
        return [self._corrupt(j, img, p) for j, img, p in zip(verdicts, images, prompts, strict=True)]

    def _corrupt(self, j: Judgement, image: np.ndarray, prompt: Prompt) -> Judgement:
        if self.always_accept:
            return Judgement(Verdict.ACCEPT, 1.0, j.answer, self.name)
        # The noise is a function of (seed, image, prompt), not of call order: a re-run chunk, another
        # actor or a resumed run corrupts the same samples the same way.
        rng = np.random.default_rng([self.seed, zlib.crc32(np.ascontiguousarray(image).tobytes()), zlib.crc32(prompt.text.encode())])
        draw = rng.random()
        if draw < self.flip_fraction and j.verdict != Verdict.INVALID:
            flipped = Verdict.REJECT if j.verdict == Verdict.ACCEPT else Verdict.ACCEPT
            return Judgement(flipped, 1.0 - j.score, j.answer, self.name)
        if draw < self.flip_fraction + self.random_fraction:
            accept = bool(rng.random() < 0.5)
            return Judgement(Verdict.ACCEPT if accept else Verdict.REJECT, float(accept), j.answer, self.name)
        return Judgement(j.verdict, j.score, j.answer, self.name)
