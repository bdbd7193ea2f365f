"""The one scorer (`detops.evaluation.scorer`) on a stand-in model: one class-set rule and one message, the
evaluation thresholds whatever the predictor came with, the metrics `coco_metrics` gives; and the one checkpoint
rule every step follows (train's `best` output, never `last`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detops.config import load_params
from detops.errors import ClassSetMismatch, DataError
from detops.evaluation.metrics import coco_metrics
from detops.evaluation.scorer import Scorer
from detops.inference import ModelMeta, Predictor, Thresholds
from detops.workspace import RESUME_DIR, Workspace

CATEGORIES = [{"id": 3, "name": "box"}, {"id": 7, "name": "disc"}]


class Runtime:
    """A stand-in model: per image a confident class-0 box at input pixels (8, 8)-(40, 40) and a weak one (score
    about 0.05) elsewhere, kept only under a low score threshold."""

    name = "stub"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raw = np.full((len(batch), 2, 5 + 2), -20.0, np.float32)
        raw[:, 0, :4] = [8, 8, 40, 40]
        raw[:, 0, 4:6] = 20.0  # centerness and class 0: score ~1
        raw[:, 1, :4] = [44, 44, 60, 60]
        raw[:, 1, 4:6] = -3.0  # score sigmoid(-3) ~ 0.047
        return raw


def meta(ids: list[int], names: list[str]) -> ModelMeta:
    return ModelMeta(class_ids=ids, class_names=names, image_size=64, pad_value=114,
                     evaluation=Thresholds(0.001, 0.6, 100, 1000), deploy_score_threshold=0.5)


def predictor(model: ModelMeta) -> Predictor:
    return Predictor(Path("stub.onnx"), "onnx", Runtime(), model, model.deployment())


@pytest.fixture
def ws(workspace: Path) -> Workspace:
    ws = Workspace.at(workspace, load_params(workspace / "params.yaml", ()))
    folder = ws.raw / "tiny"
    folder.mkdir(parents=True)
    images = []
    for i in range(3):
        Image.new("RGB", (64, 64), (90, 90, 90)).save(folder / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
    anns = [{"id": i, "image_id": i, "category_id": 3, "bbox": [8, 8, 32, 32], "area": 1024, "iscrowd": 0}
            for i in (1, 2, 3)]
    gt = {"info": {"root": ws.relative(folder)}, "images": images, "annotations": anns, "categories": CATEGORIES}
    ws.split_json("test").parent.mkdir(parents=True, exist_ok=True)
    ws.split_json("test").write_text(json.dumps(gt), encoding="utf-8")
    return ws


def test_scores_with_the_evaluation_thresholds_and_coco_metrics(ws: Workspace) -> None:
    scorer = Scorer.of(ws)
    served = predictor(meta([3, 7], ["box", "disc"]))  # deployment thresholds: score 0.5 drops the weak box
    score = scorer.score(served)
    assert served.thresholds.score_threshold == 0.5, "the predictor is immutable: scoring changed nothing"
    assert scorer.thresholds.score_threshold == ws.params.evaluate.score_threshold < 0.05
    assert len(score.detections) == 2 * 3, "both boxes of every image: the weak one passes the evaluation threshold"
    assert score.metrics == coco_metrics(scorer.gt, score.detections, prefix="test")
    assert score.metrics["test/ap/box"] == pytest.approx(1.0) and score.metrics["test/ap/disc"] is None
    assert {d["category_id"] for d in score.detections} == {3}


def test_class_order_does_not_matter(ws: Workspace) -> None:
    score = Scorer.of(ws).score(predictor(meta([7, 3], ["disc", "box"])))
    assert {d["category_id"] for d in score.detections} == {7}  # label 0 is the disc now, a false positive
    assert score.metrics["test/ap/box"] == 0.0


@pytest.mark.parametrize(("ids", "names", "difference"), [
    ([3, 9], ["box", "star"], "new in the split: disc (id 7); missing from the split: star (id 9)"),
    ([3, 7], ["box", "disk"], "new in the split: disc (id 7); missing from the split: disk (id 7)"),  # same ids
    ([3], ["box"], "new in the split: disc (id 7); missing from the split: none"),
])
def test_another_class_set_is_one_typed_error(ws: Workspace, ids: list[int], names: list[str],
                                              difference: str) -> None:
    with pytest.raises(ClassSetMismatch) as info:
        Scorer.of(ws).score(predictor(meta(ids, names)), who="champion version 4")
    assert isinstance(info.value, DataError) and info.value.difference == difference
    assert str(info.value).startswith(f"champion version 4: its classes {sorted(names)}")
    assert "the split's ['box', 'disc'] (ids [3, 7]) in data/prepared/test.json" in str(info.value)
    assert "`detops train`" in str(info.value)


def test_every_step_reads_the_best_checkpoint_and_only_it(ws: Workspace) -> None:
    best, last = ws.output("train", "best"), ws.output("train", "last")
    assert (best.name, last.name) == ("best.ckpt", "last.ckpt") and best.parent == ws.models
    with pytest.raises(DataError, match=r"best\.ckpt: checkpoint not found\. Run `detops train` first"):
        ws.checkpoint()
    ws.models.mkdir(parents=True)
    last.write_bytes(b"x")  # the final state of a finished training: not a model to evaluate either
    with pytest.raises(DataError, match=r"best\.ckpt: checkpoint not found\. Run `detops train` first"):
        ws.checkpoint()
    resume = ws.root / RESUME_DIR / "key.ckpt"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(b"x")
    with pytest.raises(DataError, match=r"holds a checkpoint, so training was interrupted: `detops train` goes on"):
        ws.checkpoint()
    best.write_bytes(b"x")
    assert ws.checkpoint() == best


def test_workspace_files_come_from_the_step_graph(ws: Workspace) -> None:
    assert ws.dataset_json == ws.prepared / "dataset.json" == ws.output("import", "dataset")
    assert ws.validated_json == ws.output("validate", "validated")
    assert [ws.split_json(s).name for s in ("train", "val", "test")] == ["train.json", "val.json", "test.json"]
    assert ws.output("evaluate", "metrics") == ws.reports / "metrics.json"
    assert ws.outputs("promote")["decision"] == ws.reports / "promotion.json"
    with pytest.raises(KeyError, match="declares no output 'bets'"):
        ws.output("train", "bets")


def test_no_module_outside_the_step_graph_builds_a_step_output_path_from_its_name() -> None:
    """Steps read each other's files by declared name (`ws.output`); prose may still mention the file names."""
    import ast
    import re

    repo = Path(__file__).resolve().parents[1]
    names = ("best.ckpt", "last.ckpt", "metrics.json", "export.json", "promotion.json", "dataset.json",
             "validated.json", "train.json", "val.json", "test.json", "split_assignments.json")
    literal = re.compile(r"^[\w./${}-]*\b(" + "|".join(re.escape(n) for n in names) + r")$")
    found = []
    for path in sorted([*(repo / "src" / "detops").rglob("*.py"), *(repo / "flows").rglob("*.py"),
                        *(repo / "tasks").rglob("*.py")]):
        if path.name == "graph.py" and path.parent.name == "steps":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and literal.match(node.value.strip()):
                found.append(f"{path.relative_to(repo)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)
