"""The state of a batch's Label Studio round trip: its project, each image's task id (Label Studio does not
de-duplicate imports, so this is what makes pushing again safe), whether it is a review of labels the audit flagged,
which images form its accuracy share (drawn at random, pushed without pre-annotations: `detops.monitoring.production`
scores the champion on them) and, once pulled, the labelled batch it became.

One json file per batch, in its folder under the monitor step's `label_studio` output (the landing batch is never
modified).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from detops.atomic import write_json
from detops.errors import DataError
from detops.workspace import Workspace

STATE_FILE = "label_studio.json"


def labeling_folder(ws: Workspace) -> Path:
    """Where the round trip keeps what it knows of each batch, one sub-folder per batch."""
    return ws.output("monitor", "label_studio")


def state_path(ws: Workspace, batch: str) -> Path:
    return labeling_folder(ws) / batch / STATE_FILE


@dataclass
class RoundTrip:
    batch: str
    project: int
    tasks: dict[str, int]  # image file name (in the batch) -> task id
    pulled: str | None = None  # the labelled batch written by `pull`
    review: bool = False  # the tasks are labels the audit sent back for review, not images to label
    accuracy_share: list[str] = field(default_factory=list)  # file names drawn at random (label.accuracy_share)


def load_state(ws: Workspace, batch: str) -> RoundTrip | None:
    """The batch's round trip, or None when it was never pushed."""
    path = state_path(ws, batch)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RoundTrip(str(data["batch"]), int(data["project"]), {str(k): int(v) for k, v in data["tasks"].items()},
                         data.get("pulled"), bool(data.get("review", False)),
                         [str(name) for name in data.get("accuracy_share") or []])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: the Label Studio state of batch {batch!r} is unreadable ({exc}). It maps each image "
                        "to its task; without it a push imports every image again.") from None


def save_state(ws: Workspace, state: RoundTrip) -> Path:
    return write_json(state_path(ws, state.batch), {"batch": state.batch, "project": state.project,
                                                    "tasks": state.tasks, "pulled": state.pulled,
                                                    "review": state.review,
                                                    "accuracy_share": state.accuracy_share})


def round_trips(ws: Workspace) -> list[RoundTrip]:
    """Every batch's round trip, by batch name."""
    folder = labeling_folder(ws)
    if not folder.is_dir():
        return []
    states = (load_state(ws, p.parent.name) for p in sorted(folder.glob(f"*/{STATE_FILE}")))
    return [s for s in states if s is not None]


def pushed_batches(ws: Workspace) -> list[str]:
    """Batches pushed to Label Studio and not pulled yet, by name."""
    return [s.batch for s in round_trips(ws) if s.pulled is None]
