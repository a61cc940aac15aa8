"""Built-in parts by name: the one place where the core meets the worlds bundled with rayunify.

The core (config, prompts, judges, models, driver) never imports `rayunify.shapes`; it asks this registry
for a built-in model directory (`model.path: builtin:NAME`), a built-in prompt source (`prompts.source`)
or a built-in judge (`judge.type`). Each entry imports its implementation only when it is used, so this
module stays pure (no torch, ray or deepspeed) and a config that names no built-in never loads one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayunify.judging import Judge
    from rayunify.types import Prompt

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinModel:
    """A model directory made on first use and cached (seeded), e.g. the ShapesWorld base."""

    description: str
    directory: Callable[[int], str]  # seed -> local directory in the HF layout


@dataclass(frozen=True)
class BuiltinPromptSource:
    """A prompt generator: (n_train, n_eval, seed, categories) -> (train, eval)."""

    description: str
    load: Callable[[int, int, int, Sequence[str] | None], tuple[list[Prompt], list[Prompt]]]
    check_categories: Callable[[Sequence[str]], list[str]]
    category_order: Callable[[], list[str]]  # easiest first: the adaptive curriculum's levels


def _tiny(seed: int) -> str:
    from rayunify.models.factory import cached_tiny_dir

    return str(cached_tiny_dir(seed=seed))


def _shapes_model(size: str) -> Callable[[int], str]:
    def directory(seed: int) -> str:
        from rayunify.shapes.cache import cached_base_dir

        return str(cached_base_dir(size, seed=seed))

    return directory


def _shapes_prompts(n_train: int, n_eval: int, seed: int, categories: Sequence[str] | None):
    from rayunify.shapes.world import held_out_split

    return held_out_split(n_train, n_eval, seed=seed, categories=categories)


def _shapes_check_categories(categories: Sequence[str]) -> list[str]:
    from rayunify.shapes.world import check_categories  # numpy only

    return check_categories(categories)


def _shapes_category_order() -> list[str]:
    from rayunify.shapes.world import CATEGORIES

    return list(CATEGORIES)


def _shapes_checker(cfg: Any) -> Judge:
    from rayunify.judging import ShapesCheckerJudge

    return ShapesCheckerJudge()


MODELS: dict[str, BuiltinModel] = {
    "tiny": BuiltinModel("a tiny random Janus for tests (built in seconds)", _tiny),
    "shapes-base": BuiltinModel("the ShapesWorld base model (trained on first use)", _shapes_model("base")),
    "shapes-noisy": BuiltinModel("the ShapesWorld base trained on noisy captions", _shapes_model("noisy")),
    "shapes-test": BuiltinModel("a small ShapesWorld base for tests", _shapes_model("test")),
}
PROMPT_SOURCES: dict[str, BuiltinPromptSource] = {
    "shapes": BuiltinPromptSource(
        "ShapesWorld's generator (held-out split of meanings)",
        _shapes_prompts,
        _shapes_check_categories,
        _shapes_category_order,
    ),
}
# judge.type -> factory(judge config) for judges that need no model.
JUDGES: dict[str, Callable[[Any], Judge]] = {"shapes_checker": _shapes_checker}


def is_builtin(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX)


def builtin_model(path: str) -> BuiltinModel:
    """The registry entry for `builtin:NAME`, or a ValueError listing the names there are."""
    name = path.removeprefix(BUILTIN_PREFIX)
    if name not in MODELS:
        choices = ", ".join(BUILTIN_PREFIX + n for n in MODELS)
        raise ValueError(f"model.path={path!r}: unknown built-in model; choose one of {choices}")
    return MODELS[name]


def resolve_model_path(path: str, seed: int = 0) -> str:
    """`builtin:NAME` -> its cached local directory (built on first use); any other path unchanged."""
    return builtin_model(path).directory(seed) if is_builtin(path) else path


def prompt_source(name: str) -> BuiltinPromptSource:
    if name not in PROMPT_SOURCES:
        raise ValueError(f"prompts.source={name!r} is not a built-in prompt source ({', '.join(PROMPT_SOURCES)})")
    return PROMPT_SOURCES[name]


def build_builtin_judge(kind: str, cfg: Any) -> Judge | None:
    """A built-in judge for `judge.type=kind`, or None when `kind` is not one."""
    factory = JUDGES.get(kind)
    return None if factory is None else factory(cfg)
