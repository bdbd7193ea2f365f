"""A checkpoint is hashed once per process (the digest remembered by path, size and mtime), and a remembered
digest is never stale: a changed file, or one too recent to trust its mtime, is read again."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from detops import filehash


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = hashlib.new

    def new(name: str, **kwargs: Any) -> Any:
        calls.append(name)
        return original(name, **kwargs)

    monkeypatch.setattr(filehash.hashlib, "new", new)
    monkeypatch.setattr(filehash, "_MEMO", {})
    return calls


def aged(path: Path, content: bytes, seconds_ago: float = 60) -> Path:
    path.write_bytes(content)
    then = time.time_ns() - int(seconds_ago * 1e9)
    os.utime(path, ns=(then, then))
    return path


def test_a_large_file_is_read_once_per_algorithm(tmp_path: Path, reads: list[str]) -> None:
    path = aged(tmp_path / "best.ckpt", b"a" * filehash.MEMO_MIN_BYTES)
    first = filehash.file_digest(path)
    assert filehash.file_digest(path) == first == hashlib.sha1(path.read_bytes()).hexdigest()
    assert filehash.file_digest(path, "md5") == hashlib.md5(path.read_bytes()).hexdigest()
    assert reads == ["sha1", "md5"]


def test_a_changed_file_is_read_again(tmp_path: Path, reads: list[str]) -> None:
    path = aged(tmp_path / "best.ckpt", b"a" * filehash.MEMO_MIN_BYTES)
    before = filehash.file_digest(path)
    aged(path, b"b" * filehash.MEMO_MIN_BYTES, seconds_ago=30)  # same size, another mtime
    assert filehash.file_digest(path) != before and len(reads) == 2


def test_recent_and_small_files_are_not_remembered(tmp_path: Path, reads: list[str]) -> None:
    recent = tmp_path / "last.ckpt"
    recent.write_bytes(b"c" * filehash.MEMO_MIN_BYTES)  # mtime now: a rewrite in the same tick could keep it
    small = aged(tmp_path / "code.py", b"x = 1\n")
    for _ in range(2):
        filehash.file_digest(recent)
        filehash.file_digest(small)
    assert len(reads) == 4
