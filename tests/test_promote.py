"""`detops promote` on the local SQLite store: one version per training run with its tags and split files, the
pyfunc model (loads from the registry, predicts on image bytes, runs without detops or torch installed),
`detops predict --model champion`, re-scoring the champion on today's test split, and every bad input refused
before anything is registered. The same step against a PostgreSQL-backed MLflow server: test_promote_server.py.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_train import make_workspace, run_train
from typer.testing import CliRunner

from detops.config import load_params
from detops.dataset.canonical import read_dataset, subset, write_dataset
from detops.errors import DataError, PromotionError, RegistryError
from detops.workspace import Workspace

FAST = ["export.latency_runs=3", "export.warmup_runs=0", "export.calibration_images=4", "export.batch_sizes=[1,2]",
        "export.threads=2", "train.epochs=4"]
M = "test/map"


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri() -> Iterator[None]:
    """promote points MLflow's global tracking URI at its store (MLflow resolves `models:/` sources through it);
    unset it after each test so no later test, here or in another module, inherits this one's store."""
    yield
    import mlflow

    mlflow.set_tracking_uri(None)


def client_of(ws: Workspace) -> Any:
    from detops.registry.client import connect

    return connect(ws)


def new_run(ws: Workspace) -> str:
    """A training run as `train` records it (provenance tags, reports/mlflow_run.json), without the training."""
    from detops import tracking

    experiment = tracking.configure(ws)
    run = client_of(ws).create_run(experiment, tags=tracking.provenance(ws, "train"))
    (ws.reports).mkdir(parents=True, exist_ok=True)
    tracking.run_record(ws).write_text(json.dumps({"run_id": run.info.run_id}), encoding="utf-8")
    return str(run.info.run_id)


def versions(ws: Workspace) -> list[Any]:
    name = ws.params.mlflow.registered_model
    return sorted(client_of(ws).search_model_versions(f"name = '{name}'"), key=lambda mv: int(mv.version))


def aliases(ws: Workspace) -> dict[str, str]:
    model = client_of(ws).get_registered_model(ws.params.mlflow.registered_model)
    return {k: str(v) for k, v in model.aliases.items()}


def promote(ws: Workspace) -> Any:
    from detops.steps import promote as step

    return step.run(ws)


def decision(ws: Workspace) -> dict[str, Any]:
    return dict(json.loads((ws.reports / "promotion.json").read_text(encoding="utf-8")))


# --- bad input: refused before the registry is touched (no training needed) -----------------------------

