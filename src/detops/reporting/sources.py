"""Where the run page reads from: the reports each step declared, read leniently (a step that has not run
yet is a section saying so, not an error), and links relative to the page so the folder can be moved or
zipped and still work."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from detops.workspace import Workspace


class Unreadable(Exception):
    """A report file that exists but is not the json its step writes."""


@dataclass(frozen=True)
class Sources:
    """The workspace and the folder the page is written to."""

    ws: Workspace
    page_dir: Path

    def outputs(self, verb: str) -> dict[str, Path]:
        return self.ws.outputs(verb)

    def href(self, path: str | Path) -> str:
        """A link from the page to `path` (workspace-relative or absolute), relative so it works offline."""
        relative = os.path.relpath(self.ws.resolve(path), self.page_dir)
        return quote(Path(relative).as_posix())


def read_json(path: Path) -> Any | None:
    """The parsed report, or None when the step has not written it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Unreadable(f"{path.name} is not readable json ({exc})") from None


def written(path: Path) -> str:
    """When a report was written (UTC), so a section left over from an older run shows its age."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")
