"""What a server serves: a registry alias it follows, a fixed registered version, or a model file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detops.errors import DataError, ParamsError
from detops.workspace import Workspace

Kind = Literal["alias", "version", "file"]


@dataclass(frozen=True)
class ModelSource:
    """A registered model followed by alias, one of its versions, or a file (`name` is then empty)."""

    kind: Kind
    ref: str  # the alias, the version number or the file's absolute path
    name: str = ""

    @property
    def follows(self) -> bool:
        """Only an alias can move, so only an alias is watched."""
        return self.kind == "alias"

    @property
    def alias(self) -> str | None:
        return self.ref if self.kind == "alias" else None

    def __str__(self) -> str:
        if self.kind == "file":
            return self.ref
        return f"models:/{self.name}@{self.ref}" if self.kind == "alias" else f"models:/{self.name}/{self.ref}"


def parse_source(ws: Workspace, spec: str) -> ModelSource:
    """`serve.model` as a source: an alias of `mlflow.registered_model`, `models:/NAME/VERSION`,
    `models:/NAME@ALIAS` or a file (an existing path always wins, as for `detops predict`)."""
    from detops.registry.resolve import parse_reference

    reference = parse_reference(ws, spec)
    if reference is None:
        path = ws.resolve(spec)
        if not path.is_file():
            raise DataError(f"{path}: model file not found (serve.model takes a file, an alias such as champion, "
                            "models:/<name>/<version> or models:/<name>@<alias>).")
        return ModelSource("file", str(Path(path).resolve()))
    if reference.version:
        return ModelSource("version", reference.version, reference.name)
    return ModelSource("alias", str(reference.alias), reference.name)


def challenger_source(ws: Workspace, champion: ModelSource) -> ModelSource | None:
    """The alias canary and shadow traffic go to, on the champion's registered model; None when both are off."""
    serve = ws.params.serve
    if serve.canary_share == 0 and serve.shadow_share == 0:
        return None
    if champion.kind == "file":
        raise ParamsError("serve.canary_share and serve.shadow_share need a registered model (the challenger is an "
                          f"alias of it); {champion} is a file. Serve an alias such as champion, or set both to 0.")
    from detops.registry.names import check_alias

    return ModelSource("alias", check_alias(serve.challenger), champion.name)