@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """Split files, a placeholder checkpoint and test metrics: everything promote checks before loading a model."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = make_workspace(tmp_path / "ws")
    ws.models.mkdir(parents=True)
    (ws.models / "best.ckpt").write_bytes(b"not read before the registry is reached")
    ws.reports.mkdir(parents=True)
    (ws.reports / "metrics.json").write_text(json.dumps({M: 0.5, "test/map_50": 0.7}), encoding="utf-8")
    return ws


def nothing_registered(ws: Workspace) -> bool:
    return not (ws.reports / "promotion.json").exists() and (
        not (ws.root / "mlflow.db").exists() or not client_of(ws).search_registered_models())


def test_no_training_run_recorded(bare: Workspace) -> None:
    with pytest.raises(DataError, match=r"mlflow_run.json: no training run recorded.*detops train"):
        promote(bare)
    assert nothing_registered(bare)


def test_no_metrics_json(bare: Workspace) -> None:
    new_run(bare)
    (bare.reports / "metrics.json").unlink()
    with pytest.raises(DataError, match=r"metrics.json: the candidate has no test metrics.*detops evaluate"):
        promote(bare)
    assert nothing_registered(bare)


def test_unknown_metric(bare: Workspace) -> None:
    new_run(bare)
    ws = Workspace.at(bare.root, load_params(bare.root / "params.yaml", [*_tiny(), "promote.metric=test/nope"]))
    with pytest.raises(PromotionError, match=r"'test/nope' is not among the candidate's metrics \(available: "
                                             r"test/map, test/map_50\)"):
        promote(ws)
    assert nothing_registered(bare)


def test_run_missing_from_the_store(bare: Workspace) -> None:
    from detops.tracking import run_record

    new_run(bare)
    run_record(bare).write_text(json.dumps({"run_id": "0" * 32}), encoding="utf-8")
    with pytest.raises(PromotionError, match=r"names the run 0{32}, which this MLflow store does not have"):
        promote(bare)
    assert nothing_registered(bare)


def test_split_changed_since_training(bare: Workspace) -> None:
    new_run(bare)
    train = read_dataset(bare.split_json("train"))
    write_dataset(bare.split_json("train"), subset(train, [im["id"] for im in train["images"][:-1]]))
    with pytest.raises(PromotionError, match=r"train.json changed since the training run .* Re-run `detops train`"):
        promote(bare)
    assert nothing_registered(bare)


def test_tracking_server_down_fails_fast(bare: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (bare.reports / "mlflow_run.json").write_text(json.dumps({"run_id": "a" * 32}), encoding="utf-8")
    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(var, raising=False)  # promote sets them; restored after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    ws = Workspace.at(bare.root, load_params(bare.root / "params.yaml", _tiny()))
    start = time.monotonic()
    with pytest.raises(RegistryError, match=r"tracking server http://127.0.0.1:\d+ is unreachable"):
        promote(ws)
    assert time.monotonic() - start < 15
    assert not (ws.reports / "promotion.json").exists()


def test_invalid_model_name_is_a_clear_cli_error(bare: Workspace) -> None:
    from detops.cli import app

    result = CliRunner().invoke(app, ["--workspace", str(bare.root), "--set", "mlflow.registered_model=a/b",
                                      "promote"])
    assert result.exit_code == 2 and "invalid registered model name" in result.output
    assert "Traceback" not in result.output and nothing_registered(bare)


def test_model_files_take_accepted_exports_and_engines_with_their_sidecar(bare: Workspace,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from detops.registry import package
    from detops.registry.package import model_files, requirements

    checked: list[tuple[Path, str]] = []  # the real check (ONNX metadata) is test_stale_exports_are_refused's
    monkeypatch.setattr(package, "_check_exported_from", lambda path, run_id: checked.append((path, run_id)))

    folder = bare.models / "export"
    folder.mkdir()
    engine = folder / "model.fp16.trt10.13.0-nvidia-h200.engine"
    for path in (folder / "model.onnx", folder / "model.int8.onnx", engine, Path(f"{engine}.json")):
        path.write_bytes(b"x")
    variants = {"torch": ("models/best.ckpt", True), "onnx-fp32": ("models/export/model.onnx", True),
                "onnx-int8": ("models/export/model.int8.onnx", False), "tensorrt-fp16": (bare.relative(engine), True)}
    report = {"deployable": {"cpu": "torch", "gpu": "tensorrt-fp16"},
              "variants": {name: {"file": file, "accepted": ok} for name, (file, ok) in variants.items()}}
    (bare.reports / "export.json").write_text(json.dumps(report), encoding="utf-8")
    files = model_files(bare, "run")
    assert files.artifacts == {"checkpoint": bare.models / "best.ckpt", "export_report": bare.reports / "export.json",
                               "onnx-fp32": folder / "model.onnx", "tensorrt-fp16": engine,
                               "tensorrt-fp16.meta": Path(f"{engine}.json")}
    assert checked == [(folder / "model.onnx", "run")]
    assert files.serve == "checkpoint" and any(r.startswith("torch==") for r in requirements(files))
    assert not any(r.startswith("onnxruntime") for r in requirements(files))
    (folder / "model.onnx").unlink()
    with pytest.raises(DataError, match=r"model.onnx: export.json lists the accepted variant 'onnx-fp32' but the"):
        model_files(bare, "run")


def _tiny() -> list[str]:
    from test_train import TINY

    return list(TINY)


# --- a trained, evaluated and exported model -------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Train, evaluate and export a tiny model once (local SQLite store); tests promote it or copies of it."""
    from detops.steps import evaluate, export

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = make_workspace(tmp_path_factory.mktemp("promote"), *FAST)
    run_train(ws)
    evaluate.run(ws)
    export.run(ws)
    mp.undo()
    return ws


@pytest.fixture(scope="module")
def promoted(trained: Workspace) -> tuple[Workspace, Any]:
    return trained, promote(trained)


