"""The promotion lock: MLflow aliases are last-writer-wins with no compare-and-set, so two promotions that both
read the same champion would both move the alias and the later (maybe worse) one would win. Holding this lock
around "re-read the champion, re-gate, move the aliases" makes those three steps one unit.

The kind is chosen by `promote.lock`, never by probing the environment:
- `file`: an OS file lock (filelock) in the workspace. Safe for every promoter on one host sharing the workspace,
  which is the case for the default local SQLite store.
- `prefect`: a Prefect global concurrency limit with one slot, acquired with `strict=True`, so a limit that does
  not exist is an error instead of a silent no-op. Use it with a shared tracking server: every promoter, on any
  host, talks to the same Prefect server. The deploy command creates the limit (`lock_name(ws)`, limit 1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from detops.errors import PromotionError

if TYPE_CHECKING:
    from detops.workspace import Workspace


def lock_name(ws: Workspace) -> str:
    """One lock per registered model: promotions of different models never wait for each other."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", ws.params.mlflow.registered_model).strip("-") or "model"
    return f"detops-promote-{slug}"


def lock_file(ws: Workspace) -> Path:
    """Where the `file` lock lives: a hidden folder of the workspace (git-ignored)."""
    return ws.root / ".detops" / f"{lock_name(ws)}.lock"


@contextmanager
def promotion_lock(ws: Workspace) -> Iterator[None]:
    """Hold the promotion lock of `ws`'s registered model for the duration of the block.

    Waits at most `promote.lock_timeout` seconds, then raises PromotionError. Errors raised inside the block
    pass through unchanged; only failures to acquire the lock are translated.
    """
    with ExitStack() as stack:
        if ws.params.promote.lock == "file":
            _enter_file_lock(stack, ws)
        else:
            _enter_prefect_limit(stack, ws)
        yield


def _enter_file_lock(stack: ExitStack, ws: Workspace) -> None:
    from filelock import FileLock, Timeout

    path = lock_file(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new FileLock per call opens its own descriptor, so threads of one process exclude each other too.
    lock = FileLock(path, timeout=ws.params.promote.lock_timeout, thread_local=False)
    try:
        stack.enter_context(lock)
    except Timeout:
        raise PromotionError(
            f"another promotion has held {path} for more than promote.lock_timeout"
            f" ({ws.params.promote.lock_timeout:g} s); wait for it to finish or raise promote.lock_timeout."
        ) from None


def _enter_prefect_limit(stack: ExitStack, ws: Workspace) -> None:
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    name = lock_name(ws)
    timeout = ws.params.promote.lock_timeout
    try:
        stack.enter_context(concurrency(name, occupy=1, timeout_seconds=timeout, strict=True))
    except ConcurrencySlotAcquisitionError as exc:
        raise PromotionError(
            f"Prefect global concurrency limit {name!r} is not available ({exc}). Create it on the Prefect server"
            f" that PREFECT_API_URL names (`prefect gcl create {name} --limit 1`, done by the deploy command),"
            " or set promote.lock=file for a local store on one host."
        ) from None
    except TimeoutError:
        raise PromotionError(
            f"another promotion has held the Prefect concurrency limit {name!r} for more than"
            f" promote.lock_timeout ({timeout:g} s); wait for it to finish or raise promote.lock_timeout."
        ) from None
