"""The registry of built-in parts by name: the one place where the core meets the worlds plugged into it.

The core (config, prompts, judges, models, driver) imports no plugin. It asks this registry for a built-in
model directory (`model.path: builtin:NAME`), a prompt source (`prompts.source`), a judge (`judge.type`) or
a command (`rayunify NAME`); plugins fill it. A plugin is a module with a `register()` function that calls
`register_model`, `register_prompt_source`, ... here. Two kinds are loaded, once per process, on the first
look-up (so a Ray worker started by a plain `ray.init()` finds them too, with no start-up call to forget):

- the plugins shipped in this package, `BUILTIN_PLUGINS` (the tiny test models and ShapesWorld), named
  as strings the way pytest names its default plugins: importing them here would make the core depend on
  them, and entry points of the package itself would tie every checkout to its installed metadata;
- third-party plugins: any distribution's entry point in the group `rayunify.plugins`, e.g. a user's world
  declares `[project.entry-points."rayunify.plugins"] myworld = "myworld.rayunify:register"`.

Registration functions only record names and lazy callables, so this module stays pure (no torch, ray or
deepspeed) and a config that names no built-in never loads one's implementation.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import argparse

    from rayunify.types import Judge, Prompt

BUILTIN_PREFIX = "builtin:"
BUILTIN_PLUGINS = ("rayunify.models.plugin:register", "rayunify.shapes.plugin:register")
ENTRY_POINT_GROUP = "rayunify.plugins"


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
    check_categories: Callable[[Sequence[str]], list[str]] | None = None  # None: the source has no categories
    eval_splits: tuple[str, ...] = ()  # what prompts.eval_split may name (None: the source's default list)
    # (model directory, eval prompts, size, seed, SamplingSettings) -> a fixed, labelled image set with
    # .texts, .categories, .images, .labels (trainer.judge_set_size); None: the source cannot label images.
    judge_set: Callable[..., Any] | None = None


@dataclass(frozen=True)
class BuiltinCommand:
    """A `rayunify NAME` subcommand a plugin adds (e.g. ShapesWorld's `shapes-base`)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # the exit code


T = TypeVar("T")
_loaded = False
# Held while loading: another thread's look-up waits for every plugin instead of reading a half-filled
# registry (a suite runner's threads resolving configs at once saw "unknown" names). Re-entrant, because a
# plugin's register() may look names up on the loading thread.
_loading = threading.RLock()


def load_plugins() -> None:
    """Register every built-in and installed plugin, once per process (every look-up calls this)."""
    global _loaded
    with _loading:
        if _loaded:
            return
        _loaded = True  # set first: a look-up inside a plugin's register() must not load again
        third_party = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
        for spec in dict.fromkeys([*BUILTIN_PLUGINS, *third_party]):
            module_name, _, function = spec.partition(":")
            getattr(importlib.import_module(module_name), function or "register")()


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry; reading it loads the plugins first."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"two plugins register the {self.what} {name!r}")
        self._entries[name] = entry

    def __getitem__(self, name: str) -> T:
        load_plugins()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(dict(self._entries))

    def __len__(self) -> int:
        load_plugins()
        return len(self._entries)


MODELS: Registry[BuiltinModel] = Registry("built-in model")
PROMPT_SOURCES: Registry[BuiltinPromptSource] = Registry("prompt source")
# Architectures without weights (random init on the meta device): what a dry run sizes and checks when the
# real checkpoint is not on this machine. Not trainable: naming one in a real run is an error.
ARCHITECTURES: Registry[Callable[[], Any]] = Registry("architecture")  # name -> () -> JanusArch or ShowoArch
# judge.type -> factory(judge config) for judges that need no model.
JUDGES: Registry[Callable[[Any], Judge]] = Registry("judge")
# judge.type -> why a built-in judge cannot score these prompts (None: it can).
JUDGE_PROMPT_CHECKS: Registry[Callable[[Sequence[Prompt]], str | None]] = Registry("judge prompt check")
COMMANDS: Registry[BuiltinCommand] = Registry("command")
ARCHITECTURE_FAMILIES: dict[str, str] = {}  # architecture name -> the model.type it is


def register_model(name: str, model: BuiltinModel) -> None:
    MODELS.register(name, model)


def register_architecture(name: str, architecture: Callable[[], Any], family: str = "janus") -> None:
    ARCHITECTURES.register(name, architecture)
    ARCHITECTURE_FAMILIES[name] = family


def register_prompt_source(name: str, source: BuiltinPromptSource) -> None:
    PROMPT_SOURCES.register(name, source)


def register_judge(
    kind: str, factory: Callable[[Any], Judge], prompt_check: Callable[[Sequence[Prompt]], str | None] | None = None
) -> None:
    JUDGES.register(kind, factory)
    if prompt_check is not None:
        JUDGE_PROMPT_CHECKS.register(kind, prompt_check)


def register_command(name: str, command: BuiltinCommand) -> None:
    COMMANDS.register(name, command)


def builtin_family(path: str) -> str | None:
    """The model family (`model.type`) a `builtin:` model or architecture is; None for any other path or an
    unknown name (which `builtin_model` explains)."""
    name = path.removeprefix(BUILTIN_PREFIX)
    if not is_builtin(path):
        return None
    if name in ARCHITECTURES:
        return ARCHITECTURE_FAMILIES[name]
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
    return ARCHITECTURES[name]()


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
