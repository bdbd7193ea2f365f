"""Where batches land: a folder on this disk, or a prefix on object storage (`monitor.landing` as an fsspec URL:
s3://, gs://, az://, file://), so that every serving replica's capture reaches one drift check and a run in a fresh
pod finds the batches and their ledger.

An object store has no rename and no append, so the protocol keeps only what holds there: a batch's manifest is
its last object (a reader that sees it sees every file before it), and whoever reads a batch reads a local copy of
it, downloaded once into `.detops/landing/<name>` and renamed into place whole; so every format reader stays a
reader of folders. Listings are never cached: another replica may have sealed a batch a moment ago.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.atomic import atomic_dir
from detops.objectstore import is_url, open_fs

if TYPE_CHECKING:
    from detops.workspace import Workspace

COPIES = ".detops/landing"  # under the workspace: the local copies of batches read from object storage


def landing_location(ws: Workspace) -> Path | str:
    """`monitor.landing`: its URL as given, or the folder it names under the workspace."""
    location = ws.params.monitor.landing
    return location.rstrip("/") if is_url(location) else ws.resolve(location)


@dataclass(frozen=True)
class Store:
    """A landing prefix on object storage, through fsspec."""

    fs: Any  # fsspec.AbstractFileSystem
    root: str  # the prefix's path on `fs`, without a trailing slash
    url: str

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def folders(self) -> list[str]:
        """The batch folders' names (hidden ones, `.incoming`, are never batches)."""
        self.fs.invalidate_cache()
        try:
            found = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        names = (str(item["name"]).rstrip("/").rsplit("/", 1)[-1] for item in found if item["type"] == "directory")
        return sorted(name for name in names if not name.startswith("."))

    def sealed(self, manifest: str) -> list[str]:
        """The names of the batches whose manifest is there."""
        self.fs.invalidate_cache()
        found = self.fs.glob(self.path("*", manifest))
        return sorted(name for name in (str(p).rsplit("/", 2)[-2] for p in found) if not name.startswith("."))

    def is_sealed(self, name: str, manifest: str) -> bool:
        self.fs.invalidate_cache()
        return bool(self.fs.exists(self.path(name, manifest)))

    def fetch(self, name: str, into: Path) -> Path:
        """A local copy of sealed batch `name` under `into` (made once, renamed into place whole): its files
        but the hidden ones (a writer's parts), the manifest among them."""
        target = into / name
        if target.is_dir():
            return target
        self.fs.invalidate_cache()
        prefix = self.path(name) + "/"
        with atomic_dir(target) as tmp:
            for remote in self.fs.find(self.path(name)):
                relative = str(remote)[len(prefix):]
                if any(part.startswith(".") for part in relative.split("/")):
                    continue
                (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(remote, str(tmp / relative))
        return target

    def put(self, folder: Path, name: str, manifest: str) -> None:
        """Upload a batch written here, every file before its manifest, so no reader sees it half there."""
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != manifest)
        for path in [*files, folder / manifest]:
            self.fs.put_file(str(path), self.path(name, path.relative_to(folder).as_posix()))


def open_store(url: str) -> Store:
    """The store behind an fsspec URL; credentials and endpoint come from the environment (a pod's Secret)."""
    fs, root = open_fs(url)
    return Store(fs, root, url.rstrip("/"))

