"""The models shipped without weights, registered into `rayunify.builtins`: tiny random Janus and Show-o for
tests, and the real architectures (random weights on the meta device) that dry runs size."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rayunify.builtins import BuiltinModel, register_architecture, register_model

# builtin name -> (the family's factory module, its architecture constant)
ARCHITECTURES = {
    "janus-pro-1b-shape": ("rayunify.models.janus.factory", "JANUS_PRO_1B"),
    "janus-pro-7b-shape": ("rayunify.models.janus.factory", "JANUS_PRO_7B"),
    "showo-512-shape": ("rayunify.models.showo.factory", "SHOWO_512"),  # model.type=showo
    "showo-256-shape": ("rayunify.models.showo.factory", "SHOWO_256"),
}


def _tiny(seed: int) -> str:
    from rayunify.models.janus.factory import cached_tiny_dir

    return str(cached_tiny_dir(seed=seed))


def _showo_tiny(seed: int) -> str:
    from rayunify.models.showo.factory import cached_tiny_showo_dir

    return str(cached_tiny_showo_dir(seed=seed))


def _architecture(module: str, constant: str) -> Callable[[], Any]:
    def load() -> Any:
        return getattr(importlib.import_module(module), constant)  # torch loads only when one is asked for

    return load


def register() -> None:
    register_model("tiny", BuiltinModel("a tiny random Janus for tests (built in seconds)", _tiny))
    register_model("showo-tiny", BuiltinModel("a tiny random Show-o for tests", _showo_tiny, family="showo"))
    for name, (module, constant) in ARCHITECTURES.items():
        family = "showo" if constant.startswith("SHOWO") else "janus"
        register_architecture(name, _architecture(module, constant), family=family)
