"""Partial params for a Prefect UI form: every field optional, unset means "keep params.yaml".

Built from `Params` itself, so the form has every field with its type and description and can never drift
from the params model. A run from the UI overlays what the form sets on the workspace's params.yaml, never
replaces it (a form that changes one field must not reset the others to built-in defaults).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from detops.config.params import Params


def _optional_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """Leaves optional (None = unset); sections an empty overlay by default, so the form shows their fields at once
    instead of a "section / None" choice to click through."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation, doc = info.annotation, info.description or ""
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = _optional_model(annotation, f"{annotation.__name__}Overlay")
            doc = " ".join((annotation.__doc__ or "").split())
            fields[field_name] = (section, Field(default_factory=section, alias=info.alias, description=doc))
        else:
            fields[field_name] = (Optional[annotation], Field(None, alias=info.alias, description=doc))  # noqa: UP045
    config = ConfigDict(extra="forbid", populate_by_name=True)
    return create_model(name, __config__=config, __doc__=model.__doc__, **fields)


if TYPE_CHECKING:
    ParamsOverlay = BaseModel
else:
    ParamsOverlay = _optional_model(Params, "ParamsOverlay")


def changes_of(partial: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    """The fields `partial` sets, nested by section; {} for an empty form (no override at all)."""
    if partial is None:
        return {}
    if isinstance(partial, dict):
        return partial
    return _set_fields(partial, partial.model_dump(by_alias=True, exclude_none=True))


def _set_fields(partial: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """`dumped` without the sections the form left empty (a leaf set to {} stays: that is a value)."""
    out: dict[str, Any] = {}
    for name, info in type(partial).model_fields.items():
        key = info.alias or name
        if key not in dumped:
            continue
        value = getattr(partial, name)
        if isinstance(value, BaseModel):  # every BaseModel field of an overlay is a section
            if section := _set_fields(value, dumped[key]):
                out[key] = section
        else:
            out[key] = dumped[key]
    return out


def overlay(raw: dict[str, Any], partial: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    """`raw` params (params.yaml as loaded) with every field `partial` sets laid over it."""
    return _merge(raw, changes_of(partial))


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = _merge({}, value)
        else:
            out[key] = value
    return out