@pytest.mark.slow
def test_one_version_per_run_with_its_tags_splits_and_model(promoted: tuple[Workspace, Any]) -> None:
    from detops.tracking import data_versions, read_run_id

    ws, result = promoted
    run_id = str(read_run_id(ws))
    (mv,) = versions(ws)
    assert aliases(ws) == {"champion": str(mv.version)} and result.metrics["decision"] == "promoted"
    metrics = json.loads((ws.reports / "metrics.json").read_text(encoding="utf-8"))
    tags = mv.tags
    assert float(tags[M]) == metrics[M] and float(tags["test/map_50"]) == metrics["test/map_50"]
    assert not {k for k in tags if k.startswith("test/")} - {M, "test/map_50"}  # the rest stay on the run
    assert client_of(ws).get_run(run_id).data.metrics["test/ap/box"] == pytest.approx(metrics["test/ap/box"])
    for key in ("data.train_hash", "data.val_hash", "data.test_hash"):
        assert tags[key] == data_versions(ws, "promote")[key]
    assert tags["detops.run_id"] == run_id == mv.run_id and len(tags["detops.params_hash"]) == 64
    assert tags["git.commit"] and tags["detops.promotion.decision"] == "promoted"
    client = client_of(ws)
    logged = {f.path for f in client.list_artifacts(run_id, "splits")}
    assert logged == {"splits/train.json", "splits/val.json", "splits/test.json"}

    export_report = json.loads((ws.reports / "export.json").read_text(encoding="utf-8"))
    report = decision(ws)
    assert report["serve"] == export_report["deployable"]["cpu"] and report["registered"] is True
    accepted = {name for name, row in export_report["variants"].items() if row["accepted"] and name != "torch"}
    assert set(report["artifacts"]) == {"checkpoint", "export_report", *accepted}
    assert report["decision"]["reason"].startswith("no champion yet; the floor decides")
    assert "### promotion of version 1: promoted" in (ws.reports / "promotion.md").read_text(encoding="utf-8")

    again = promote(ws)  # the same training run: nothing new
    assert len(versions(ws)) == 1 and decision(ws)["registered"] is False
    assert "already registered as version 1" in " ".join(again.notes)


@pytest.mark.slow
def test_champion_pyfunc_predicts_like_the_served_file(promoted: tuple[Workspace, Any]) -> None:
    import mlflow

    from detops.inference import load_predictor
    from detops.tracking import tracking_uri

    ws, _ = promoted
    mlflow.set_tracking_uri(tracking_uri(ws))
    name = ws.params.mlflow.registered_model
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion", model_config={"score_threshold": 0.05})
    files = sorted((ws.root / "data" / "raw" / "tiny" / "images").glob("*.png"))[:4]
    out = model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]}))
    assert list(out.columns) == ["image", "category_id", "class_name", "score", "x", "y", "width", "height"]
    assert len(out) and set(out["class_name"]) <= {"box", "disc"} and set(out["category_id"]) <= {3, 7}
    assert (out["score"] >= 0.05).all() and set(out["image"]) <= set(range(len(files)))

    variants = json.loads((ws.reports / "export.json").read_text(encoding="utf-8"))["variants"]
    direct = load_predictor(ws.resolve(variants[decision(ws)["serve"]]["file"])).with_thresholds(score_threshold=0.05)
    expected = direct.predict([f.read_bytes() for f in files])
    assert len(out) == sum(len(d) for d in expected)
    first = out[out["image"] == 0].sort_values("score", ascending=False)
    np.testing.assert_allclose(first["score"], expected[0].scores, rtol=1e-5)
    np.testing.assert_allclose(first[["x", "y"]].to_numpy(), expected[0].boxes[:, :2], atol=1e-3)

    with pytest.raises(Exception, match="image"):  # the signature asks for an `image` column of bytes
        model.predict(pd.DataFrame({"path": [str(files[0])]}))

    from mlflow.pyfunc.scoring_server import infer_and_parse_data  # what `mlflow models serve` does with a request

    data = [f.read_bytes() for f in files]
    payload = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(d).decode()] for d in data]}}
    request = infer_and_parse_data(payload, model.metadata.get_input_schema())
    pd.testing.assert_frame_equal(model.predict(request), out)


