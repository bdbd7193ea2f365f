"""Decoded training images held once, in RAM or on disk, within the memory the machine (or container) has.

`train.cache_images` picks where the images resized to the training size live between epochs:
- `ram`: one contiguous uint8 array (N, S, S, 3), each image in its top-left corner. One array, not a list of
  arrays: forked DataLoader workers share its pages, while a list's per-item reference counts would make each
  worker copy what it reads.
- `disk`: the same array as one `.npy` file under `train.cache_dir`, memory-mapped read-only (workers share the
  page cache). Its name is a hash of the image list (content sha1 where the dataset has it) and the size, so a
  later run on the same images reuses it; a checksum recorded beside it catches a corrupt file, which is rebuilt.
  A disk that fills while it is written loses nothing: the partial file is removed and images are decoded.
- `auto`: RAM when the array fits in `cache_ram_share` of the available memory (the cgroup v2 limit where the
  process runs in one: a container's limit is not what the host's free memory says), else disk when the cache
  folder's file system has room, else decoding on the fly.
- `false`: decode on the fly every time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from detops.atomic import atomic_path, write_json

FORMAT = 1  # bump when the layout or the resize changes: old cache files are then not reused
CHUNK = 64  # images decoded per thread-pool round while writing the disk cache
CGROUP = Path("/sys/fs/cgroup")

Decoded = tuple[np.ndarray, float, float, int, int]  # resized image, x/y scales, original width/height
Where = Literal["ram", "disk", "decode"]


@dataclass(frozen=True)
class Memory:
    """Bytes this process may still fill, and where that number came from."""

    available: int
    source: str  # "cgroup" or "psutil"


def available_memory(cgroup: Path = CGROUP) -> Memory:
    """The cgroup v2 limit minus its usage (reclaimable page cache not counted as used) where a limit is set,
    capped by the machine's available memory (psutil); the latter alone outside a limited cgroup."""
    import psutil

    host = int(psutil.virtual_memory().available)
    try:
        limit_text = (cgroup / "memory.max").read_text().strip()
        usage = int((cgroup / "memory.current").read_text())
    except (OSError, ValueError):
        return Memory(host, "psutil")
    if limit_text == "max":
        return Memory(host, "psutil")
    inactive = _stat_value(cgroup / "memory.stat", "inactive_file")
    in_cgroup = max(0, int(limit_text) - (usage - inactive))
    return Memory(min(in_cgroup, host), "cgroup") if in_cgroup < host else Memory(host, "psutil")


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class ImageStore:
    """The decoded images of one dataset: `images[i, :h, :w]` with `meta[i] = (h, w, sx, sy, orig_w, orig_h)`."""

    images: np.ndarray
    meta: np.ndarray
    path: Path | None = None  # the memory-mapped file (disk), or None (RAM)

    def get(self, index: int) -> Decoded:
        h, w, sx, sy, ow, oh = self.meta[index].tolist()
        image = np.array(self.images[index, : int(h), : int(w)])  # a private copy: augmentation writes to it
        return image, float(sx), float(sy), int(ow), int(oh)

    def __getstate__(self) -> dict[str, Any]:
        """Spawned workers reopen the memory map instead of receiving a pickled copy of the whole file."""
        state = dict(self.__dict__)
        if self.path is not None:
            state["images"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.path is not None:
            self.images = np.load(self.path, mmap_mode="r")


@dataclass
class CachePlan:
    """Where one dataset's images live and the numbers that decided it (logged to the console and MLflow)."""

    name: str
    requested: str
    where: Where
    needed_bytes: int
    budget_bytes: int
    memory: Memory
    path: Path | None = None
    reused: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        gib = 1 << 30
        text = (f"image cache ({self.name}): {self.where} - {self.needed_bytes / gib:.2f} GiB decoded at training "
                f"size; RAM budget {self.budget_bytes / gib:.2f} GiB (share of {self.memory.available / gib:.2f} GiB "
                f"available, {self.memory.source}); train.cache_images={self.requested}")
        if self.path is not None:
            text += f"; {'reused' if self.reused else 'written'} {self.path}"
        return text

    def params(self) -> dict[str, Any]:
        prefix = f"train.cache.{self.name}"
        return {f"{prefix}.where": self.where, f"{prefix}.needed_bytes": self.needed_bytes,
                f"{prefix}.budget_bytes": self.budget_bytes, f"{prefix}.available_bytes": self.memory.available,
                f"{prefix}.memory_source": self.memory.source, f"{prefix}.reused": self.reused}


def cache_key(identities: Sequence[str], size: int) -> str:
    """Names the disk cache: the images (content sha1, else path + size + mtime) in order, and the size."""
    digest = hashlib.sha256(f"detops-image-cache:{FORMAT}:{size}:{len(identities)}\n".encode())
    for identity in identities:
        digest.update(identity.encode() + b"\n")
    return digest.hexdigest()[:32]


def file_identity(path: Path, sha1: str | None) -> str:
    if sha1:
        return f"sha1:{sha1}"
    stat = path.stat()
    return f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def build_store(
    name: str,
    mode: str,
    count: int,
    size: int,
    decode: Callable[[int], Decoded],
    identities: Callable[[], Sequence[str]],
    cache_dir: Path,
    ram_share: float,
    threads: int,
    say: Callable[[str], None],
    memory: Memory | None = None,
) -> tuple[ImageStore | None, CachePlan]:
    """Cache `count` images as `mode` says (see the module docstring); None = decode on the fly."""
    memory = memory or available_memory()
    needed = count * size * size * 3
    budget = int(memory.available * ram_share)
    plan = CachePlan(name, mode, "decode", needed, budget, memory)
    store: ImageStore | None = None
    if mode == "ram" or (mode == "auto" and needed <= budget):
        plan.where = "ram"
        store = _in_ram(count, size, decode, threads)
    elif mode in ("disk", "auto") and count:
        path = cache_dir / f"{cache_key(identities(), size)}.npy"
        store = _on_disk(path, count, size, decode, threads, plan)
    say(plan.describe())
    for note in plan.notes:
        say(note)
    return store, plan


def _in_ram(count: int, size: int, decode: Callable[[int], Decoded], threads: int) -> ImageStore:
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    meta = np.zeros((count, 6), dtype=np.float64)

    def fill(index: int) -> None:
        image, sx, sy, w, h = decode(index)
        images[index, : image.shape[0], : image.shape[1]] = image
        meta[index] = (image.shape[0], image.shape[1], sx, sy, w, h)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(fill, range(count)))
    return ImageStore(images, meta)


