"""A step's library output in a log file of its own: `reports/logs/<step>.log`.

Libraries print while a step runs: ONNX Runtime's calibrator ("Collecting tensor data and making histogram ..."
dozens of times), Lightning's and Great Expectations' notices, tqdm bars, warnings, C extensions writing to file
descriptor 1 or 2. In a terminal they bury our progress bars and the run's summary. While a step runs, file
descriptors 1 and 2 and `sys.stdout` / `sys.stderr` point at the step's log (so C-level writes, Python prints and
logging handlers that hold the original streams all land there), and detops' own rich consoles
(`detops.console`) write to the terminal the process had before. The CLI (`detops <verb>`) and the Prefect tasks
both run a step inside `step_log`; the run page links the logs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import TextIO

from detops.workspace import Workspace

LOGS = "logs"  # under the workspace's reports folder
_active: list[Path] = []  # the log of the step running now: a step inside a step writes to the outer one's


def log_path(ws: Workspace, step: str) -> Path:
    """`reports/logs/<step>.log`; an extra DDP rank (another device, another node on the same volume) writes
    `<step>.rank<N>.log` beside it, so that no rank truncates another's log."""
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    return ws.reports / LOGS / (f"{step}.log" if rank == "0" else f"{step}.rank{rank}.log")


@contextmanager
def step_log(ws: Workspace, step: str) -> Iterator[Path]:
    """Run the body with library output going to `reports/logs/<step>.log` (rewritten each run); returns its path."""
    from detops.console import err_console, out_console

    if _active:
        yield _active[-1]
        return
    path = log_path(ws, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    consoles = (out_console(), err_console())
    streams = (sys.stdout, sys.stderr)
    for stream in streams:
        _flush(stream)
    terminals = [_terminal(stream, fd) for stream, fd in zip(streams, (1, 2), strict=True)]
    saved = [os.dup(1), os.dup(2)]
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)  # descriptors 1 and 2 hold it now
        # streams on "descriptor 1 or 2 of the moment": a logging handler a library makes during the step holds
        # one, and writes to the terminal, not to a closed file, once the step is over
        sys.stdout, sys.stderr = _on_fd(1), _on_fd(2)
        for console, terminal in zip(consoles, terminals, strict=True):
            console.file = terminal
        _active.append(path)
        yield path
    finally:
        if path in _active:
            _active.remove(path)
        for console in consoles:
            console.file = None  # type: ignore[assignment]  # rich: back to the sys stream of the moment
        _flush(sys.stdout)
        _flush(sys.stderr)
        sys.stdout, sys.stderr = streams
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@cache
def _on_fd(fd: int) -> TextIO:
    return open(fd, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)


def _flush(stream: TextIO) -> None:
    with suppress(OSError, ValueError):  # a closed or broken stream: nothing to keep
        stream.flush()


def _terminal(stream: TextIO, fd: int) -> TextIO:
    """Where our console writes during the step: `stream` itself, unless it writes to descriptor `fd` (which will
    point at the log): then a stream on a copy of that descriptor, taken before the redirect."""
    try:
        on_fd = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # a test's or an embedding program's stream, not a descriptor
        on_fd = False
    if not on_fd:
        return stream
    target = os.fstat(fd)
    return _copy_of(fd, target.st_dev, target.st_ino, getattr(stream, "encoding", None) or "utf-8")


@cache
def _copy_of(fd: int, device: int, inode: int, encoding: str) -> TextIO:
    """One stream per terminal for the whole process, never closed: a progress bar a library configured during one
    step (Lightning's rich bar) may still hold it after."""
    return open(os.dup(fd), "w", encoding=encoding, errors="replace", buffering=1)
