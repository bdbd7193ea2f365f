"""The run page (`reports/index.html`) as a person sees it: built by `detops report` from the reports real steps
left, rendered by headless chromium with no network, every number in the visible text, nothing fetched.

import, validate and split run for real on a tiny sample, then validate again with a box-area floor that fails
(the failed gate's report is what the page must explain), and `monitor` checks a darkened batch for real. The
model steps would take minutes, so their reports are written by their own writers (`evaluate_predictions` on
known detections, the export report writer, `promote`'s report) around a real MLflow run.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _monitoring_fixtures import batch_from, darker, sample
from PIL import Image
from test_monitoring_report import visible_text
from typer.testing import CliRunner

from detops.cli import app
from detops.config import load_params
from detops.errors import ValidationFailed
from detops.monitoring.browser import dump_dom, screenshot
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
TINY = ["sample.num_images=36", "sample.image_size=96", "sample.max_object_size=48", "monitor.min_batch_size=10"]
FAILING = ["validate.min_box_area=400", "validate.on_error=fail"]

needs_chromium = pytest.mark.chromium  # skipped without chromium, failed where CI requires it


def workspace(root: Path, *overrides: str) -> Workspace:
    return Workspace.at(root, load_params(root / "params.yaml", [*TINY, *overrides]))


def report(root: Path, name: str) -> Any:
    return json.loads((root / "reports" / name).read_text(encoding="utf-8"))


def build_page(root: Path) -> Path:
    result = CliRunner().invoke(app, ["--workspace", str(root), *(a for s in TINY for a in ("--set", s)), "report"])
    assert result.exit_code == 0, result.output
    assert "reports/index.html" in result.output
    return root / "reports/index.html"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A workspace after a run whose latest validation failed: the page before the model steps, and after."""
    from detops.steps import import_, monitor, split, validate
    from detops.steps import sample as sample_step

    root = tmp_path_factory.mktemp("run-page") / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    ws = workspace(root)
    for step in (sample_step, import_, validate, split):
        step.run(ws)
    with pytest.raises(ValidationFailed):
        validate.run(workspace(root, *FAILING))
    early = build_page(root).replace(root / "reports/early.html")

    write_model_reports(ws)
    batch_from(sample(root / "arrivals", seed=1, num_images=20), root / "data/landing", "dark", darker)
    monitor.run(ws)
    return {"root": root, "early": early, "full": build_page(root)}


def write_model_reports(ws: Workspace) -> None:
    """train/evaluate/export/promote reports through each step's own writer, around a real MLflow run."""
    import mlflow

    from detops import tracking
    from detops.atomic import write_json
    from detops.dataset.canonical import read_dataset
    from detops.export.gate import Variant, apply_gate, deployable
    from detops.export.latency import Latency
    from detops.export.report import write_reports
    from detops.registry.aliases import AliasChange
    from detops.registry.decision import decide_promotion
    from detops.registry.package import ModelFiles
    from detops.registry.transaction import Promotion
    from detops.steps.evaluate import evaluate_predictions
    from detops.steps.promote import Candidate
    from detops.steps.promote import report as promotion_report
    from detops.training.curves import plot_training_curves

    run_id = mlflow.MlflowClient(tracking.tracking_uri(ws)).create_run(tracking.configure(ws)).info.run_id
    write_json(tracking.run_record(ws), {"run_id": run_id})

    epochs = [{"epoch": e, "train/loss": 3.0 / (e + 1), "val/map": 0.1 * e, "val/map_50": 0.2 * e} for e in range(4)]
    train = ws.outputs("train")
    plot_training_curves(epochs, train["curves"])
    write_json(train["metrics"], {"epochs": 4, "best_epoch": 3, "val/map": 0.3, "val/map_50": 0.6,
                                  "train_seconds": 12.5, "images_per_second": 40.2, "parameters": 123456})

    gt = read_dataset(ws.split_json("test"))
    found = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
             for a in gt["annotations"][::2]]  # every other true box: mAP well below 1
    evaluation = evaluate_predictions(ws, gt, found)

    metric = "test/map"
    timing = Latency(4.2, 5.1, 3.3, 3.9, 8, 210.0).to_dict()
    measured = [Variant(name, f"models/export/{name}.onnx", precision, "onnxruntime", "cpu", 1.5,
                        {metric: value, "test/map_50": value}, timing, "cpu")
                for name, precision, value in (("onnx-fp32", "fp32", 0.41), ("onnx-int8", "int8", 0.35))]
    baseline = Variant("torch", "models/best.ckpt", "fp32", "torch", "cpu", 2.0, {metric: 0.41}, timing, "cpu")
    variants = apply_gate(baseline, measured, metric, 0.01)
    write_reports(variants, deployable(variants), {"machine": "test machine", "threads": 2, "metric": metric,
                                                   "max_map_drop": 0.01, "notes": []}, ws.outputs("export"))

    decision = decide_promotion(evaluation.metrics, {metric: 0.2}, metric=metric, min_improvement=0.005,
                                min_metric=0.0)
    promotion = Promotion("2", "1", decision, AliasChange("2", "1", None, True))
    files = ModelFiles({"checkpoint": ws.models / "best.ckpt"}, "checkpoint")
    promotion_report(ws, Candidate(run_id, evaluation.metrics, files, gt), promotion, True, None, 1.0)