def _on_disk(path: Path, count: int, size: int, decode: Callable[[int], Decoded], threads: int,
             plan: CachePlan) -> ImageStore | None:
    """Reuse the file when its checksum holds; else (re)write it; a full disk means decoding on the fly."""
    manifest = path.with_suffix(".json")
    shape = (count, size, size, 3)
    if path.is_file() and manifest.is_file():
        store, problem = _open_verified(path, manifest, shape)
        if store is not None:
            plan.where, plan.path, plan.reused = "disk", path, True
            return store
        plan.notes.append(f"image cache {path}: {problem}; rebuilding it")
        for stale in (manifest, path):  # before the free-space check: its space is about to be reused
            stale.unlink(missing_ok=True)
    free = shutil.disk_usage(_existing_parent(path)).free
    file_bytes = int(np.prod(shape)) + 4096
    if free < file_bytes:
        plan.notes.append(f"image cache: {path.parent} has {free / (1 << 30):.2f} GiB free, the cache needs "
                          f"{file_bytes / (1 << 30):.2f} GiB; decoding images on the fly")
        return None
    try:
        checksum, meta = _write(path, shape, decode, threads)
        write_json(manifest, {"format": FORMAT, "shape": list(shape), "blake2b": checksum, "meta": meta.tolist()})
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        path.unlink(missing_ok=True)  # complete but without its manifest: never trusted, so not kept either
        plan.notes.append(f"image cache: the disk filled while writing {path} ({exc.strerror}); the partial file "
                          "was removed and images are decoded on the fly")
        return None
    plan.where, plan.path = "disk", path
    return ImageStore(np.load(path, mmap_mode="r"), meta, path)


def _existing_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _open_verified(path: Path, manifest: Path, shape: tuple[int, ...]) -> tuple[ImageStore | None, str]:
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    if info.get("format") != FORMAT or tuple(info.get("shape", ())) != shape or images.shape != shape:
        return None, f"layout {images.shape} is not the expected {shape}"
    if _checksum(images) != info.get("blake2b"):
        return None, "checksum mismatch (the file is corrupt)"
    return ImageStore(images, np.asarray(info["meta"], dtype=np.float64), path), ""


def _checksum(images: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=20)
    for start in range(0, len(images), CHUNK):
        digest.update(np.ascontiguousarray(images[start : start + CHUNK]).data)
    return digest.hexdigest()


def _write(path: Path, shape: tuple[int, int, int, int], decode: Callable[[int], Decoded],
           threads: int) -> tuple[str, np.ndarray]:
    """Plain sequential writes (not stores into a fresh memory map, where a full disk is a SIGBUS), decoded
    CHUNK images at a time; the file appears under its name only once complete."""
    count, size = shape[0], shape[1]
    meta = np.zeros((count, 6), dtype=np.float64)
    digest = hashlib.blake2b(digest_size=20)
    with atomic_path(path) as tmp, tmp.open("wb") as out, ThreadPoolExecutor(max(1, threads)) as pool:
        np.lib.format.write_array_header_1_0(
            out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape})
        for start in range(0, count, CHUNK):
            block = np.zeros((min(CHUNK, count - start), size, size, 3), dtype=np.uint8)
            for offset, (image, sx, sy, w, h) in enumerate(pool.map(decode, range(start, start + len(block)))):
                block[offset, : image.shape[0], : image.shape[1]] = image
                meta[start + offset] = (image.shape[0], image.shape[1], sx, sy, w, h)
            digest.update(block.data)
            _append(out, block.data)
    return digest.hexdigest(), meta


def _append(out: IO[bytes], data: memoryview) -> None:
    out.write(data)
