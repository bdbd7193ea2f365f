"""What goes into the MLflow model of a training run, and logging it: the checkpoint, every accepted export and
`reports/export.json` as pyfunc artifacts, the detops package as code, pinned pip requirements.

The detops code travels with the model (`code_paths`) instead of a `detops==<version>` requirement: a local
version is on no index, so such a requirement could never be installed elsewhere. Requirements are the ones the
served artifact needs: ONNX Runtime for an exported file, torch only when the checkpoint itself is served.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from detops.errors import DataError
from detops.inference.tensorrt import sidecar_path
from detops.workspace import Workspace

CHECKPOINT = "checkpoint"
EXPORT_REPORT = "export_report"
# Distributions the inference path imports (cv2: letterbox; PIL: decoding bytes), and the checkpoint's extras.
BASE_REQUIREMENTS = ("numpy", "pandas", "pillow", "opencv-python-headless")
ONNX_REQUIREMENTS = ("onnxruntime",)
OPENVINO_REQUIREMENTS = ("openvino",)  # an OpenVINO variant (`openvino-*`) runs in it; without it, in ONNX Runtime
TORCH_REQUIREMENTS = ("torch", "torchvision", "timm")


@dataclass(frozen=True)
class ModelFiles:
    """The pyfunc artifacts (key -> local file) and the key of the one `predict` runs."""

    artifacts: dict[str, Path]
    serve: str
    notes: tuple[str, ...] = ()

    @property
    def serves_checkpoint(self) -> bool:
        return self.serve == CHECKPOINT


def model_files(ws: Workspace, run_id: str) -> ModelFiles:
    """models/best.ckpt, plus every variant `reports/export.json` accepted (a TensorRT engine with its sidecar,
    under the GPU-and-version name export gave it) and the report itself. Served: the deployable CPU variant,
    else the checkpoint. A file the report names but the disk lacks is an error, never a silent omission, and so
    are exports of another training run (export embeds the run id; it writes all variants at once)."""
    checkpoint = ws.checkpoint()
    report_path = ws.output("export", "report")
    if not report_path.is_file():
        note = f"no {ws.relative(report_path)}: the model holds the checkpoint only (run `detops export` first)"
        return ModelFiles({CHECKPOINT: checkpoint}, CHECKPOINT, (note,))
    try:
        report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
        variants: dict[str, dict[str, Any]] = report["variants"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{report_path}: not an export report ({exc!r}); re-run `detops export`.") from None
    from detops.inference.loading import ENGINE_SUFFIXES
    from detops.isolated import needs_isolation

    artifacts = {CHECKPOINT: checkpoint, EXPORT_REPORT: report_path}
    for name, row in variants.items():
        path = ws.resolve(str(row.get("file", "")))
        if not row.get("accepted") or path == checkpoint:
            continue
        if not path.is_file():
            raise DataError(f"{path}: {report_path.name} lists the accepted variant {name!r} but the file is missing;"
                            " re-run `detops export`.")
        artifacts[name] = path
        sidecar = sidecar_path(path)  # a TensorRT engine's metadata
        if path.suffix in ENGINE_SUFFIXES and sidecar.is_file():
            artifacts[f"{name}.meta"] = sidecar
    onnx = [path for path in artifacts.values() if path.suffix == ".onnx" and not needs_isolation(path)]
    if onnx:
        _check_exported_from(onnx[0], run_id)
    cpu = (report.get("deployable") or {}).get("cpu")
    return ModelFiles(artifacts, cpu if cpu in artifacts else CHECKPOINT)


def _check_exported_from(path: Path, run_id: str) -> None:
    from detops.inference.loading import load_predictor

    exported_from = load_predictor(path, device="cpu").meta.run_id
    if exported_from != run_id:
        raise DataError(f"{path} was exported from the training run {exported_from}, not from {run_id} (the run in"
                        " reports/mlflow_run.json): the exports are stale. Re-run `detops export`.")


def requirements(files: ModelFiles) -> list[str]:
    """Pinned pip requirements of the served artifact's inference path (mlflow adds itself)."""
    names = [*BASE_REQUIREMENTS, *(TORCH_REQUIREMENTS if files.serves_checkpoint else ONNX_REQUIREMENTS)]
    if files.serve.startswith("openvino"):
        names.extend(OPENVINO_REQUIREMENTS)
    out = []
    for name in names:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def model_config(ws: Workspace, files: ModelFiles) -> dict[str, Any]:
    return {"serve": files.serve, "score_threshold": ws.params.predict.score_threshold,
            "batch_size": ws.params.predict.batch_size}


def log_model(ws: Workspace, run_id: str, files: ModelFiles) -> str:
    """Log the pyfunc model into `run_id`'s experiment, linked to the run; returns its logged model id (`m-...`).

    `mlflow.models.Model.log` with an explicit run id, not the fluent `start_run`: promote must neither depend on
    nor end a run its caller (a Prefect flow) has open. MLflow checks the input example against the loaded model,
    which loads the served file: with an OpenVINO one, the logging runs in a child (`detops.isolated`).
    """
    from detops.isolated import needs_isolation, run_isolated, workspace_args

    if needs_isolation(files.artifacts[files.serve]):
        return str(run_isolated(log_model_in_child, **workspace_args(ws), run_id=run_id, serve=files.serve,
                                artifacts={key: str(path) for key, path in files.artifacts.items()}))
    return logged_model(ws, run_id, files)


def log_model_in_child(root: str, params: dict[str, Any], run_id: str, serve: str, artifacts: dict[str, str]) -> str:
    """In the child: MLflow pointed at the workspace's store, then `logged_model`."""
    from detops.isolated import child_workspace
    from detops.tracking import configure

    ws = child_workspace(root, params)
    configure(ws)
    return logged_model(ws, run_id, ModelFiles({key: Path(path) for key, path in artifacts.items()}, serve))


def logged_model(ws: Workspace, run_id: str, files: ModelFiles) -> str:
    """`log_model`'s work: the model logged, its id returned."""
    import mlflow
    from mlflow.models import Model

    import detops
    from detops.registry import pyfunc

    with tempfile.TemporaryDirectory(prefix="detops-code-") as tmp:
        code = Path(tmp) / "detops"
        shutil.copytree(Path(detops.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        info = Model.log(
            artifact_path=None,  # deprecated in favour of name, yet still a required argument
            name="model",
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=str(Path(pyfunc.__file__).with_name("pyfunc_model.py")),
            artifacts={key: str(path) for key, path in files.artifacts.items()},
            code_paths=[str(code)],
            pip_requirements=requirements(files),
            signature=pyfunc.signature(),
            input_example=pyfunc.input_example(),
            model_config=model_config(ws, files),
        )
    return str(info.model_id)
