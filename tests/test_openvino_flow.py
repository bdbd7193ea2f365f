"""OpenVINO beside torch in the flow's one process: the retrain flow on the embedded sample, three times in this
process, with an OpenVINO variant deployable. Export scores and times it beside ONNX Runtime and torch, promote
loads the served OpenVINO file and re-scores the champion with torch, and each next run, on a new sample, forks
validate's image check and trains again with OpenVINO's and torch's thread pools alive (once from the disk image
cache). No child process: all CPU variants are timed together, in one call."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_flow_retrain import TINY, task_states

pytestmark = [pytest.mark.openvino, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SERVED = "openvino-fp32"  # the same f32 math as onnx-fp32, so the gate accepts it at any model quality
FAST = [*TINY, "train.epochs=1", "export.fp16=false", "export.openvino=true", "export.batch_sizes=[1,2]"]


@pytest.fixture
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_the_flow_with_openvino_deployable_runs_three_times_in_one_process(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import detops.export.gate as gate
    import detops.export.latency as latency
    from flows.retrain import retrain

    chosen = gate.deployable

    def openvino_first(variants: list[Any]) -> dict[str, str | None]:
        """The fastest is whatever this machine says; the point here is OpenVINO served, so it is chosen."""
        return {**chosen(variants), "cpu": SERVED}

    timed: list[list[str]] = []
    measure = latency.measure_all

    def recorded(predictors: dict[str, Any], *args: Any) -> Any:
        timed.append(list(predictors))
        return measure(predictors, *args)

    monkeypatch.setattr(gate, "deployable", openvino_first)
    monkeypatch.setattr(latency, "measure_all", recorded)
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    versions = []
    for seed in range(3):  # another sample each time: every step runs again
        cache = "disk" if seed == 1 else "ram"
        state = retrain(workspace=str(root), overrides=[*FAST, f"sample.seed={seed}", f"train.cache_images={cache}"],
                        return_state=True)
        assert state.is_completed(), state.message
        states = task_states(state)
        assert all(states[step] == "Completed" for step in ("validate", "train", "export", "promote")), states
        report = json.loads((root / "reports/export.json").read_text(encoding="utf-8"))
        assert report["deployable"]["cpu"] == SERVED and report["variants"][SERVED]["accepted"]
        assert report["variants"][SERVED]["runtime"].startswith("openvino")
        decision = json.loads((root / "reports/promotion.json").read_text(encoding="utf-8"))
        assert decision["serve"] == SERVED
        versions.append(decision["version"])
        # every CPU variant timed by one call in this process, OpenVINO's included
        cpu = {n for n, row in report["variants"].items() if row["timed_on"] == "cpu" and row["latency"]}
        assert {SERVED, "onnx-fp32", "onnx-int8", "torch"} <= cpu == set(timed[-1]), timed
    assert len(set(versions)) == 3 and "openvino" in sys.modules
