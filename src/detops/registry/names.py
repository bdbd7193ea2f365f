"""Names the registry accepts, checked before any request so a typo fails early and says why."""

from __future__ import annotations

import posixpath
import re

from detops.errors import RegistryError

CHAMPION = "champion"
CHALLENGER = "challenger"
_ALIAS = re.compile(r"^[\w\-]+$")


def model_name_problem(name: str) -> str | None:
    """Why MLflow would reject `name` as a registered model name (its rules in mlflow.utils.validation), or None."""
    if not name or not name.strip():
        return "the name is empty"
    if "/" in name or ":" in name:
        return "names cannot contain '/' or ':'"
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        return f"MLflow stores names as paths and this one would resolve to {norm!r}"
    return None


def check_model_name(name: str) -> str:
    """`name` unchanged, or a RegistryError naming the rule it breaks and the param to fix."""
    problem = model_name_problem(name)
    if problem:
        raise RegistryError(
            f"invalid registered model name {name!r}: {problem}. Fix mlflow.registered_model in params.yaml."
        )
    return name


def previous_alias(alias: str) -> str:
    """Alias of the version a promotion or rollback demoted: `previous-champion` for the default alias."""
    return f"previous-{alias}"


def check_alias(alias: str) -> str:
    """MLflow's alias rules: word characters and dashes, `latest` and `v<N>` reserved."""
    lowered = alias.lower()
    if not _ALIAS.match(alias) or lowered == "latest" or re.fullmatch(r"v\d+", lowered):
        raise RegistryError(
            f"invalid registry alias {alias!r}: use letters, digits, '_' or '-', not 'latest' or 'v<N>'."
            " Fix promote.alias in params.yaml."
        )
    return alias

SPLITS_FOLDER = "splits"  # where `promote` logs a run's split files (and its split assignments)
