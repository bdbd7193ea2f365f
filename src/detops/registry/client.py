"""One way to reach the registry: bounded requests, a validated model name, and MLflow errors turned into ours."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from detops.errors import DetopsError, RegistryError
from detops.registry.names import check_model_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from detops.workspace import Workspace

P = ParamSpec("P")
T = TypeVar("T")

_UNREACHABLE = ("Max retries exceeded", "Failed to establish a new connection", "Read timed out", "timed out")


def connect(ws: Workspace) -> MlflowClient:
    """The registry's client: the model name checked, then `detops.tracking.mlflow_client` (the workspace's store,
    requests bounded, so a server that is down fails in seconds, not minutes)."""
    from detops.tracking import mlflow_client

    check_model_name(ws.params.mlflow.registered_model)
    return mlflow_client(ws)


def registry_call(func: Callable[P, T]) -> Callable[P, T]:
    """Turn MLflow's exceptions into a RegistryError that names the operation and the fix; ours pass through."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        from mlflow.exceptions import MlflowException

        try:
            return func(*args, **kwargs)
        except DetopsError:
            raise
        except MlflowException as exc:
            raise to_registry_error(exc, func.__name__) from exc
        except OSError as exc:  # requests' ConnectionError and Timeout are OSErrors too
            raise to_registry_error(exc, func.__name__) from exc

    return wrapper


def to_registry_error(exc: Exception, operation: str) -> RegistryError:
    """A message a user can act on: an unreachable server says so; anything else quotes MLflow."""
    message = getattr(exc, "message", None) or str(exc)
    if is_unreachable(message):
        url = re.search(r"API request to (\w+://[^/\s]+)", message)
        cause = re.findall(r"\[Errno -?\d+\] ([^\"')]+)|(Read timed out)", message)
        why = next((a or b for a, b in reversed(cause)), "") or _first_line(message, 200)
        return RegistryError(
            f"the MLflow tracking server {url.group(1) if url else ''} is unreachable ({why}) during {operation}."
            " Start it, or point MLFLOW_TRACKING_URI (or mlflow.tracking_uri) at a running one; each request is"
            " bounded by mlflow.http_timeout and mlflow.http_max_retries."
        )
    return RegistryError(f"{operation}: MLflow refused the request: {_first_line(message)}")


def is_unreachable(message: str) -> bool:
    """Whether an MLflow or requests error message says the server could not be reached."""
    return any(marker in message for marker in _UNREACHABLE)


def _first_line(message: str, limit: int = 400) -> str:
    line = message.strip().splitlines()[0] if message.strip() else message
    return line if len(line) <= limit else line[: limit - 3] + "..."