class _Urls(HTMLParser):
    """Every src and href on the page, and the tags of any script or external stylesheet."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.loaders: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "script" or (tag == "link" and values.get("rel") == "stylesheet"):
            self.loaders.append(tag)


def urls(html: str) -> _Urls:
    parser = _Urls()
    parser.feed(html)
    return parser


def mlflow_link(root: Path) -> str:
    from detops.tracking import read_run_id, run_url

    ws = workspace(root)
    url = run_url(ws, str(read_run_id(ws))).split(" ")[0]
    assert url.startswith("http://127.0.0.1:5000/#/experiments/"), url
    return url


@pytest.fixture(scope="module")
def shown(run: dict[str, Path]) -> str:
    """The full page's visible text once chromium rendered it offline."""
    return visible_text(dump_dom(run["full"]))


@needs_chromium
def test_the_rendered_page_explains_the_failed_validation(run: dict[str, Path], shown: str) -> None:
    validation = report(run["root"], "validation.json")
    failed = [rule for rule in validation["expectations"] if not rule["success"]]
    assert [rule["rule"] for rule in failed] == ["box_area_min"]
    assert "failed" in shown and f"{len(validation['problems'])} problem(s)" in shown
    assert re.search(rf"box_area_min expect_column_values_to_be_between area {failed[0]['unexpected_count']} ", shown)
    first = validation["problems"][0]
    assert f"{first['label']} {first['reasons'][0]}" in shown  # the offending row, with the rule it broke


@needs_chromium
def test_the_rendered_page_shows_split_metrics_export_promotion_and_drift(run: dict[str, Path], shown: str) -> None:
    root = run["root"]
    split = report(root, "split.json")
    counts = " ".join(str(split["images"][key]) for key in ("train", "val", "test", "total"))
    assert f"images {counts}" in shown
    boxes = " ".join(str(split["boxes"][key]) for key in ("train", "val", "test", "total"))
    assert f"boxes {boxes}" in shown

    metrics = report(root, "metrics.json")
    assert 0.05 < metrics["test/map_50"] < 0.95
    for key in ("test/map", "test/map_50", "test/mar_100"):
        assert f"{key} {metrics[key]:.4f}" in shown

    assert re.search(r"onnx-int8 int8 onnxruntime 1\.50 0\.3500 0\.3500 \+0\.0600 .* REJECTED", shown)

    promotion = report(root, "promotion.json")
    decision = promotion["decision"]
    assert decision["promote"] and "not promoted" not in shown
    assert f"promoted version 2: test/map {decision['candidate_value']:.4f} against threshold 0.2050" in shown
    assert f"reason: {decision['reason']}" in shown

    check = report(root, "drift/verdict.json")["checks"][0]
    assert check["verdict"] == "drift" and "brightness" in check["drifted_columns"]
    assert f"dark drift {check['images']} {', '.join(check['drifted_columns'])} " in shown


@needs_chromium
def test_each_tool_report_is_linked_relative_to_the_page(run: dict[str, Path]) -> None:
    found = urls(dump_dom(run["full"])).urls
    relative = {url for url in found if not url.startswith(("#", "data:", "http"))}
    assert relative == {"validation_docs/index.html", "drift/batches/dark/report.html", "export.md", "promotion.md"}
    for url in relative:
        assert (run["full"].parent / url).is_file(), url
    assert mlflow_link(run["root"]) in found


@needs_chromium
def test_the_linked_data_docs_list_each_result_offline(run: dict[str, Path]) -> None:
    """GX draws its index table with CDN scripts; detops' index view draws it at build time, so offline the index
    still lists each suite's result (the failed one as Failed) with a link to its page."""
    index = run["full"].parent / "validation_docs/index.html"
    dom = dump_dom(index)
    text = visible_text(dom)
    assert re.search(r"Failed [^|]{0,60}? annotations detops-annotations", text), text[:500]
    assert len(re.findall(r"Success [^|]{0,60}? (images|categories) detops-", text)) == 2
    pages = [url for url in urls(dom).urls if url.startswith("validations/")]
    assert len(pages) == 3 and all((index.parent / url).is_file() for url in pages)


