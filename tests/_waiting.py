"""Polling until a condition holds: for tests that watch another process or thread do its work."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def wait_until(condition: Callable[[], Any], timeout: float, what: str, log: Path | None = None,
               poll: float = 0.5) -> Any:
    """The first truthy value of `condition()`; an AssertionError naming `what` (and the log's tail) after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail(log) if log else ''}")