@pytest.mark.slow
def test_pyfunc_runs_where_neither_detops_nor_torch_is_installed(promoted: tuple[Workspace, Any],
                                                                  tmp_path: Path) -> None:
    import mlflow

    from detops.tracking import tracking_uri

    ws, _ = promoted
    mlflow.set_tracking_uri(tracking_uri(ws))  # models:/ URIs resolve through the global URI only
    local = mlflow.artifacts.download_artifacts(f"models:/{ws.params.mlflow.registered_model}/1",
                                                dst_path=str(tmp_path / "model"))
    requirements = (Path(local) / "requirements.txt").read_text(encoding="utf-8")
    assert "onnxruntime==" in requirements and "torch" not in requirements and "detops" not in requirements
    assert (Path(local) / "code" / "detops" / "inference" / "predictor.py").is_file()
    image = next((ws.root / "data" / "raw" / "tiny" / "images").glob("*.png"))
    script = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"  # hide the installed detops
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'timm', 'detops'):\n"
        "            raise ImportError(name + ' is not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mlflow.pyfunc, pandas as pd\n"
        "sys.meta_path.pop(0)\n"  # from here on, detops comes from the model's own code folder
        f"model = mlflow.pyfunc.load_model({local!r})\n"
        f"out = model.predict(pd.DataFrame({{'image': [open({str(image)!r}, 'rb').read()]}}))\n"
        "import detops\n"
        "print('DETOPS', detops.__file__)\n"
        "print('TORCH', 'torch' in sys.modules, 'COLUMNS', list(out.columns))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("DETOPS", "TORCH")))
    assert lines["DETOPS"].startswith(str(Path(local) / "code" / "detops"))
    assert lines["TORCH"].startswith("False COLUMNS ['image', 'category_id'")


@pytest.mark.slow
def test_predict_command_takes_registry_references(promoted: tuple[Workspace, Any], tmp_path: Path) -> None:
    from detops.cli import app

    ws, _ = promoted
    name = ws.params.mlflow.registered_model
    images = ws.root / "data" / "raw" / "tiny" / "images"
    base = ["--workspace", str(ws.root), "--set", "predict.score_threshold=0.05", "predict", str(images)]
    counts = []
    for spec in ("champion", f"models:/{name}/1", f"models:/{name}@champion"):
        out = tmp_path / spec.replace("/", "_").replace(":", "_").replace("@", "_")
        result = CliRunner().invoke(app, [*base, "--model", spec, "--out", str(out)], terminal_width=200)
        assert result.exit_code == 0, result.output
        assert "version 1" in result.output
        counts.append(len(json.loads((out / "predictions.json").read_text(encoding="utf-8"))))
    assert counts[0] > 0 and len(set(counts)) == 1
    for spec, message in (("previous-champion", "has no alias 'previous-champion'"),
                          (f"models:/{name}/9", "has no version 9"), ("models:/x", "not a model URI")):
        result = CliRunner().invoke(app, [*base, "--model", spec, "--out", str(tmp_path / "bad")])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output


@pytest.mark.slow
def test_stale_exports_are_refused(trained: Workspace, tmp_path: Path) -> None:
    ws = copy_of(trained, tmp_path, with_exports=True)
    new_run(ws)  # a newer training run, but models/export/ is still the old run's
    with pytest.raises(DataError, match=r"was exported from the training run \w+, not from \w+.*detops export"):
        promote(ws)
    assert nothing_registered(ws)


# --- re-scoring the champion ------------------------------------------------------------------------------

def copy_of(trained: Workspace, root: Path, *, with_exports: bool = False) -> Workspace:
    """The trained workspace's data, checkpoint and metrics with a store of its own (no runs, no registry)."""
    ws = make_workspace(root / "ws", *FAST)  # same seed: the same images and splits as `trained`
    shutil.copytree(trained.models, ws.models, ignore=None if with_exports else shutil.ignore_patterns("export"))
    ws.reports.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", *(("export.json",) if with_exports else ())):
        shutil.copy(trained.reports / name, ws.reports / name)
    return ws


