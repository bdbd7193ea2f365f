"""The labelling loop's state on object storage (S3 served by moto on loopback): with monitor.landing a URL, what
one run writes (a Label Studio round trip with its task ids, a selection, a review list) is what a run in another
fresh directory reads, a removal reaches the store, and a run that fails still writes back what it changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from detops.config import load_params
from detops.labeling.audit import review_file
from detops.labeling.select import selection_folder
from detops.labeling.state import RoundTrip, load_state, pushed_batches, save_state
from detops.monitoring.landing import open_store
from detops.monitoring.loopstate import PREFIX, loop_state
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def test_the_loop_state_follows_the_landing_store_into_fresh_directories(tmp_path: Path, s3: str) -> None:
    landing = f"{s3}/{tmp_path.name}/landing"

    def fresh(name: str) -> Workspace:
        return Workspace.at(tmp_path / name, load_params(REPO / "params.yaml", [f"monitor.landing={landing}"]))

    first = fresh("first")
    with loop_state(first):
        save_state(first, RoundTrip("b1", 7, {"a.png": 11, "b.png": 12}))
        (selection_folder(first, "b1") / "selection.json").parent.mkdir(parents=True)
        (selection_folder(first, "b1") / "selection.json").write_text('{"selected": ["a.png", "b.png"]}')
        review_file(first, "b0").parent.mkdir(parents=True)
        review_file(first, "b0").write_text('{"batch": "b0", "images": []}')

    second = fresh("second")
    assert pushed_batches(second) == []  # nothing on this disk before the state is fetched
    with pytest.raises(RuntimeError, match="Label Studio went away"), loop_state(second):
        state = load_state(second, "b1")
        assert state is not None and state.tasks == {"a.png": 11, "b.png": 12} and pushed_batches(second) == ["b1"]
        state.pulled = "b1-labelled"
        save_state(second, state)
        review_file(second, "b0").unlink()
        raise RuntimeError("Label Studio went away")  # what was done before stands, as on a disk

    third = fresh("third")
    with loop_state(third):
        state = load_state(third, "b1")
        assert state is not None and state.pulled == "b1-labelled" and pushed_batches(third) == []
        assert not review_file(third, "b0").exists()
        assert (selection_folder(third, "b1") / "selection.json").read_text() == '{"selected": ["a.png", "b.png"]}'
    store = open_store(landing)
    assert not store.fs.exists(store.path(PREFIX, "review", "b0.json"))
    assert store.folders() == []  # the state is hidden: never a batch


def test_with_a_local_landing_the_state_stays_on_the_disk(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path, load_params(REPO / "params.yaml", []))
    with loop_state(ws):
        save_state(ws, RoundTrip("b1", 7, {"a.png": 11}))
    assert load_state(ws, "b1") is not None and not (tmp_path / "data" / "landing" / PREFIX).exists()
