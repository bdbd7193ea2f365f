"""Loading rules for `params.yaml`: strict keys, dotted `--set` overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from detops.config.params import Params
from detops.errors import ParamsError


def load_params(path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read `path` (defaults only when None), apply `key.sub=value` overrides, validate strictly."""
    raw = read_raw(path) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return validate_params(raw, source=str(path) if path else "defaults")


def read_raw(path: Path | str) -> dict[str, Any]:
    """The params file as a plain mapping, before validation (so a caller can lay changes over it first)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found. Pass --params or run from the workspace root.")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level.")
    return loaded or {}


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in `raw`; the value is parsed as YAML so `3`, `true`, `[1,2]` keep their type."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    parts = key.strip().split(".")
    _check_known(parts)
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ParamsError(f"--set {item!r}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ParamsError(f"--set {item!r}: value is not valid YAML: {exc}") from exc


def _check_known(parts: list[str]) -> None:
    """Fail early on an unknown dotted key, listing the allowed keys at the level where it went wrong."""
    model: type[BaseModel] = Params
    for depth, part in enumerate(parts):
        fields = _field_names(model)
        if part not in fields:
            where = ".".join(parts[:depth]) or "top level"
            raise ParamsError(
                f"unknown key {'.'.join(parts)!r}: {part!r} is not in {where}; allowed: {', '.join(sorted(fields))}"
            )
        annotation = fields[part]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif depth < len(parts) - 1:
            raise ParamsError(f"unknown key {'.'.join(parts)!r}: {part!r} is a value, not a section")


def _field_names(model: type[BaseModel]) -> dict[str, Any]:
    return {(info.alias or name): info.annotation for name, info in model.model_fields.items()}


def validate_params(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, source)) from None


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} invalid param(s):"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            allowed = ", ".join(sorted(_field_names(parent))) if parent else "?"
            lines.append(f"  {path}: unknown key; allowed here: {allowed}")
        else:
            lines.append(f"  {path}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        annotation = _field_names(model).get(str(part))
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def dump_defaults() -> str:
    """The defaults as YAML with each field's description as a comment: how params.yaml is made."""
    return _dump_model(Params, 0)


def _dump_model(model: type[BaseModel], indent: int) -> str:
    pad = "  " * indent
    out: list[str] = []
    instance = model()
    for name, info in model.model_fields.items():
        key = info.alias or name
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            if indent == 0 and out:
                out.append("")
            doc = (type(value).__doc__ or "").strip().splitlines()
            if doc:
                out.append(f"{pad}# {' '.join(d.strip() for d in doc)}")
            out.append(f"{pad}{key}:")
            out.append(_dump_model(type(value), indent + 1))
        else:
            rendered = yaml.safe_dump({key: value}, default_flow_style=True, width=10_000).strip()[1:-1]
            comment = f"  # {info.description}" if info.description else ""
            out.append(f"{pad}{rendered}{comment}")
    return "\n".join(out)