def near(png: Path, rgb: tuple[int, int, int], tolerance: int) -> np.ndarray:
    """Mask of the screenshot's pixels within `tolerance` (summed over R, G, B) of `rgb`."""
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    return np.abs(pixels - np.array(rgb)).sum(axis=-1) <= tolerance


def pixels_near(png: Path, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    return int(near(png, rgb, tolerance).sum())


@needs_chromium
def test_the_data_docs_result_pages_are_laid_out_offline(run: dict[str, Path], tmp_path: Path) -> None:
    """GX styles its pages from CDNs: offline, a failed expectation had no mark at all. detops inlines the styles
    the pages use, so a screenshot taken with no network shows the failure's red cross and the passes' green
    checks, and the sidebar beside the results rather than above them."""
    docs = run["full"].parent / "validation_docs"
    failed = next(docs.glob("validations/annotations/*/*/*.html"))
    assert "fa-check-circle::before" in failed.read_text(encoding="utf-8")  # inlined, not linked
    png = screenshot(failed, tmp_path / "failed.png", size=(1280, 1600))
    assert pixels_near(png, (220, 53, 69)) > 20, "no red (text-danger) on a failed result page"
    assert pixels_near(png, (40, 167, 69)) > 20, "no green (text-success) check beside the passed expectations"
    # Sidebar and results side by side: the results' grey overview box (alert-secondary) starts right of the
    # sidebar, near the top, and spans most of the width; unstyled, the page is one column with no such box.
    grey = grey_box(png)
    assert grey is not None and grey[0] > 150 and grey[1] - grey[0] > 600 and grey[2] < 300, grey


def grey_box(png: Path) -> tuple[int, int, int] | None:
    """(first x, last x, first y) of the first horizontal band of Bootstrap's alert-secondary grey (#e2e3e5)
    over 400 px wide."""
    for y, row in enumerate(near(png, (226, 227, 229), 3)):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            if stop - start > 400:
                return int(start), int(stop - 1), y
    return None


@needs_chromium
def test_a_step_that_has_not_run_says_so(run: dict[str, Path]) -> None:
    text = visible_text(dump_dom(run["early"]))
    for title in ("Training", "Evaluation", "Export", "Promotion", "Drift"):
        assert f"{title} not run yet" in text
    assert "box_area_min" in text and "not run yet: no train.json. Run detops train" in text


def test_nothing_is_fetched_from_the_network(run: dict[str, Path]) -> None:
    """No script at all, no stylesheet link, plots inlined as PNG data: the only absolute URL is MLflow's."""
    for page in (run["early"], run["full"]):
        found = urls(page.read_text(encoding="utf-8"))
        assert found.loaders == []
        remote = {url for url in found.urls if re.match(r"^(https?:)?//", url, flags=re.IGNORECASE)}
        assert remote <= {mlflow_link(run["root"])}
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', run["full"].read_text(encoding="utf-8"))
    assert len(images) == 5  # training curves, PR curves, confusion, predictions, export latency
    for data in images:
        with Image.open(BytesIO(base64.b64decode(data))) as image:
            assert image.format == "PNG"


def test_report_text_is_escaped(tmp_path: Path) -> None:
    """A class or file name is data: markup in it shows as text and never becomes an element."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    from detops.atomic import write_json
    from detops.reporting.page import build_run_page

    ws = workspace(tmp_path)
    write_json(ws.reports / "drift/verdict.json", {"verdict": "no drift", "message": "<img src=x onerror=alert(1)>",
                                                    "checks": []})
    html = build_run_page(ws).read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    assert urls(html).urls == [f"#{key}" for key in ("validation", "split", "training", "metrics", "export",
                                                    "promotion", "drift", "labeling", "production")]


def test_a_broken_report_is_named_and_the_rest_still_shows(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    from detops.atomic import write_json, write_text
    from detops.reporting.page import build_run_page

    ws = workspace(tmp_path)
    write_text(ws.reports / "metrics.json", "{not json")
    write_json(ws.reports / "train.json", {"epochs": 3})  # an older layout: no best epoch
    write_json(ws.reports / "drift/verdict.json", {"verdict": "no drift", "message": "nothing new", "checks": []})
    text = visible_text(build_run_page(ws).read_text(encoding="utf-8"))
    assert "could not read metrics.json: metrics.json is not readable json" in text
    assert "could not read train.json: not the layout this detops writes (KeyError: 'val/map')" in text
    assert "Drift no drift nothing to check" in text and "Split not run yet" in text


@needs_chromium
def test_a_screenshot_of_the_page_is_kept(run: dict[str, Path]) -> None:
    png = screenshot(run["full"], run["full"].with_suffix(".png"), size=(1280, 4000))
    with Image.open(png) as image:
        assert image.size == (1280, 4000)
        low, high = image.convert("L").getextrema()
        assert isinstance(low, int) and isinstance(high, int) and high - low > 100, "a blank page"
