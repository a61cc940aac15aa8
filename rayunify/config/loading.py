"""Reading a config: YAML files with `inherit:`, dotted overrides, renamed keys, and errors that name the key and
what is allowed there."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from rayunify.config.tree import Config


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and what is allowed."""


# ---------------------------------------------------------------------------------------------- loading
def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    raw = _read_with_inherit(Path(path)) if path else {}
    for item in overrides or []:
        _apply_override(raw, item)
    _refuse_renamed_keys(raw)
    _family_from_builtin(raw)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(err, source=str(path or "<defaults>"))) from None


# Keys that were renamed: a config written with the old name gets told the new one, never silently ignored.
RENAMED_KEYS = {"judging": "judge_actors"}


def _refuse_renamed_keys(raw: dict[str, Any]) -> None:
    for old, new in RENAMED_KEYS.items():
        if old in raw:
            raise ConfigError(f"config key {old!r} was renamed to {new!r} (the judge actors' resources): rename it")


def _family_from_builtin(raw: dict[str, Any]) -> None:
    """A built-in model names its family: `model.type` follows it when unset, and contradicting it is an error
    (a Show-o loaded as Janus would fail minutes later on a missing tokenizer)."""
    from rayunify.builtins import builtin_family  # pure

    model = raw.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("path"), str):
        return
    family = builtin_family(model["path"])
    if family is None:
        return
    given = model.get("type")
    if given is None:
        model["type"] = family
    elif given != family:
        raise ConfigError(
            f"model.path={model['path']!r} is a {family} model but model.type={given!r}: "
            f"set model.type={family} (or leave it out)"
        )


def _read_with_inherit(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config inheritance loops through {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    base = _read_with_inherit(path.parent / parent, (*seen, path.resolve()))
    return _deep_merge(base, data)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        # A new `type` switches variant: the old variant's keys would be errors in the new one.
        switching = isinstance(value, dict) and isinstance(merged.get(key), dict) and "type" in value
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not (
            switching and value["type"] != merged[key].get("type")
        ):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """`a.b.c=value`; the value is parsed as YAML (numbers, booleans, lists), else kept as a string."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {key} is a value, not a section")
        node = child
    if keys[-1] == "type" and node.get("type") not in (None, value):
        node.clear()  # switching variant drops the old variant's keys
    node[keys[-1]] = value


def _explain(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        # pydantic puts the variant's tag in the path (judge.noisy.base...): users wrote judge.base...
        loc = ".".join(str(p) for i, p in enumerate(e["loc"]) if not _is_tag_position(e["loc"], i))
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(e["loc"][:-1])
            lines.append(f"  unknown key '{loc}'" + (f" (allowed here: {', '.join(allowed)})" if allowed else ""))
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {loc or '<top>'}: {e['msg']}{shown}")
    return "\n".join(lines)


def _is_tag_position(loc: tuple[Any, ...], index: int) -> bool:
    if index == 0:
        return False
    parent = _model_at(loc[:index])
    if parent is None or loc[index] in getattr(parent, "model_fields", {}):
        return False
    return loc[index] in _tags(parent)


def _tags(annotation: Any) -> set[str]:
    return {t for t in (_type_tag(m) for m in _variants(annotation)) if t}


def _model_at(loc: tuple[Any, ...]) -> Any:
    model: Any = Config
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields and part in fields:
            model = fields[part].annotation
        elif _type_tag(model) != part:
            model = next((m for m in _variants(model) if _type_tag(m) == part), None)
        if model is None:
            return None
    return model


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names at a config location (following union variants by their tag in the path)."""
    model = _first_model(_model_at(loc))
    return sorted(getattr(model, "model_fields", {}).keys())


def _variants(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    out: list[Any] = []
    for a in args:
        out.extend(_variants(a))
    return [a for a in out if isinstance(a, type) and issubclass(a, BaseModel)]


def _first_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    variants = _variants(annotation)
    return annotation if len(variants) != 1 else variants[0]


def _type_tag(model: Any) -> str | None:
    field = getattr(model, "model_fields", {}).get("type")
    return None if field is None else field.default


def dump_config(config: Config, path: str | Path) -> None:
    """The resolved config, as the run directory keeps it (loadable again with load_config)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
