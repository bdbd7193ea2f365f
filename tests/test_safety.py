"""Atomic writes and the dataset-root guard: nothing half-written, nothing outside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from detops.atomic import atomic_path, write_json
from detops.dataset.paths import resolve_inside, safe_relative
from detops.errors import DataError


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    target = write_json(tmp_path / "out.json", {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("name", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "..\\x.jpg", " "])
def test_escaping_names_are_refused(name: str) -> None:
    with pytest.raises(DataError, match=r"ann\.json"):
        safe_relative(name, "ann.json")


def test_plain_names_are_normalised() -> None:
    assert safe_relative("./images/a b/ü.jpg", "x") == "images/a b/ü.jpg"
    assert safe_relative("images\\x.jpg", "x") == "images/x.jpg"


def test_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(DataError, match="outside the dataset root"):
        resolve_inside(root, "link.jpg", "labels.txt")
