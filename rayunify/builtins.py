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
    from rayunify.judges.base import Judge
    from rayunify.types import Prompt

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinModel:
    """A model directory made on first use and cached (seeded), e.g. the ShapesWorld base."""

    description: str
    directory: Callable[[int], str]  # seed -> local directory in the HF layout
    family: str = "janus"  # the model.type it is loaded as
    # seed -> its directory if it is there or made in seconds, None if it would have to be trained first (what a
    # dry run may read without starting a long build); None: `directory` is always quick.
    existing: Callable[[int], str | None] | None = None


@dataclass(frozen=True)
class BuiltinPromptSource:
    """A prompt generator: (n_train, n_eval, seed, categories, eval_split) -> (train, eval)."""

    description: str
    load: Callable[[int, int, int, Sequence[str] | None, str | None], tuple[list[Prompt], list[Prompt]]]
    check_categories: Callable[[Sequence[str]], list[str]]
    eval_splits: tuple[str, ...] = ()  # what prompts.eval_split may name (None: the source's default list)
    # (model directory, eval prompts, size, seed, SamplingSettings) -> a fixed, labelled image set with
    # .texts, .categories, .images, .labels (trainer.judge_set_size); None: the source cannot label images.
    judge_set: Callable[..., Any] | None = None


def _tiny(seed: int) -> str:
    from rayunify.models.factory import cached_tiny_dir

    return str(cached_tiny_dir(seed=seed))


def _showo_tiny(seed: int) -> str:
    from rayunify.models.showo_factory import cached_tiny_showo_dir

    return str(cached_tiny_showo_dir(seed=seed))


def _shapes_model(size: str) -> Callable[[int], str]:
    def directory(seed: int) -> str:
        from rayunify.shapes.cache import cached_base_dir

        return str(cached_base_dir(size, seed=seed))

    return directory


def _existing_shapes_model(size: str) -> Callable[[int], str | None]:
    def existing(seed: int) -> str | None:
        from rayunify.shapes.cache import existing_base_dir

        found = existing_base_dir(size, seed)
        return None if found is None else str(found)

    return existing


def _shapes_prompts(n_train: int, n_eval: int, seed: int, categories: Sequence[str] | None, eval_split: str | None):
    from rayunify.shapes.splits import prompt_split

    return prompt_split(n_train, n_eval, seed=seed, categories=categories, eval_split=eval_split)


def _shapes_judge_set(model_dir: str, prompts: Sequence[Prompt], size: int, seed: int, settings: Any) -> Any:
    from rayunify.shapes.judge_set import cached_judge_set

    return cached_judge_set(model_dir, prompts, size, seed, settings)


def _shapes_check_categories(categories: Sequence[str]) -> list[str]:
    from rayunify.shapes.world import check_categories  # numpy only

    return check_categories(categories)


def _shapes_checker(cfg: Any) -> Judge:
    from rayunify.shapes.judge import ShapesCheckerJudge

    return ShapesCheckerJudge()


MODELS: dict[str, BuiltinModel] = {
    "tiny": BuiltinModel("a tiny random Janus for tests (built in seconds)", _tiny),
    "showo-tiny": BuiltinModel("a tiny random Show-o for tests", _showo_tiny, family="showo"),
    "shapes-base": BuiltinModel(
        "the ShapesWorld base model (trained on first use)", _shapes_model("base"), existing=_existing_shapes_model("base")
    ),
    "shapes-noisy": BuiltinModel(
        "the ShapesWorld base trained on noisy captions", _shapes_model("noisy"), existing=_existing_shapes_model("noisy")
    ),
    "shapes-test": BuiltinModel(
        "a small ShapesWorld base for tests", _shapes_model("test"), existing=_existing_shapes_model("test")
    ),
}
PROMPT_SOURCES: dict[str, BuiltinPromptSource] = {
    "shapes": BuiltinPromptSource(
        "ShapesWorld's generator (held-out split of meanings)",
        _shapes_prompts,
        _shapes_check_categories,
        ("test", "validation"),  # rayunify.shapes.splits.EVAL_SPLITS (not imported: numpy stays unloaded)
        _shapes_judge_set,
    ),
}
# Architectures without weights (random init on the meta device): what a dry run sizes and checks when the
# real checkpoint is not on this machine. Not trainable: naming one in a real run is an error.
ARCHITECTURES: dict[str, str] = {
    "janus-pro-1b-shape": "JANUS_PRO_1B",
    "janus-pro-7b-shape": "JANUS_PRO_7B",
    "showo-512-shape": "SHOWO_512",  # model.type=showo
    "showo-256-shape": "SHOWO_256",
}
# judge.type -> factory(judge config) for judges that need no model.
JUDGES: dict[str, Callable[[Any], Judge]] = {"shapes_checker": _shapes_checker}


