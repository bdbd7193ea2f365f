"""The one rule for OpenVINO beside torch, on the whole retrain flow: three runs in one Python process with an OpenVINO
variant deployable, the first registering a version, the next two exporting and promoting again (a changed export
param), none crashing; that process never imports openvino (export's scoring and timing, promote's prediction
reference and MLflow's check of the logged model load the OpenVINO file in a child, `detops.isolated`); and every
variant of each export is timed in one call of `measure_all`, in that child: one process, the same interleaved
rounds, for the deployable choice.

The flow runs in a child of this test (a crash there fails this test instead of killing the suite), against this
module's Prefect test server; a `sitecustomize` on the path records every `measure_all` call, and every import of
openvino, of every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_flow_retrain import TINY, prefect_api  # noqa: F401  # the module's Prefect test server

pytestmark = [pytest.mark.slow, pytest.mark.openvino]

REPO = Path(__file__).resolve().parents[1]
SERVED = "openvino-fp32"  # the same f32 math as onnx-fp32, so the gate accepts it at any model quality
SETTINGS = [*TINY, "train.epochs=1", "export.fp16=false", "export.int8=false", "export.openvino=true",
            "export.batch_sizes=[1,2]"]  # the FP32 files only: no calibration, three variants to score and time

RECORDER = """
import json, os, sys, traceback
path = os.environ["DETOPS_TEST_LOG"]
def record(**entry):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"pid": os.getpid(), **entry}) + "\\n")
class OpenVinoImports:  # where a process first imports openvino (asking whether it is installed is no import)
    def find_spec(self, name, path=None, target=None):
        stack = traceback.extract_stack()
        if name == "openvino" and not any(f.name == "find_spec" and "util" in f.filename for f in stack):
            record(openvino="".join(traceback.format_list(stack[-12:])))
        return None
sys.meta_path.insert(0, OpenVinoImports())
import detops.export.latency as latency
measure = latency.measure_all
def recorded(predictors, *args, **kwargs):
    record(timed=list(predictors))
    return measure(predictors, *args, **kwargs)
latency.measure_all = recorded
"""

FLOW = """
import json, os, sys
import detops.export.gate as gate
from flows.retrain import retrain
from test_flow_retrain import task_states
chosen = gate.deployable
def openvino_first(variants):  # the fastest is whatever this machine says; the point is OpenVINO served
    return {**chosen(variants), "cpu": sys.argv[3]}
gate.deployable = openvino_first
root, settings, runs = sys.argv[1], json.loads(sys.argv[2]), []
for latency_runs in (3, 4, 5):  # a changed export param: export and promote run again
    state = retrain(workspace=root, overrides=[*settings, f"export.latency_runs={latency_runs}"], return_state=True)
    export = json.loads(open(os.path.join(root, "reports/export.json"), encoding="utf-8").read())
    promotion = json.loads(open(os.path.join(root, "reports/promotion.json"), encoding="utf-8").read())
    runs.append({"completed": state.is_completed(), "message": state.message, "states": task_states(state),
                 "export": export, "serve": promotion["serve"], "registered": promotion["registered"]})
print("RESULT " + json.dumps({"pid": os.getpid(), "openvino": "openvino" in sys.modules, "runs": runs}))
"""


def test_the_flow_with_openvino_deployable_runs_three_times_in_one_process_that_never_imports_it(
    prefect_api: None, tmp_path: Path  # noqa: F811
) -> None:
    from prefect.settings import PREFECT_API_URL

    root, hooks, log = tmp_path / "ws", tmp_path / "hooks", tmp_path / "record.jsonl"
    root.mkdir()
    hooks.mkdir()
    (root / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    (hooks / "sitecustomize.py").write_text(RECORDER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PYTHONPATH": os.pathsep.join([str(hooks), str(REPO / "tests"), str(REPO)]),
            "PREFECT_API_URL": str(PREFECT_API_URL.value()), "DETOPS_TEST_LOG": str(log)}
    done = subprocess.run([sys.executable, "-c", FLOW, str(root), json.dumps(SETTINGS), SERVED], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, output  # a crash (a segmentation fault is -11) ends here
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    imported = [r["openvino"] for r in records if "openvino" in r and r["pid"] == result["pid"]]
    assert not result["openvino"] and not imported, f"the flow's own process imported openvino:\n{imported[:1]}"
    calls = [r for r in records if "timed" in r]
    assert len(calls) == len(result["runs"]) == 3, calls
    assert [run["registered"] for run in result["runs"]] == [True, False, False]  # one training run, one version
    for run, call in zip(result["runs"], calls, strict=True):
        assert run["completed"], run["message"]
        assert run["states"]["export"] == run["states"]["promote"] == "Completed", run["states"]
        variants = run["export"]["variants"]
        assert run["export"]["deployable"]["cpu"] == run["serve"] == SERVED and variants[SERVED]["accepted"]
        assert variants[SERVED]["runtime"].startswith("openvino")
        cpu = {name for name, row in variants.items() if row["timed_on"] == "cpu" and row["latency"]}
        # every CPU variant timed (openvino-bf16 too where the CPU has bf16 instructions), all by one call, in a
        # child: one process, the same interleaved rounds
        assert {SERVED, "onnx-fp32", "torch"} <= cpu == set(call["timed"]), (cpu, call)
        assert call["pid"] != result["pid"]
