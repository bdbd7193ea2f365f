"""The Label Studio round trip against a real Label Studio 1.23.2 on loopback (its own cached venv, see
_label_studio_server): push an unlabelled 60-image batch of non-square images as pre-annotated tasks in ranked order
(pushing again adds none), label it through the API as a labeller would, with results built as Label Studio's
frontend submits them (accept some pre-annotations, correct others, add a missed box, skip one), pull it as a
labelled batch that retraining accepts; the bad inputs: a server down, a wrong token, a class the dataset lacks, a
rotated box, a box on a rotated image or an image of another size, a box with no label, a box outside its image;
an expired access token exchanged again; and the losses labels-sync must not let happen: an event lost, a pull
stopped between its writes.

The server tests are `slow` (about 4 minutes on 2 cores, the first run also builds the venv: about 3 minutes).
Skipped when Label Studio's venv cannot be built here (no Python 3.11 or no PyPI); DETOPS_REQUIRE_LABEL_STUDIO=1
makes that a failure.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _files import tree_bytes
from _label_studio_server import Server, running
from _labeller import (
    accepted_as_drawn,
    api,
    few_boxes,
    frontend_result,
    label_like_a_person,
    pixel_boxes,
    same_boxes,
    submit,
    truth,
)
from _monitoring_fixtures import batch_from, sample, tiny_checkpoint

from detops.config import load_params
from detops.errors import DataError, LabelStudioError
from detops.labeling.pull import labelled_name, pull
from detops.labeling.push import preannotator, push
from detops.labeling.state import load_state, pushed_batches, state_path
from detops.labeling.studio import LabelStudio
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
BATCH, IMAGES, BUDGET = "ward-7", 60, 50
WIDTH, HEIGHT = 176, 96  # the batch's images: not square, so a width / height swap anywhere moves every box
SHAPE = (WIDTH, HEIGHT)
NO_PREFECT = "http://127.0.0.1:9/api"  # nothing listens: the recording events client never connects


@pytest.fixture(scope="module")
def document_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("label-studio-files")


@pytest.fixture(scope="module")
def server(document_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("label-studio-data"), document_root) as started:
        yield started


@pytest.fixture(scope="module")
def ws(document_root: Path, server: Server) -> Workspace:
    """A workspace below the server's document root: the dataset imported (its classes), an unlabelled batch of 60
    images in the landing folder, the labelling model a tiny checkpoint, its selection of 50 images written."""
    import yaml

    from detops.config.loader import apply_override
    from detops.labeling.select import select_batch
    from detops.steps import import_

    root = document_root / "ws"
    root.mkdir()
    raw: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    # label.accuracy_share=0: these tests follow the ranked tasks one by one; the random share beside them is
    # pushed, labelled and pulled in test_deployments' loop through a real Label Studio
    for item in ("import.source=data/raw/base", "label.model=models/tiny.ckpt", f"label.budget={BUDGET}",
                 "label_studio.document_root=..", f"label_studio.url={server.url}", "monitor.screenshot=false",
                 "label.accuracy_share=0"):
        apply_override(raw, item)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    sample(root / "data/raw/base", seed=0, num_images=20)
    delivery = stretch(sample(root.parent / "delivery", seed=5, num_images=IMAGES), WIDTH, HEIGHT)
    batch = batch_from(delivery, root / "data/landing", BATCH)
    (batch / "annotations.json").unlink()  # images only: the batch needs labels
    workspace = Workspace.at(root, load_params(root / "params.yaml"))
    import_.run(workspace)
    dataset = json.loads(workspace.output("import", "dataset").read_text())
    classes = [c["name"] for c in sorted(dataset["categories"], key=lambda c: c["id"])]
    tiny_checkpoint(root / "models/tiny.ckpt", classes)
    select_batch(workspace, BATCH)
    return workspace


def stretch(folder: Path, width: int, height: int) -> Path:
    """The sample at `folder` with its images resized to `width` x `height`, and their boxes with them."""
    from PIL import Image

    from detops.sample.generate import PNG_COMPRESSION

    path = folder / "annotations.json"
    coco = json.loads(path.read_text())
    scale = {}
    for image in coco["images"]:
        with Image.open(folder / image["file_name"]) as img:
            resized = img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        resized.save(folder / image["file_name"], format="PNG", compress_level=PNG_COMPRESSION)
        scale[image["id"]] = (width / image["width"], height / image["height"])
        image["width"], image["height"] = width, height
    for ann in coco["annotations"]:
        sx, sy = scale[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        ann["bbox"] = [x * sx, y * sy, w * sx, h * sy]
        ann["area"] = w * sx * h * sy
    path.write_text(json.dumps(coco))
    return folder


def truth_of(ws: Workspace) -> dict[str, list[list[Any]]]:
    return truth(ws.root.parent / "delivery/annotations.json")


def truth_results(labels: dict[str, list[list[Any]]], name: str) -> list[dict[str, Any]]:
    """The image's true boxes as the labeller draws them in Label Studio."""
    return [frontend_result(b[:4], b[4], SHAPE) for b in labels[name]]


