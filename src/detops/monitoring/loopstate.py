"""The loop's state beside its batches: with `monitor.landing` on object storage, what the labelling loop keeps
between runs (the selections, the Label Studio round trips with their task ids, the review lists, the batch audits,
the lists of images to label) lives under `<landing>/.loop/<output>/`, so a run in a fresh pod knows it.

A run works on a local copy: `loop_state` fetches it before the block and writes back after it what the block
changed (new and rewritten files uploaded, removed ones deleted), also when the block fails, as the files it wrote
on a disk would stay. Runs that touch it are serialised (the workspace lock on one machine; Prefect's global
concurrency limit on a cluster), so a copy is never written back over a newer one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from detops.monitoring.landing import Store, landing_location, open_store
from detops.workspace import Workspace

# The monitor step's outputs that are loop state (the ledger is an object beside the batches already).
LOOP_STATE = ("labels_needed", "selections", "batch_audits", "review", "label_studio")
PREFIX = ".loop"


@contextmanager
def loop_state(ws: Workspace) -> Iterator[None]:
    """The loop's state fetched from the landing store before the block and written back after; nothing to do when
    monitor.landing is a folder here."""
    location = landing_location(ws)
    if not isinstance(location, str):
        yield
        return
    store = open_store(location)
    folders = {name: ws.output("monitor", name) for name in LOOP_STATE}
    fetched = fetch(store, folders)
    try:
        yield
    finally:
        write_back(store, folders, fetched)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(store: Store, folders: dict[str, Path]) -> dict[Path, str]:
    """Every file of the stored state into its folder here; returns each one's digest, as fetched."""
    store.fs.invalidate_cache()
    fetched = {}
    for name, folder in folders.items():
        prefix = store.path(PREFIX, name)
        for remote in store.fs.find(prefix):
            local = folder / str(remote)[len(prefix) + 1:]
            local.parent.mkdir(parents=True, exist_ok=True)
            store.fs.get_file(remote, str(local))
            fetched[local] = _digest(local)
    return fetched


def write_back(store: Store, folders: dict[str, Path], fetched: dict[Path, str]) -> None:
    """Upload the files new or changed since `fetch`, delete from the store those removed here."""
    for name, folder in folders.items():
        for local in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []:
            if fetched.get(local) != _digest(local):
                store.fs.put_file(str(local), store.path(PREFIX, name, local.relative_to(folder).as_posix()))
        for local in fetched:
            if local.is_relative_to(folder) and not local.exists():
                store.fs.rm_file(store.path(PREFIX, name, local.relative_to(folder).as_posix()))
