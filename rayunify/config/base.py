"""The config tree's building blocks: strict sections (unknown keys are errors) and `type`-tagged variants."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Tag,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def variants(*models: type[BaseModel]) -> Any:
    """A union chosen by its `type` field; a section that omits `type` gets the first variant."""
    default = models[0].model_fields["type"].default

    def tag_of(value: Any) -> str:
        return value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)

    tagged = tuple(Annotated[m, Tag(m.model_fields["type"].default)] for m in models)
    return Annotated[Union[tagged], Discriminator(tag_of)]  # noqa: UP007

