"""Decoded training images held once, in RAM or on disk, within the memory the machine (or container) has.

`train.cache_images` picks where the images resized to the training size live between epochs:
- `ram`: one contiguous uint8 array (N, S, S, 3), each image in its top-left corner. One array, not a list of
  arrays: forked DataLoader workers share its pages, while a list's per-item reference counts would make each
  worker copy what it reads.
- `disk`: the same array as one `.npy` file under `train.cache_dir`, memory-mapped read-only (workers share the
  page cache). Its name is a hash of the image list (content sha1 where the dataset has it), the size and the
  decode code (the source that decodes, resizes and lays out the pixels, with the Pillow and OpenCV versions), so a
  later run on the same images with the same code reuses it and a change of either writes a new one; a checksum
  recorded beside it catches a corrupt file, which is rebuilt. A disk that fills while it is written loses
  nothing: the partial file is removed and images are decoded. Each dataset (train, val) keeps its newest
  `train.cache_keep` files (by last use); older ones are deleted, never the one in use. One process at a time
  builds, reuses or evicts (a file lock in the folder): DDP ranks wait for the first one's file and reuse it.
- `auto`: RAM when the array fits the RAM budget, else disk when the cache folder's file system has room, else
  decoding on the fly. The budget is `cache_ram_share` of the memory available now (the tightest cgroup limit of
  this process's cgroup and its ancestors, v2 or v1, minus usage: a container's limit is not what the host's free
  memory says). Under DDP each rank on a machine holds its own copy and they plan at different moments (the
  first's cache already lowers what the next sees free), so there every rank plans from numbers that do not move:
  `cache_ram_share` of the memory limit (cgroup or machine) divided by the ranks on the machine; every rank
  computes the same plan.
- `false`: decode on the fly every time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from detops.atomic import atomic_path, write_json

CHUNK = 64  # images decoded per thread-pool round while writing the disk cache
V1_UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as the largest page-aligned 64-bit number

Decoded = tuple[np.ndarray, float, float, int, int]  # resized image, x/y scales, original width/height
Where = Literal["ram", "disk", "decode"]


@dataclass(frozen=True)
class Memory:
    """Bytes this process may still fill, the limit it runs under, and where the numbers came from."""

    available: int
    limit: int  # the tightest cgroup limit, else the machine's memory
    source: str  # "cgroup" or "psutil"


@dataclass(frozen=True)
class CgroupMemory:
    """The tightest memory limit over a cgroup and its ancestors, and the least headroom among them."""

    limit: int
    available: int


def available_memory(root: Path = Path("/")) -> Memory:
    """The cgroup headroom (`cgroup_memory`) where a limit is set, capped by the machine's available memory
    (psutil); the latter alone outside a limited cgroup."""
    import psutil

    host = psutil.virtual_memory()
    cgroup = cgroup_memory(root)
    limit = min(int(host.total), cgroup.limit) if cgroup else int(host.total)
    if cgroup is not None and cgroup.available < host.available:
        return Memory(cgroup.available, limit, "cgroup")
    return Memory(int(host.available), limit, "psutil")


def cgroup_memory(root: Path = Path("/")) -> CgroupMemory | None:
    """The limits on this process's memory: its cgroup and every ancestor up to the hierarchy's root, in the cgroup
    v2 tree (`memory.max`) and in cgroup v1's memory controller (`memory.limit_in_bytes`), as /proc/self/cgroup and
    /proc/self/mountinfo under `root` place them. Headroom per level: limit minus usage, reclaimable page cache
    (inactive files) not counted as used. None where no level sets a limit."""
    levels: list[tuple[int, int]] = []
    for directory, version in _cgroup_dirs(root):
        if version == 2:
            level = _level(directory, "memory.max", "memory.current", "inactive_file")
        else:
            level = _level(directory, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        if level is not None:
            levels.append(level)
    if not levels:
        return None
    return CgroupMemory(min(limit for limit, _ in levels), min(headroom for _, headroom in levels))


def _cgroup_dirs(root: Path) -> list[tuple[Path, int]]:
    """(folder, cgroup version) from this process's cgroup up to its hierarchy's mount point, for v2 and for v1's
    memory controller."""
    try:
        memberships = (root / "proc/self/cgroup").read_text().splitlines()
        mounts = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    paths: dict[int, str] = {}
    for line in memberships:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            paths[2] = path
        elif "memory" in controllers.split(","):
            paths[1] = path
    dirs: list[tuple[Path, int]] = []
    for mount in mounts:
        fields, _, tail = mount.partition(" - ")
        parts, fs = fields.split(), tail.split()
        if len(parts) < 5 or len(fs) < 3:
            continue
        version = 2 if fs[0] == "cgroup2" else 1 if fs[0] == "cgroup" and "memory" in fs[2].split(",") else 0
        if version not in paths:
            continue
        mount_root, mount_point = Path(parts[3]), root / parts[4].lstrip("/")
        member = Path(paths.pop(version))
        # Without a cgroup namespace a container's mount is rooted at its own cgroup, which /proc names in full.
        inside = member.relative_to(mount_root) if member.is_relative_to(mount_root) else member.relative_to("/")
        for depth in range(len(inside.parts), -1, -1):
            dirs.append((mount_point.joinpath(*inside.parts[:depth]), version))
    return dirs


def _level(directory: Path, limit_file: str, usage_file: str, inactive_key: str) -> tuple[int, int] | None:
    """(limit, headroom) of one cgroup, or None when it sets no limit (or has no memory controller)."""
    try:
        text = (directory / limit_file).read_text().strip()
        usage = int((directory / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if text == "max" or not text.isdigit() or int(text) >= V1_UNLIMITED:
        return None
    limit = int(text)
    return limit, max(0, limit - max(0, usage - _stat_value(directory / "memory.stat", inactive_key)))


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def ram_budget(memory: Memory, share: float, ranks: int) -> int:
    """One process: `share` of what is available now. Several ranks on the machine: `share` of the limit split
    between them, the same number on every rank whenever it plans (see the module docstring)."""
    if ranks <= 1:
        return int(memory.available * share)
    return int(memory.limit * share / ranks)


def decode_code(*sources: object) -> str:
    """Names the code that makes the cached pixels: the source of `sources` (modules, functions) and the versions
    of Pillow (decodes) and OpenCV (resizes). A change of either is another cache file, with no version to bump."""
    import inspect

    import cv2
    import PIL

    digest = hashlib.sha256(f"opencv {cv2.__version__}\npillow {PIL.__version__}\n".encode())
    for source in sources:
        digest.update(inspect.getsource(source).encode())  # type: ignore[arg-type]
    return digest.hexdigest()[:16]


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
    ranks: int = 1
    path: Path | None = None
    reused: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        gib = 1 << 30
        basis = (f"share of {self.memory.available / gib:.2f} GiB available" if self.ranks <= 1 else
                 f"share of the {self.memory.limit / gib:.2f} GiB limit over {self.ranks} ranks")
        text = (f"image cache ({self.name}): {self.where} - {self.needed_bytes / gib:.2f} GiB decoded at training "
                f"size; RAM budget {self.budget_bytes / gib:.2f} GiB ({basis}, {self.memory.source}); "
                f"train.cache_images={self.requested}")
        if self.path is not None:
            text += f"; {'reused' if self.reused else 'written'} {self.path}"
        return text

    def params(self) -> dict[str, Any]:
        prefix = f"train.cache.{self.name}"
        return {f"{prefix}.where": self.where, f"{prefix}.needed_bytes": self.needed_bytes,
                f"{prefix}.budget_bytes": self.budget_bytes, f"{prefix}.available_bytes": self.memory.available,
                f"{prefix}.memory_source": self.memory.source, f"{prefix}.limit_bytes": self.memory.limit,
                f"{prefix}.ranks": self.ranks, f"{prefix}.reused": self.reused}


def cache_key(identities: Sequence[str], size: int, code: str) -> str:
    """Names the disk cache: the images (content sha1, else path + size + mtime) in order, the size and the decode
    code (`decode_code`)."""
    digest = hashlib.sha256(f"detops-image-cache:{code}:{size}:{len(identities)}\n".encode())
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
    code: str,
    cache_dir: Path,
    ram_share: float,
    threads: int,
    say: Callable[[str], None],
    memory: Memory | None = None,
    keep: int | None = None,
    ranks: int = 1,
) -> tuple[ImageStore | None, CachePlan]:
    """Cache `count` images as `mode` says (see the module docstring); None = decode on the fly. `code` names the
    decode code (`decode_code`); `keep`: disk caches of `name` kept (None: none deleted); `ranks`: training
    processes on this machine, each with its own copy."""
    memory = memory or available_memory()
    needed = count * size * size * 3
    plan = CachePlan(name, mode, "decode", needed, ram_budget(memory, ram_share, ranks), memory, ranks)
    store: ImageStore | None = None
    if mode == "ram" or (mode == "auto" and needed <= plan.budget_bytes):
        plan.where = "ram"
        store = _in_ram(count, size, decode, threads)
    elif mode in ("disk", "auto") and count:
        from filelock import FileLock

        path = cache_dir / f"{cache_key(identities(), size, code)}.npy"
        with FileLock(str(_existing_parent(path) / ".lock")):
            store = _on_disk(path, name, count, size, decode, threads, plan)
            if keep is not None:
                evicted = evict(cache_dir, name, keep, in_use=path)
                if evicted:
                    plan.notes.append(f"image cache: deleted {len(evicted)} older disk cache(s) of {name} "
                                      f"(train.cache_keep={keep}): {', '.join(p.name for p in evicted)}")
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


def _on_disk(path: Path, name: str, count: int, size: int, decode: Callable[[int], Decoded], threads: int,
             plan: CachePlan) -> ImageStore | None:
    """Reuse the file when its checksum holds; else (re)write it; a full disk means decoding on the fly."""
    manifest = path.with_suffix(".json")
    shape = (count, size, size, 3)
    if path.is_file() and manifest.is_file():
        store, problem = _open_verified(path, manifest, shape)
        if store is not None:
            os.utime(manifest)  # its time is the last use, which eviction orders by
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
        write_json(manifest, {"name": name, "shape": list(shape), "blake2b": checksum, "meta": meta.tolist()})
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        path.unlink(missing_ok=True)  # complete but without its manifest: never trusted, so not kept either
        plan.notes.append(f"image cache: the disk filled while writing {path} ({exc.strerror}); the partial file "
                          "was removed and images are decoded on the fly")
        return None
    plan.where, plan.path = "disk", path
    return ImageStore(np.load(path, mmap_mode="r"), meta, path)


def evict(cache_dir: Path, name: str, keep: int, in_use: Path) -> list[Path]:
    """Delete the disk caches of dataset `name` beyond its `keep` most recently used, never `in_use`; a manifest
    with no name is from an earlier layout, never reused, and deleted too. Returns the deleted cache files."""
    found: list[tuple[float, Path]] = []
    for manifest in cache_dir.glob("*.json"):
        try:
            owner = json.loads(manifest.read_text(encoding="utf-8")).get("name")
            used = manifest.stat().st_mtime
        except (OSError, ValueError):
            continue
        if owner == name or owner is None:
            found.append((used if owner == name else float("-inf"), manifest))
    found.sort(key=lambda item: item[0], reverse=True)
    kept = int(in_use.is_file())  # the one in use counts among the kept, whatever its age
    deleted = []
    for used, manifest in found:
        cache = manifest.with_suffix(".npy")
        if cache == in_use:
            continue
        if used != float("-inf") and kept < keep:
            kept += 1
            continue
        cache.unlink(missing_ok=True)  # the large file first: a manifest alone is never trusted
        manifest.unlink(missing_ok=True)
        deleted.append(cache)
    return deleted


def _existing_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _open_verified(path: Path, manifest: Path, shape: tuple[int, ...]) -> tuple[ImageStore | None, str]:
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    if tuple(info.get("shape", ())) != shape or images.shape != shape:
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