def _shapes_checker_problem(prompts: Sequence[Prompt]) -> str | None:
    from rayunify.shapes.world import Spec

    for prompt in prompts:
        try:
            Spec.from_dict(prompt.spec)
        except ValueError as err:
            return f"prompt {prompt.text!r} has no ShapesWorld spec ({err}); use another judge for free-text prompts"
    return None


# judge.type -> why a built-in judge cannot score these prompts (None: it can).
JUDGE_PROMPT_CHECKS: dict[str, Callable[[Sequence[Prompt]], str | None]] = {"shapes_checker": _shapes_checker_problem}


def builtin_family(path: str) -> str | None:
    """The model family (`model.type`) a `builtin:` model or architecture is; None for any other path or an
    unknown name (which `builtin_model` explains)."""
    name = path.removeprefix(BUILTIN_PREFIX)
    if not is_builtin(path):
        return None
    if name in ARCHITECTURES:
        return "showo" if ARCHITECTURES[name].startswith("SHOWO") else "janus"
    return MODELS[name].family if name in MODELS else None


def is_builtin(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX)


def builtin_model(path: str) -> BuiltinModel:
    """The registry entry for `builtin:NAME`, or a ValueError listing the names there are."""
    name = path.removeprefix(BUILTIN_PREFIX)
    if name in ARCHITECTURES:
        raise ValueError(
            f"model.path={path!r} is an architecture without weights: use it with --dry-run (sizes and checks), "
            "and point model.path at the checkpoint directory to train"
        )
    if name not in MODELS:
        choices = ", ".join(BUILTIN_PREFIX + n for n in [*MODELS, *ARCHITECTURES])
        raise ValueError(f"model.path={path!r}: unknown built-in model; choose one of {choices}")
    return MODELS[name]


def builtin_architecture(path: str) -> Any | None:
    """The architecture (`JanusArch`, or `ShowoArch` for Show-o) a `builtin:*-shape` path names, else None."""
    name = path.removeprefix(BUILTIN_PREFIX)
    if not is_builtin(path) or name not in ARCHITECTURES:
        return None
    from rayunify.models import factory

    return getattr(factory, ARCHITECTURES[name])


def resolve_model_path(path: str, seed: int = 0) -> str:
    """`builtin:NAME` -> its cached local directory (built on first use); any other path unchanged."""
    return builtin_model(path).directory(seed) if is_builtin(path) else path


def existing_model_dir(path: str, seed: int = 0) -> str | None:
    """`resolve_model_path` without a long build: a built-in's directory only if it is there or quick to make."""
    if not is_builtin(path):
        return path
    entry = builtin_model(path)
    return entry.directory(seed) if entry.existing is None else entry.existing(seed)


def prompt_source(name: str) -> BuiltinPromptSource:
    if name not in PROMPT_SOURCES:
        raise ValueError(f"prompts.source={name!r} is not a built-in prompt source ({', '.join(PROMPT_SOURCES)})")
    return PROMPT_SOURCES[name]


def build_builtin_judge(kind: str, cfg: Any) -> Judge | None:
    """A built-in judge for `judge.type=kind`, or None when `kind` is not one."""
    factory = JUDGES.get(kind)
    return None if factory is None else factory(cfg)
