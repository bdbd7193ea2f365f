"""One run at a time per workspace: the CLI (and so `dvc repro`) and the Prefect flow take the same lock.

A file lock in the workspace's `.detops/` folder: two processes writing the same outputs would corrupt them,
whichever way each was started. Re-entrant within a process (a flow holding it may call a step that asks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from detops.errors import DetopsError

LOCK_FILE = ".detops/workspace.lock"
HELD_BY = "DETOPS_WORKSPACE_LOCK_HELD"  # set for a subprocess of the run holding the lock: the workspace path


class WorkspaceBusy(DetopsError):
    """Another run holds the workspace for longer than we were willing to wait."""


@contextmanager
def workspace_lock(root: Path, timeout: float = -1) -> Iterator[None]:
    """Hold the workspace; wait for the run that has it (`timeout` seconds, -1 = as long as it takes).

    A DDP rank other than the first (LOCAL_RANK > 0 on this machine, or RANK > 0 on another node of a
    `train.num_nodes` run sharing the workspace's volume), or a step a run started as a subprocess (HELD_BY set to
    this workspace), is part of the run that holds the lock already.
    """
    from filelock import FileLock, Timeout

    extra_rank = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0"
    if extra_rank or os.environ.get(HELD_BY) == str(Path(root).resolve()):
        yield
        return

    path = Path(root) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=True)
    try:
        with lock.acquire(timeout=timeout):
            yield
    except Timeout:
        raise WorkspaceBusy(f"{root}: another detops run holds the workspace ({path}); wait for it to finish.") \
            from None