@pytest.fixture
def champion_v1(trained: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, Any]:
    """A copy of the trained workspace with a store of its own, whose training run is promoted as version 1."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = copy_of(trained, tmp_path)
    new_run(ws)
    return ws, promote(ws)


@pytest.mark.slow
def test_champion_is_rescored_on_todays_test_split(champion_v1: tuple[Workspace, Any]) -> None:
    """v1 was scored on the old test split; the test split grows; the gate uses v1's score on the new one."""
    from detops.evaluation.metrics import coco_metrics
    from detops.inference.dataset import predict_dataset
    from detops.inference.loading import evaluation_thresholds, load_predictor
    from detops.steps import evaluate

    ws, first = champion_v1
    assert first.metrics["decision"] == "promoted" and decision(ws)["serve"] == "checkpoint"
    recorded = float(versions(ws)[0].tags[M])

    old_test, train = read_dataset(ws.split_json("test")), read_dataset(ws.split_json("train"))
    moved = [im["id"] for im in train["images"][:3]]  # three training images now also in the test split
    full = {k: v for k, v in old_test.items() if k not in ("images", "annotations")}
    full["images"] = old_test["images"] + [im for im in train["images"] if im["id"] in moved]
    full["annotations"] = old_test["annotations"] + [a for a in train["annotations"] if a["image_id"] in moved]
    write_dataset(ws.split_json("test"), full)
    new_run(ws)
    evaluate.run(ws)  # the candidate (same weights) scored on the new split

    predictor = load_predictor(ws.models / "best.ckpt", evaluation_thresholds(ws.params.evaluate))
    gt = read_dataset(ws.split_json("test"))
    today = coco_metrics(gt, predict_dataset(predictor, gt, ws.root, 4))[M]
    assert today is not None and abs(today - recorded) > 1e-3, "the new split must change the score"

    second = promote(ws)
    d = decision(ws)["decision"]
    assert d["champion_value"] == pytest.approx(today, abs=1e-9) and d["has_champion"] and d["comparable"]
    assert d["overlap"] == 3 and "3 current test image(s) were in the champion's training split" in d["reason"]
    assert second.metrics["decision"] == "not promoted"  # equal weights cannot win by min_improvement
    assert aliases(ws) == {"champion": "1", "challenger": "2"}


@pytest.mark.slow
def test_champion_with_deleted_files_fails_closed(champion_v1: tuple[Workspace, Any]) -> None:
    ws, _ = champion_v1
    name = ws.params.mlflow.registered_model
    folder = Path(client_of(ws).get_model_version_download_uri(name, "1").removeprefix("file://"))
    assert (folder / "MLmodel").is_file()
    shutil.rmtree(folder)
    new_run(ws)
    first_decision = (ws.reports / "promotion.json").read_bytes()
    with pytest.raises(RegistryError, match=r"cannot download version 1 of .*rollback --to VERSION"):
        promote(ws)
    assert aliases(ws) == {"champion": "1"}
    candidate = versions(ws)[-1]  # registered with all its files, but never gated
    assert str(candidate.version) == "2" and "detops.promotion.decision" not in candidate.tags
    files = Path(client_of(ws).get_model_version_download_uri(name, "2").removeprefix("file://"))
    assert (files / "MLmodel").is_file()
    assert (ws.reports / "promotion.json").read_bytes() == first_decision  # the last decision still stands


@pytest.mark.slow
def test_champion_of_other_classes_is_not_scored(trained: Workspace) -> None:
    from detops.evaluation.scorer import Scorer
    from detops.registry.rescore import rescore

    gt = read_dataset(trained.split_json("test"))
    renamed = {**gt, "categories": [{**c, "name": c["name"] + "-v2"} for c in gt["categories"]]}
    other = rescore(Scorer.of(trained, renamed), trained.models / "best.ckpt", "champion version 1")
    assert other.metrics == {} and other.not_comparable == (
        "champion version 1 was trained on other classes (new in the split: box-v2 (id 3), disc-v2 (id 7);"
        " missing from the split: box (id 3), disc (id 7))")
    same = rescore(Scorer.of(trained, gt), trained.models / "best.ckpt", "champion version 1")
    assert same.metrics[M] is not None and same.not_comparable is None
    with pytest.raises(PromotionError, match="champion version 1: its checkpoint cannot be loaded"):
        broken = trained.root / "broken.ckpt"
        broken.write_bytes(b"not a checkpoint")
        rescore(Scorer.of(trained, gt), broken, "champion version 1")
