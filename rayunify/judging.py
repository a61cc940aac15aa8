"""Judges: anything that turns (image, prompt) pairs into `Judgement`s, chosen by `judge.type` in config.

- self: the model's own understanding branch (the paper), live or frozen weights;
- shapes_checker: ShapesWorld's exact checker (ground truth; the guard's default reference);
- python: user code `module:callable`, fn(images, prompts, **kwargs) -> (verdicts, scores);
- noisy: wraps another judge and flips / randomises / always accepts, to cause co-degradation on purpose.

No ray or deepspeed here: the judge actor wraps one of these.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rayunify.judges import parse_verdict
from rayunify.types import Judgement, Prompt, Verdict

if TYPE_CHECKING:
    from rayunify.config import NoisyJudgeConfig, PythonJudgeConfig
    from rayunify.models.base import UnifiedModel


class Judge(Protocol):
    name: str

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]: ...


class SelfJudge:
    """The unified model judging its own images with the paper's question."""

    def __init__(self, model: UnifiedModel, max_new_tokens: int = 8, batch_size: int = 64):
        self.model = model
        self.name = "self"
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        out: list[Judgement] = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            texts = [p.text for p in prompts[chunk]]
            out.extend(self.model.judge(images[chunk], texts, max_new_tokens=self.max_new_tokens))
        return out


class ShapesCheckerJudge:
    """Exact verdicts from ShapesWorld's checker; needs each prompt's `spec`."""

    name = "shapes_checker"

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        from rayunify.shapes.checker import check_batch
        from rayunify.shapes.world import Spec

        missing = [p.prompt_id for p in prompts if p.spec is None]
        if missing:
            raise ValueError(
                f"the shapes_checker judge needs ShapesWorld prompts with a spec; {len(missing)} have none "
                f"(first: {missing[0]}). Use another judge type for free-text prompts."
            )
        results = check_batch(np.stack(list(images)), [Spec.from_dict(p.spec) for p in prompts])
        return [
            Judgement(
                verdict=Verdict.ACCEPT if r.aligned else Verdict.REJECT,
                score=1.0 if r.aligned else 0.0,
                answer="; ".join(r.reasons) or "aligned",
                judge=self.name,
            )
            for r in results
        ]


class PythonJudge:
    """User code by import path. Verdicts may be bools, 0/1 or answer strings ("The score is 1")."""

    def __init__(self, import_path: str, kwargs: dict[str, Any] | None = None):
        self.fn = load_callable(import_path)
        self.kwargs = kwargs or {}
        self.name = f"python:{import_path}"

    def judge(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Judgement]:
        result = self.fn(list(images), [p.text for p in prompts], **self.kwargs)
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


def load_callable(import_path: str) -> Callable[..., Any]:
    """`package.module:attr` → the object, with errors that say which half failed."""
    module_name, _, attr = import_path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"import path {import_path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import module {module_name!r} for {import_path!r}: {err}") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"{module_name!r} has no attribute {attr!r} (from {import_path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{import_path!r} is not callable")
    return obj


def build_judge(cfg: Any, model_factory: Callable[[], UnifiedModel] | None = None) -> Judge:
    """The one factory for `judge.type` (also used for the guard's reference judge)."""
    kind = getattr(cfg, "type", None)
    if kind == "self":
        if model_factory is None:
            raise ValueError("judge.type=self needs the unified model; no model factory was given")
        return SelfJudge(model_factory(), max_new_tokens=cfg.max_new_tokens)
    if kind == "shapes_checker":
        return ShapesCheckerJudge()
    if kind == "python":
        py: PythonJudgeConfig = cfg
        return PythonJudge(py.import_path, py.kwargs)
    if kind == "noisy":
        noisy: NoisyJudgeConfig = cfg
        base = build_judge(noisy.base, model_factory)
        return NoisyJudge(base, noisy.flip_fraction, noisy.random_fraction, noisy.always_accept, noisy.seed)
    raise ValueError(f"judge.type={kind!r}: choose one of self, shapes_checker, python, noisy")
