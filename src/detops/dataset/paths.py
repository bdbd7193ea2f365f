"""Guard against file names that escape the dataset root (absolute paths, `..`, drive letters)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from detops.errors import DataError


def safe_relative(file_name: str, where: str) -> str:
    """Normalise `file_name` to a POSIX path inside the root, or raise naming `where` it came from."""
    if not file_name or not file_name.strip():
        raise DataError(f"{where}: empty file name.")
    posix = file_name.replace("\\", "/")
    if PurePosixPath(posix).is_absolute() or PureWindowsPath(file_name).drive:
        raise DataError(f"{where}: file name {file_name!r} is absolute; it must be relative to the dataset root.")
    parts = [p for p in PurePosixPath(posix).parts if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{where}: file name {file_name!r} escapes the dataset root with '..'; refused.")
    return "/".join(parts)


def resolve_inside(root: Path, file_name: str, where: str) -> Path:
    """Absolute path of `file_name` under `root`; symlinks that lead outside the root are refused too."""
    rel = safe_relative(file_name, where)
    root = Path(root).resolve()
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise DataError(f"{where}: file name {file_name!r} resolves outside the dataset root {root}; refused.")
    return path
