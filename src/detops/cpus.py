"""How many CPUs this process may use: sizes thread pools, never changes what they compute."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, a container's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_workers(workers: int) -> int:
    """`workers` threads, or one per usable CPU for 0."""
    return workers or usable_cpus()
