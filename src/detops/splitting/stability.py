"""The split assignments file: which split each image is in, kept between runs so splits are stable.

Keyed by `file_name` (image ids change as data grows; names do not), with each image's content sha1
so a renamed or moved file is still recognised::

    {"format": "detops-split-assignments/1", "images": {
      "<file_name>": {"split": "train", "sha1": "...", "group": 12},
      ...
    }}

`group` numbers the groups of images kept together in this run (informative; renumbered each run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detops.atomic import write_text
from detops.dataset.canonical import SPLITS
from detops.errors import DataError

if TYPE_CHECKING:
    from detops.workspace import Workspace

FORMAT = "detops-split-assignments/1"


class PreviousAssignments:
    """The split of each image from an earlier run, looked up by file name, else by content sha1."""

    def __init__(self, records: Mapping[str, tuple[str, str | None]]) -> None:
        self.records = dict(records)  # file_name -> (split, sha1)
        self.by_sha1: dict[str, str] = {}
        for split, sha1 in self.records.values():
            if sha1:
                self.by_sha1.setdefault(sha1, split)

    def split_of(self, file_name: str, sha1: str | None) -> str | None:
        if file_name in self.records:
            return self.records[file_name][0]
        return self.by_sha1.get(sha1) if sha1 else None

    def removed(self, images: Sequence[dict[str, Any]]) -> int:
        """How many previous images are gone: neither their name nor their content is still there."""
        names = {im["file_name"] for im in images}
        sha1s = {im.get("sha1") for im in images}
        return sum(1 for name, (_, sha1) in self.records.items() if name not in names and sha1 not in sha1s)


def read_assignments(path: Path) -> PreviousAssignments | None:
    """The previous run's assignments, None when there is no file; a malformed file is a DataError."""
    path = Path(path)
    if not path.is_file():
        return None
    fix = "fix it, or delete it to split every image afresh"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {fix}.") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("images"), dict):
        raise DataError(f"{path}: not a detops split assignments file (format {FORMAT!r}); {fix}.")
    records: dict[str, tuple[str, str | None]] = {}
    for file_name, record in sorted(payload["images"].items()):
        split = record.get("split") if isinstance(record, dict) else None
        if split not in SPLITS:
            raise DataError(f"{path}: image {file_name!r} has split {split!r}, expected one of {SPLITS}; {fix}.")
        records[file_name] = (split, str(record["sha1"]) if record.get("sha1") else None)
    return PreviousAssignments(records)


def assignments_payload(
    images: Sequence[dict[str, Any]], splits: Sequence[str], groups: Sequence[int] | np.ndarray
) -> dict[str, Any]:
    """The file's content for this run, sorted by file name so it is byte-stable."""
    records = sorted(
        (
            (im["file_name"], {"split": split, "sha1": im.get("sha1"), "group": int(group)})
            for im, split, group in zip(images, splits, groups, strict=True)
        ),
        key=lambda record: record[0],
    )
    return {"format": FORMAT, "images": dict(records)}


def write_assignments(path: Path, payload: dict[str, Any]) -> Path:
    """Valid JSON with one image per line: readable, and a data update shows as a line diff."""
    lines = [
        f"  {json.dumps(name, ensure_ascii=False)}: {json.dumps(record)}" for name, record in payload["images"].items()
    ]
    body = ",\n".join(lines)
    return write_text(Path(path), f'{{"format": {json.dumps(payload["format"])}, "images": {{\n{body}\n}}}}\n')


def registered_assignments(ws: Workspace, dst: Path) -> tuple[PreviousAssignments, str] | None:
    """The assignments of the newest registered version's training run, read from the split files `promote` logged
    with it (the last split the registry saw: the champion's, or a later candidate's, which kept the champion's
    images where they were; downloaded under `dst`), and that version; None when there is none (a first run, or a
    store out of reach: the split then starts afresh, as it always did without the file)."""
    from mlflow.exceptions import MlflowException

    from detops.registry.client import connect
    from detops.registry.names import SPLITS_FOLDER, check_model_name
    from detops.tracking import tracking_uri

    uri = tracking_uri(ws)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None  # no store yet, so no version: nothing to create just to find that out
    name = check_model_name(ws.params.mlflow.registered_model)
    quote = '"' if "'" in name else "'"
    records: dict[str, tuple[str, str | None]] = {}
    try:
        client = connect(ws)
        versions = client.search_model_versions(f"name = {quote}{name}{quote}")
        if not versions:
            return None
        newest = max(versions, key=lambda mv: int(mv.version))
        for split in SPLITS:
            path = client.download_artifacts(str(newest.run_id), f"{SPLITS_FOLDER}/{ws.split_json(split).name}",
                                             str(dst))
            for image in json.loads(Path(path).read_text(encoding="utf-8"))["images"]:
                records[str(image["file_name"])] = (split, image.get("sha1"))
    except (MlflowException, OSError, ValueError, KeyError, TypeError):
        return None
    return PreviousAssignments(records), str(newest.version)