@pytest.fixture
def announced_events(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The detops events emitted during a test, recorded instead of sent (Prefect's own asserting client). The
    worker is made with an API URL nothing listens on (as `cli` sets): its client never starts a temporary Prefect
    server, whose start on a busy machine can fail and stop the worker."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: NO_PREFECT}):
        worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    events: list[Any] = []
    monkeypatch.setattr(AssertingEventsClient, "_emit", lambda self, event: _record(events, event))
    return events


async def _record(events: list[Any], event: Any) -> None:
    if event.event.startswith("detops."):  # not Prefect's own (flow run states)
        events.append(event)


def cli(ws: Workspace, server: Server, *args: str, monkeypatch: pytest.MonkeyPatch | None = None) -> str:
    """`detops -w WS label ARGS` with the token in LABEL_STUDIO_API_KEY; with `monkeypatch`, a Prefect API is set so
    `pull` emits its event."""
    from typer.testing import CliRunner

    from detops.cli import app

    env = {"LABEL_STUDIO_API_KEY": server.token}
    if monkeypatch is None:
        result = CliRunner().invoke(app, ["-w", str(ws.root), "label", *args], env=env)
    else:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        monkeypatch.setenv("PREFECT_API_URL", NO_PREFECT)
        with temporary_settings({PREFECT_API_URL: NO_PREFECT}):
            result = CliRunner().invoke(app, ["-w", str(ws.root), "label", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_push_imports_the_selection_in_ranked_order_with_preannotations_once(server: Server, ws: Workspace) -> None:
    import xml.etree.ElementTree as ET

    from detops.labeling.select import read_selection

    batch = ws.resolve(ws.params.monitor.landing) / BATCH
    before = sorted(p.name for p in batch.rglob("*"))
    pre = few_boxes(preannotator(ws), sorted(batch.glob("images/*.png")))
    with LabelStudio(server.url, server.token) as studio:
        first = push(ws, BATCH, studio, pre)
        again = cli(ws, server, "push", BATCH)  # the command line, as a person pushes
        kept = state_path(ws, BATCH).read_text()
        state_path(ws, BATCH).unlink()  # a push cut short before its state was written
        assert push(ws, BATCH, studio, pre).imported == 0 and state_path(ws, BATCH).read_text() == kept
        tasks = sorted(studio.export(first.project), key=lambda t: t["id"])
    assert (first.imported, first.already, first.model_version) == (BUDGET, 0, "tiny.ckpt")
    assert f"0 task(s) imported, {BUDGET} already in project {first.project}" in again  # nothing twice
    assert len(tasks) == BUDGET
    ranked = [image.file_name for image in read_selection(ws, BATCH)]
    assert [t["data"]["file_name"] for t in tasks] == ranked  # task ids follow the ranking
    assert [t["data"]["rank"] for t in tasks] == list(range(1, BUDGET + 1))
    assert sorted(p.name for p in batch.rglob("*")) == before  # the landing batch is never modified
    config = ET.fromstring(api(server, "GET", f"/api/projects/{first.project}/")["label_config"])
    assert [box.get("canRotate") for box in config.iter("RectangleLabels")] == ["false"]  # no rotated boxes
    state = load_state(ws, BATCH)
    assert state is not None and sorted(state.tasks.values()) == [t["id"] for t in tasks]
    assert pushed_batches(ws) == [BATCH]

    # the labeller sees the image (served through the project's Local Storage) and the model's boxes
    first_task = api(server, "GET", f"/api/tasks/{tasks[0]['id']}/")
    image = httpx.get(server.url + first_task["data"]["image"], headers={"Authorization": f"Token {server.token}"})
    assert image.content == (batch / ranked[0]).read_bytes()
    detections = pre.predictor.predict([batch / name for name in ranked])
    names = pre.predictor.meta.class_names
    boxed = 0
    for task, det in zip(tasks, detections, strict=True):
        [prediction] = api(server, "GET", "/api/predictions/", params={"task": task["id"]})
        assert prediction["model_version"] == "tiny.ckpt"
        expected = [[x1, y1, x2 - x1, y2 - y1, names[int(label)]]
                    for (x1, y1, x2, y2), label in zip(det.boxes.tolist(), det.labels, strict=True)]
        assert same_boxes(pixel_boxes(prediction["result"], SHAPE), expected)
        boxed += bool(expected)
    assert boxed >= BUDGET // 2  # pre-annotations are there to accept or correct


@pytest.mark.slow
def test_labels_made_in_label_studio_come_back_as_a_labelled_batch(
    server: Server, ws: Workspace, announced_events: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from detops.monitoring.accept import take_batch
    from detops.monitoring.batches import ledger

    with LabelStudio(server.url, server.token) as studio:
        pushed = push(ws, BATCH, studio, None)  # idempotent: the tasks of the first test
    state = load_state(ws, BATCH)
    assert state is not None and pushed.imported == 0
    ordered = sorted(state.tasks.items(), key=lambda item: item[1])  # rank order
    labels = truth_of(ws)
    expected = label_like_a_person(server, ordered[:-1], labels, SHAPE)

    landing = ws.resolve(ws.params.monitor.landing)
    labelled = landing / labelled_name(BATCH)
    source = tree_bytes(landing / BATCH)

    with LabelStudio(server.url, server.token) as studio:
        waiting = pull(ws, BATCH, studio)  # one task left: nothing is written
        assert (waiting.labelled, waiting.finished, waiting.skipped, waiting.tasks) == (None, 48, 1, BUDGET)
        assert not labelled.exists() and labelled.name not in ledger(ws).entries()

        # a class the dataset lacks (added to the project in Label Studio), with a choice of another control the
        # project gained: the class is named, nothing written
        project = api(server, "GET", f"/api/projects/{state.project}/")
        config = project["label_config"].replace(
            "</RectangleLabels>", '<Label value="platelet"/></RectangleLabels>'
            '<Choices name="quality" toName="image"><Choice value="blurry"/></Choices>')
        api(server, "PATCH", f"/api/projects/{state.project}/", json={"label_config": config})
        last_name, last_task = ordered[-1]
        wrong = submit(server, last_task, [frontend_result((10, 10, 20, 20), "platelet", SHAPE)])
        with pytest.raises(DataError, match=r"class\(es\) the dataset lacks: 'platelet' \(e\.g\. " + last_name):
            pull(ws, BATCH, studio)
        assert not labelled.exists()

        # boxes that cannot be read as drawn, beside a good one: each refuses the pull, named with its task
        good = truth_results(labels, last_name)
        box, cls = labels[last_name][0][:4], labels[last_name][0][4]
        transposed = {**frontend_result(box, cls, SHAPE), "original_width": HEIGHT, "original_height": WIDTH}
        for bad, why in ((frontend_result(box, cls, SHAPE, rotation=30), "a box rotated by 30"),
                         (frontend_result(box, cls, SHAPE, image_rotation=90), "a box drawn on the image rotated "
                                                                               "by 90 degrees"),
                         (transposed, f"a box drawn on a {HEIGHT}x{WIDTH} image, but the image is {WIDTH}x{HEIGHT}"),
                         (frontend_result(box, None, SHAPE), "a box with no label")):
            api(server, "PATCH", f"/api/annotations/{wrong}/", json={"result": [*good, bad]})
            with pytest.raises(DataError, match=rf"1 result\(s\) .* cannot be taken as boxes.*\n  task {last_task} "
                                                rf"\({re.escape(last_name)}\): {why}"):
                pull(ws, BATCH, studio)
            assert not labelled.exists()

        # a box past the image's right edge: the validation gate's rule, nothing written
        api(server, "PATCH", f"/api/annotations/{wrong}/", json={"result": [frontend_result((165, 10, 22, 20), cls,
                                                                                            SHAPE)]})
        with pytest.raises(DataError, match=rf"right edge x\+w 187(\.0)? is past the image width {WIDTH}"):
            pull(ws, BATCH, studio)
        assert not labelled.exists()

        assert tree_bytes(landing / BATCH) == source  # bad labels lose nothing: the batch is as delivered
        # the boxes, one without Label Studio's original size (scaled with the image's own), and a choice: not a box,
        # left out and named in the pull's report
        unsized = [{k: v for k, v in one.items() if k not in ("original_width", "original_height")} for one in good]
        choice = {"id": "q1", "type": "choices", "from_name": "quality", "to_name": "image", "origin": "manual",
                  "value": {"choices": ["blurry"]}}
        api(server, "PATCH", f"/api/annotations/{wrong}/", json={"result": [*unsized, choice]})
        expected[last_name] = pixel_boxes(good, SHAPE)
    announced = cli(ws, server, "pull", BATCH, monkeypatch=monkeypatch)  # the command line emits the event
    [event] = announced_events
    with LabelStudio(server.url, server.token) as studio:
        done = pull(ws, BATCH, studio)  # pulled once: nothing rewritten

    assert done.labelled == labelled.name
    assert f"{BUDGET - 1} image(s)" in announced and "detops.batch.labelled emitted" in announced
    dropped = f"task {last_task} ({last_name}): not a rectangle (a choices result of quality)"
    assert f"left out {dropped}" in announced and done.dropped == (dropped,)  # named, also on a second pull
    # what starts retrain-on-drift: its trigger matches the event, and the run gets the labelled batch
    from flows.deploy.spec import LABELLED_EVENT, batch_trigger

    trigger = batch_trigger(LABELLED_EVENT)
    assert event.event == LABELLED_EVENT and fnmatch(event.resource.id, trigger["match"]["prefect.resource.id"])
    assert event.payload["batch"] == labelled.name and event.payload["from_batch"] == BATCH
    assert (labelled / ws.params.monitor.manifest).is_file()
    coco = json.loads((labelled / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    dataset_classes = json.loads(ws.output("import", "dataset").read_text())["categories"]
    assert names == {c["id"]: c["name"] for c in dataset_classes}
    got: dict[str, list[list[Any]]] = {im["file_name"]: [] for im in coco["images"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    for ann in coco["annotations"]:
        got[files[ann["image_id"]]].append([*ann["bbox"], names[ann["category_id"]]])
    assert set(got) == set(expected)
    assert all(same_boxes(got[name], expected[name]) for name in expected)
    assert len(coco["annotations"]) == sum(len(boxes) for boxes in expected.values())
    source = landing / BATCH
    assert all((labelled / name).read_bytes() == (source / name).read_bytes() for name in got)
    entry = ledger(ws).entries()[labelled.name]
    assert entry["labelled_from"] == BATCH  # the drift check does not announce it again
    assert (entry["images"], entry["skipped"], entry["dropped"]) == (BUDGET - 1, 1, [dropped])
    assert pushed_batches(ws) == []

    outcome = take_batch(ws, labelled.name)  # what retrain-on-drift does with the batch
    assert outcome.labelled and sorted(outcome.images) == sorted(got)
    shutil.rmtree(ws.resolve(ws.params.import_.batches))


@pytest.mark.slow
def test_review_sends_the_flagged_labels_back_and_the_reviewed_batch_is_accepted_whole(
    server: Server, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`label.audit: review` on the labelled batch of the test before: the flagged images stay out, and the next
    labels-sync tick sends them to a review project, worst first, pre-annotated with the labels under review (a
    second send adds none); reviewed and pulled, they come back as `<batch>-reviewed`, which is accepted whole (a
    person looked twice)."""
    from prefect.testing.utilities import prefect_test_harness

    from detops.dataset.canonical import read_dataset
    from detops.labeling.audit import read_review_list, run_audit
    from detops.labeling.review import REVIEW_VERSION, pending_reviews, push_review
    from detops.monitoring.accept import take_batch
    from detops.monitoring.batches import find_batch, ledger, read_batch
    from flows.labels_sync import labels_sync

    name = labelled_name(BATCH)
    labelled = read_batch(ws, find_batch(ws, name)).dataset
    qualities = sorted({image.quality for image in run_audit(ws, labelled, f"batch {name}", name).images})
    middle = len(qualities) // 2  # a threshold between two qualities: about half the images flagged
    assert middle > 0, qualities
    strict = [f"label.review_threshold={(qualities[middle - 1] + qualities[middle]) / 2}", "label.audit=review"]
    reviewing = Workspace.at(ws.root, load_params(ws.root / "params.yaml", strict))
    outcome = take_batch(reviewing, name)
    flagged = read_review_list(ws, name)
    assert outcome.review == [r.file_name for r in flagged] and 0 < len(flagged) < len(labelled["images"])
    assert [r.quality for r in flagged] == sorted(r.quality for r in flagged)  # worst first
    accepted = read_dataset(ws.resolve(ws.params.import_.batches) / name / "annotations.json")
    assert not {im["file_name"] for im in accepted["images"]} & set(outcome.review)
    assert pending_reviews(ws) == [name]

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    with prefect_test_harness(server_startup_timeout=120):
        waiting = labels_sync(workspace=str(ws.root))  # sent, then found not reviewed yet
    assert waiting == {name: {"finished": 0, "skipped": 0, "tasks": len(flagged), "labelled": None, "dropped": []}}
    sent = cli(ws, server, "review", name)  # by hand: nothing twice
    assert f"0 flagged image(s) sent for review, {len(flagged)} already" in sent
    with LabelStudio(server.url, server.token) as studio:
        assert push_review(ws, name, studio).imported == 0
        state = load_state(ws, name)
        assert state is not None and state.review and pending_reviews(ws) == []
        tasks = sorted(studio.export(state.project), key=lambda t: t["id"])
    assert [t["data"]["file_name"] for t in tasks] == [r.file_name for r in flagged]
    assert [t["data"]["issue"] for t in tasks] == [r.issue for r in flagged]
    names = {c["id"]: c["name"] for c in labelled["categories"]}
    ids = {im["file_name"]: im["id"] for im in labelled["images"]}
    corrected = truth_of(ws)
    for i, one in enumerate(tasks):
        [prediction] = api(server, "GET", "/api/predictions/", params={"task": one["id"]})
        under_review = [[*a["bbox"], names[a["category_id"]]] for a in labelled["annotations"]
                        if a["image_id"] == ids[one["data"]["file_name"]]]
        assert prediction["model_version"] == REVIEW_VERSION
        assert same_boxes(pixel_boxes(prediction["result"], SHAPE), under_review)
        results = ([accepted_as_drawn(box, SHAPE) for box in prediction["result"]] if i % 2 else  # the reviewer
                   truth_results(corrected, one["data"]["file_name"]))  # keeps half, redraws the others
        submit(server, one["id"], results)

    with LabelStudio(server.url, server.token) as studio:
        done = pull(ws, name, studio)
    assert done.labelled == labelled_name(name, review=True) and done.images == len(flagged)
    assert ledger(ws).entries()[done.labelled]["reviewed_from"] == name
    again = take_batch(reviewing, done.labelled)  # the same strict audit: reported, nothing left out
    assert sorted(again.images) == sorted(outcome.review) and again.review == []
    assert any("reviewed in Label Studio" in note for note in again.notes)  # both accepted: nothing to announce


@pytest.mark.slow
def test_a_server_down_or_a_wrong_token_is_a_clear_error_and_changes_nothing(server: Server, ws: Workspace) -> None:
    from _label_studio_server import free_port

    from detops.monitoring.batches import ledger

    other = "ward-8"
    shutil.copytree(ws.resolve(ws.params.monitor.landing) / BATCH, ws.resolve(ws.params.monitor.landing) / other)
    ledger(ws).record(other, {"verdict": "drift", "labelled": False})
    entries = ledger(ws).entries()
    source = tree_bytes(ws.resolve(ws.params.monitor.landing) / other)
    down = f"http://127.0.0.1:{free_port()}"
    with LabelStudio(down, server.token) as studio, pytest.raises(LabelStudioError, match="does not answer"):
        push(ws, other, studio, None)
    with LabelStudio(server.url, "f" * 40) as studio, pytest.raises(LabelStudioError, match="refused the token"):
        push(ws, other, studio, None)
    with pytest.raises(LabelStudioError, match="refused the token"):
        LabelStudio(server.url, "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.bad")
    assert load_state(ws, other) is None and ledger(ws).entries() == entries  # unlabelled, in the ledger
    assert tree_bytes(ws.resolve(ws.params.monitor.landing) / other) == source
    with pytest.raises(DataError, match="never pushed"), LabelStudio(server.url, server.token) as studio:
        pull(ws, other, studio)

    # a personal access token (a JWT refresh token) works as well as the legacy token; the access token it is
    # exchanged for expires (minutes): refused with 401, it is exchanged again and the call sent once more, unless
    # the personal access token itself was revoked in Label Studio
    pat = api(server, "POST", "/api/token/")["token"]
    title = f"{ws.params.label_studio.project_prefix} {BATCH}"
    with LabelStudio(server.url, pat) as studio:
        assert studio.find_project(title) is not None
        bearer = studio._http.headers["Authorization"]
        studio._http.headers["Authorization"] = expired(bearer)  # as the cached access token is by now
        assert studio.find_project(title) is not None
        assert studio._http.headers["Authorization"] not in (bearer, expired(bearer))  # a new access token
        api(server, "POST", "/api/token/blacklist/", json={"refresh": pat})
        studio._http.headers["Authorization"] = expired(bearer)
        with pytest.raises(LabelStudioError, match=r"refused the token .*POST /api/token/refresh/: HTTP 401"):
            studio.find_project(title)


def expired(bearer: str) -> str:
    """`Bearer <access token>` with the token's expiry moved an hour back (so its signature no longer matches
    either): what Label Studio answers with 401 token_not_valid."""
    import base64

    header, payload, signature = bearer.removeprefix("Bearer ").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = int(claims["exp"]) - 3600
    moved = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"Bearer {header}.{moved}.{signature}"


@pytest.mark.slow
def test_labels_sync_pulls_the_finished_batches_and_announces_them(
    server: Server, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The labels-sync flow: a batch still being labelled waits; once every task is done it is pulled and
    announced, announced again on the next tick while retraining has not accepted it, and once accepted the next
    tick has nothing left to do."""
    from prefect.testing.utilities import prefect_test_harness

    import flows.labels_sync as sync_flow
    from detops.monitoring.accept import take_batch
    from flows.labels_sync import labels_sync

    announced: list[Any] = []
    real = sync_flow.emit_labelled_event

    def recording(ws: Workspace, result: Any) -> None:
        announced.append(result)
        real(ws, result)

    monkeypatch.setattr(sync_flow, "emit_labelled_event", recording)

    night = "night-3"
    landing = ws.resolve(ws.params.monitor.landing)
    shutil.copytree(landing / BATCH, landing / night)  # no selection: every image, in file order
    with LabelStudio(server.url, server.token) as studio:
        pushed = push(ws, night, studio, None)
    state = load_state(ws, night)
    assert state is not None and pushed.imported == IMAGES and pushed_batches(ws) == [night]
    labels = truth_of(ws)
    tasks = sorted(state.tasks.items(), key=lambda item: item[1])
    for name, task in tasks[:-1]:
        submit(server, task, truth_results(labels, name))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    with prefect_test_harness(server_startup_timeout=120):
        waiting = labels_sync(workspace=str(ws.root))
        assert waiting == {night: {"finished": IMAGES - 1, "skipped": 0, "tasks": IMAGES, "labelled": None,
                                   "dropped": []}}
        assert not announced
        submit(server, tasks[-1][1], [], skipped=True)
        done = labels_sync(workspace=str(ws.root))
        again = labels_sync(workspace=str(ws.root))  # pulled, not accepted yet: announced again
        take_batch(ws, labelled_name(night))  # what retrain-on-drift does with it
        assert labels_sync(workspace=str(ws.root)) == {}  # pulled and accepted: nothing left to do
    assert done[night]["labelled"] == labelled_name(night) and done[night]["announced"]
    assert again == {night: {"labelled": labelled_name(night), "announced": True}}
    first, second = announced
    assert (first.batch, first.labelled, first.images, first.skipped) == (night, labelled_name(night), IMAGES - 1, 1)
    assert second == first
    assert (landing / labelled_name(night) / ws.params.monitor.manifest).is_file()


@pytest.mark.slow
def test_a_lost_event_or_a_pull_stopped_between_its_writes_ends_with_the_batch_accepted_once(
    server: Server, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way labels-sync can stop half-way, one tick after another: the pull stops inside the batch folder, then
    before its state is written (each a write that raises, as a full disk or a killed worker would); the next tick
    finishes the pull, and its event is lost; the next announces it again (heard), and so does the one after, as
    retraining has not run yet. Retraining, once per event heard, accepts the batch once; then nothing is left to
    do."""
    from prefect.testing.utilities import prefect_test_harness

    import detops.labeling.pull as pulling
    import flows.labels_sync as sync_flow
    from detops.monitoring.accept import accepted_path, take_batch
    from detops.monitoring.batches import ledger
    from flows.labels_sync import labels_sync

    night = "night-4"
    landing = ws.resolve(ws.params.monitor.landing)
    shutil.copytree(landing / BATCH, landing / night)
    with LabelStudio(server.url, server.token) as studio:
        push(ws, night, studio, None)
    state = load_state(ws, night)
    assert state is not None
    labels = truth_of(ws)
    for name, task in state.tasks.items():
        submit(server, task, truth_results(labels, name))
    labelled, manifest = landing / labelled_name(night), ws.params.monitor.manifest

    heard: list[str] = []  # the events retrain-on-drift receives
    lost = [True]  # the next event is lost on its way (the Prefect server restarts)
    real = sync_flow.emit_labelled_event

    def announce(ws: Workspace, result: Any) -> None:
        if lost:
            lost.pop()
            return
        heard.append(result.labelled)
        real(ws, result)

    def fails(what: str) -> Any:
        def write(*_: Any, **__: Any) -> None:
            raise OSError(f"no space left on device: {what}")
        return write

    monkeypatch.setattr(sync_flow, "emit_labelled_event", announce)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)

    def tick() -> dict[str, Any]:
        return labels_sync(workspace=str(ws.root))

    with prefect_test_harness(server_startup_timeout=120):
        with monkeypatch.context() as broken, pytest.raises(OSError, match="annotations"):
            broken.setattr(pulling, "write_json", fails("annotations.json"))
            tick()
        assert ledger(ws).entries()[labelled.name]["labelled_from"] == night  # 1 done, 2 half-done
        assert labelled.is_dir() and not (labelled / manifest).exists()
        with monkeypatch.context() as broken, pytest.raises(OSError, match="state"):
            broken.setattr(pulling, "save_state", fails("the round trip's state"))
            tick()
        assert (labelled / manifest).is_file() and pushed_batches(ws) == [night]  # 2 done, not 3
        written = tree_bytes(labelled)
        finished = tick()
        assert finished[night]["labelled"] == labelled.name and finished[night]["announced"] and not heard
        assert tree_bytes(labelled) == written and pushed_batches(ws) == []  # kept as written, then marked
        assert tick() == tick() == {night: {"labelled": labelled.name, "announced": True}}
        assert heard == [labelled.name, labelled.name]

        once = take_batch(ws, heard[0])
        accepted = accepted_path(ws, labelled.name)
        stamp = [(p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in [accepted, *accepted.rglob("*")]]
        again = take_batch(ws, heard[1])
        assert once.accepted == again.accepted == accepted and once.notes and not again.notes  # audited once
        assert [(p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in [accepted, *accepted.rglob("*")]] == stamp
        assert [p.name for p in accepted.parent.iterdir() if night in p.name] == [labelled.name]  # one copy
        assert tick() == {}
    coco = json.loads((labelled / "annotations.json").read_text())
    assert len(coco["images"]) == IMAGES and ledger(ws).entries()[labelled.name]["images"] == IMAGES


def test_label_config_and_box_conversion() -> None:
    import xml.etree.ElementTree as ET

    from detops.labeling.labelconfig import Refused, box_to_result, label_config, result_to_box

    root = ET.fromstring(label_config(["RBC", 'odd "name" & <co>']))
    assert [label.get("value") for label in root.iter("Label")] == ["RBC", 'odd "name" & <co>']
    assert [box.get("canRotate") for box in root.iter("RectangleLabels")] == ["false"]
    result = box_to_result((10.5, 20.0, 30.25, 40.0), "RBC", 640, 480, 0.9)
    drawn = frontend_result((10.5, 20.0, 30.25, 40.0), "RBC", (640, 480))  # as Label Studio's frontend submits it
    converted = result_to_box(drawn, 640, 480)
    assert not isinstance(converted, Refused) and np.allclose(converted[0], [10.5, 20.0, 30.25, 40.0])
    assert converted[1] == ["RBC"]
    assert same_boxes(pixel_boxes([result], (640, 480)), [[10.5, 20.0, 30.25, 40.0, "RBC"]])  # push's, read back
    other = result_to_box({"type": "choices", "from_name": "quality", "value": {"choices": ["x"]}}, 640, 480)
    assert other == Refused("not a rectangle (a choices result of quality)", loses_a_box=False)


def test_retrain_on_drift_is_also_started_by_a_labelled_batch_and_labels_sync_is_scheduled() -> None:
    import yaml

    from flows.deploy.spec import DRIFT_EVENT, LABELLED_EVENT, LABELS_SYNC, prefect_yaml

    spec = yaml.safe_load(prefect_yaml(load_params(REPO / "params.yaml")))
    deployments = {d["name"]: d for d in spec["deployments"]}
    triggers = deployments["retrain-on-drift"]["triggers"]
    assert [t["expect"] for t in triggers] == [[DRIFT_EVENT], [LABELLED_EVENT]]
    assert all(t["parameters"] == {"batch": "{{ event.payload.batch }}"} for t in triggers)
    sync = deployments["labels-sync"]
    assert sync["entrypoint"] == LABELS_SYNC and sync["schedules"] == [{"cron": "*/15 * * * *", "timezone": "UTC"}]


@pytest.mark.slow
def test_labels_sync_sends_a_batch_found_unlabelled_to_label_studio_once(
    server: Server, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """label.push_drifted: a batch retrain-on-drift found unlabelled (its labels_needed list) is selected and pushed
    by the next labels-sync tick, pre-annotated, and never pushed twice; with it off, the batch waits for a person."""
    import yaml
    from prefect.testing.utilities import prefect_test_harness

    from detops.labeling.push import batches_to_push
    from detops.monitoring.accept import take_batch
    from flows.labels_sync import labels_sync

    drifted = "dusk-2"
    landing = ws.resolve(ws.params.monitor.landing)
    shutil.copytree(landing / BATCH, landing / drifted)
    assert not take_batch(ws, drifted).labelled  # what retrain-on-drift does with an unlabelled batch
    assert batches_to_push(ws) == [drifted]
    params_file = ws.root / "params.yaml"
    original = params_file.read_text()
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            assert drifted not in labels_sync(workspace=str(ws.root))  # off: nothing is pushed
            assert load_state(ws, drifted) is None
            raw = yaml.safe_load(original)
            raw["label"]["push_drifted"] = True
            params_file.write_text(yaml.safe_dump(raw))
            first = labels_sync(workspace=str(ws.root))
            state = load_state(ws, drifted)
            second = labels_sync(workspace=str(ws.root))
    finally:
        params_file.write_text(original)
    assert state is not None and len(state.tasks) == BUDGET and not state.review
    assert first[drifted] == {"finished": 0, "skipped": 0, "tasks": BUDGET, "labelled": None, "dropped": []}
    assert second == first  # waiting for its labels, not pushed again
    again = load_state(ws, drifted)
    assert again is not None and again.tasks == state.tasks and batches_to_push(ws) == []
    with LabelStudio(server.url, server.token) as studio:
        tasks = studio.tasks_by_file(state.project)
        assert sorted(tasks) == sorted(state.tasks)  # one task per selected image, imported once
    predicted = api(server, "GET", "/api/predictions/", params={"task": next(iter(state.tasks.values()))})
    assert [p["model_version"] for p in predicted] == ["tiny.ckpt"], predicted  # pre-annotated by label.model
