"""The capture writer in this process: batches sealed by size, by time and at close (a server's shutdown), stale
batches of a dead writer sealed by another, readable by the drift check's batch reader; a write error pauses capture
and it resumes once the folder can be written (the gap counted); the queue is bounded in bytes and drops.

The server side (a real `detops serve` capturing, and one whose landing folder cannot be written) is tested in
test_prediction_drift.py and test_serve.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from _waiting import wait_until
from PIL import Image

from detops.config import load_params
from detops.monitoring.batches import complete_batches, read_batch
from detops.monitoring.delivery import STAMP
from detops.monitoring.predictions import CAPTURED_ANSWERS, read_captured
from detops.serving.capture import ANSWER_BYTES, Capture, CaptureWriter, captured
from detops.serving.metrics import render
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def _counter(name: str, **labels: str) -> float:
    text = render()[0].decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{name}_total(?:\{{{re.escape(want)}\}})? (\S+)$" if labels else rf"^{name}_total (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _counts() -> dict[str, float]:
    """The capture counters of /metrics now (tests compare what changed)."""
    return {"saved": _counter("detops_serve_capture_images", outcome="saved"),
            "dropped": _counter("detops_serve_capture_images", outcome="dropped"),
            "stopped": _counter("detops_serve_capture_images", outcome="stopped"),
            "batches": _counter("detops_serve_capture_batches")}


def _since(before: dict[str, float]) -> dict[str, float]:
    return {key: value - before[key] for key, value in _counts().items()}


def _png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (seed * 37 % 256, 90, 140)).save(out, format="PNG")
    return out.getvalue()


def _capture(i: int, data: bytes | None = None) -> Capture:
    body = {"request_id": f"req:{i}", "model": {"name": "m", "version": "1", "alias": "champion"},
            "detections": [{"category_id": 3, "class_name": "rect", "score": 0.8, "bbox": [1, 2, 10, 12]}]}
    return Capture(data or _png(i), body)


def test_capture_share_is_a_stable_hash_of_the_request_id() -> None:
    assert not any(captured(f"r{i}", 0.0) for i in range(100))
    assert all(captured(f"r{i}", 1.0) for i in range(100))
    picks = [captured(f"r{i}", 0.3) for i in range(10_000)]
    assert picks == [captured(f"r{i}", 0.3) for i in range(10_000)]
    assert 0.28 < sum(picks) / len(picks) < 0.32


def test_a_batch_is_sealed_at_its_size_and_reads_as_an_unlabelled_batch(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path, load_params(REPO / "params.yaml", [f"monitor.landing={tmp_path / 'landing'}"]))
    writer = CaptureWriter(tmp_path / "landing", "_READY", batch_size=3, max_minutes=60, score_threshold=0.3)
    gif = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(gif, format="GIF")
    for i in range(4):
        writer.write(_capture(i, gif.getvalue() if i == 2 else None))
    batches = complete_batches(ws)
    assert len(batches) == 1  # the fourth image opened a second batch, not sealed yet
    folders = sorted(p for p in (tmp_path / "landing").iterdir())
    assert len(folders) == 2 and not (folders[1] / "_READY").exists()
    sealed = batches[0].path
    assert re.fullmatch(rf"capture-.+-{os.getpid()}-\d{{8}}T\d+Z", sealed.name)
    data = read_batch(ws, batches[0])
    assert data.format == "images" and len(data.dataset["images"]) == 3 and not data.skipped
    answers = read_captured(sealed)
    assert answers is not None and [a.version for a in answers] == ["1", "1", "1"]
    assert {a.file_name for a in answers} == {im["file_name"] for im in data.dataset["images"]}
    assert answers[2].file_name.endswith(".png")  # a GIF (no batch reader takes it) is saved as PNG
    assert (sealed / answers[0].file_name).read_bytes() == _png(0)  # the client's own bytes otherwise
    line = json.loads((sealed / CAPTURED_ANSWERS).read_text().splitlines()[0])
    assert line["score_threshold"] == 0.3 and line["request_id"] == "req:0"


def test_a_batch_is_sealed_after_its_minutes_by_the_writer_thread(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, "_READY", batch_size=100, max_minutes=0.005, score_threshold=0.3)  # 0.3 s
    writer.start()
    writer.offer(_capture(0))
    writer.offer(_capture(1))
    manifest = wait_until(lambda: list(tmp_path.glob("capture-*/_READY")), 10, "a sealed batch", poll=0.05)
    assert json.loads(manifest[0].read_text())["images"] == 2
    assert len(read_captured(manifest[0].parent) or []) == 2
    writer.close()


def test_close_writes_the_queue_and_seals_the_open_batch(tmp_path: Path) -> None:
    """The server's shutdown (SIGTERM): nothing queued is lost, the open batch gets its manifest, the thread ends;
    an image offered later is dropped, counted."""
    writers = sum(t.name == "detops-capture" for t in threading.enumerate())
    before = _counts()
    writer = CaptureWriter(tmp_path, "_READY", batch_size=100, max_minutes=60, score_threshold=0.3)
    writer.start()
    assert sum(t.name == "detops-capture" for t in threading.enumerate()) == writers + 1
    for i in range(5):
        writer.offer(_capture(i))
    writer.close()
    assert sum(t.name == "detops-capture" for t in threading.enumerate()) == writers
    (manifest,) = tmp_path.glob("capture-*/_READY")
    assert json.loads(manifest.read_text())["images"] == 5
    assert len(read_captured(manifest.parent) or []) == 5
    writer.offer(_capture(5))
    writer.close()  # a second close does nothing
    assert _since(before) == {"saved": 5, "dropped": 0, "stopped": 1, "batches": 1}


def test_close_of_a_writer_never_started_writes_in_the_caller(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, "_READY", batch_size=100, max_minutes=60, score_threshold=0.3)
    writer.offer(_capture(0))
    writer.close()
    (manifest,) = tmp_path.glob("capture-*/_READY")
    assert json.loads(manifest.read_text())["images"] == 1


def _folder(landing: Path, host: str, pid: int, opened: datetime) -> Path:
    folder = landing / f"capture-{host}-{pid}-{opened.strftime(STAMP)}"
    folder.mkdir(parents=True)
    return folder


def test_a_batch_left_unsealed_by_a_dead_writer_is_sealed_by_another_once_stale(tmp_path: Path) -> None:
    """A killed pod's open batch (another host name and pid, never coming back): sealed by any writer once it is
    capture_max_minutes plus the grace old, with what was fully captured; a younger one is left to its writer."""
    ws = Workspace.at(tmp_path, load_params(REPO / "params.yaml", [f"monitor.landing={tmp_path / 'landing'}"]))
    landing = tmp_path / "landing"
    now = datetime.now(timezone.utc)
    dead = _folder(landing, "serve-7f9c-abcde", 1, now - timedelta(minutes=10))
    for i in range(2):
        (dead / f"{i:06d}.png").write_bytes(_png(i))
    lines = [json.dumps({"file_name": f"{i:06d}.png", "model": {"version": "1"}, "detections": []}) for i in range(2)]
    (dead / "000002.png").write_bytes(_png(2)[:20])  # killed while writing its third image: no answer line
    (dead / CAPTURED_ANSWERS).write_text("\n".join(lines) + '\n{"file_name": "000002.p')
    young = _folder(landing, "serve-7f9c-fghij", 1, now - timedelta(minutes=1.5))
    (young / "000001.png").write_bytes(_png(1))
    empty = _folder(landing, "serve-7f9c-klmno", 1, now - timedelta(minutes=10))
    before = _counts()
    writer = CaptureWriter(landing, "_READY", batch_size=100, max_minutes=1, score_threshold=0.3, grace_s=60)
    writer.start()  # a writer looks at start, then every minute
    wait_until(lambda: (dead / "_READY").is_file(), 10, "the dead writer's batch to be sealed", poll=0.05)
    writer.close()
    assert json.loads((dead / "_READY").read_text())["images"] == 2
    assert {p.name for p in dead.iterdir()} == {"000000.png", "000001.png", CAPTURED_ANSWERS, "_READY"}
    (batch,) = complete_batches(ws)
    assert len(read_batch(ws, batch).dataset["images"]) == 2 and len(read_captured(dead) or []) == 2
    assert not (young / "_READY").exists()  # 1.5 min: its writer may still seal it (at 1 min + a late disk)
    assert not empty.exists()  # opened, nothing captured: removed, not sealed as an empty batch
    assert _since(before)["batches"] == 1


def test_on_object_storage_a_dead_writers_batch_is_sealed_from_the_answers_that_made_it(tmp_path: Path,
                                                                                         s3: str) -> None:
    """The same on S3 (moto on loopback), where nothing is appended or renamed: a writer's batch is sealed by its
    size, its answer lines gathered before the manifest; a killed writer's batch (two images with their answer
    objects, a third without) is sealed by another writer with the two, a younger one is left, an empty one
    removed; a fresh workspace reads each sealed batch from its local copy."""
    from detops.monitoring.delivery import ANSWERS
    from detops.monitoring.landing import open_store

    landing = f"{s3}/{tmp_path.name}/landing"
    store, now = open_store(landing), datetime.now(timezone.utc)

    def folder(pid: int, opened: datetime) -> str:
        return f"capture-serve-7f9c-{pid}-{opened.strftime(STAMP)}"

    dead = folder(1, now - timedelta(minutes=10))
    for i in range(3):
        store.fs.pipe_file(store.path(dead, f"{i:06d}.png"), _png(i))
    for i in range(2):  # killed after its third image, before that image's answer
        line = json.dumps({"file_name": f"{i:06d}.png", "model": {"version": "1"}, "detections": []})
        store.fs.pipe_file(store.path(dead, ANSWERS, f"{i:06d}.png.json"), line.encode())
    young = folder(2, now - timedelta(minutes=1.5))
    store.fs.pipe_file(store.path(young, "000001.png"), _png(1))
    empty = folder(3, now - timedelta(minutes=10))
    store.fs.pipe_file(store.path(empty, "000001.png"), _png(1))  # an image whose answer never came
    before = _counts()
    writer = CaptureWriter(landing, "_READY", batch_size=2, max_minutes=1, score_threshold=0.3, grace_s=60)
    writer.start()
    wait_until(lambda: store.is_sealed(dead, "_READY"), 20, "the dead writer's batch to be sealed", poll=0.1)
    for i in range(3):
        writer.offer(_capture(i))
    wait_until(lambda: writer.saved == 3, 20, "three captures", poll=0.05)
    writer.close()
    assert json.loads(store.fs.cat_file(store.path(dead, "_READY")))["images"] == 2
    assert not store.fs.exists(store.path(dead, "000002.png")) and not store.fs.exists(store.path(empty))
    assert not store.is_sealed(young, "_READY")
    ours = sorted(set(store.sealed("_READY")) - {dead})
    assert len(ours) == 2 and _since(before)["batches"] == 3  # by size, at close, and the dead writer's
    ws = Workspace.at(tmp_path / "fresh", load_params(REPO / "params.yaml", [f"monitor.landing={landing}"]))
    read = {batch.name: read_batch(ws, batch) for batch in complete_batches(ws)}
    assert sorted(read) == sorted([dead, *ours])
    assert [len(read[name].dataset["images"]) for name in (dead, *ours)] == [2, 2, 1]
    answers = read_captured(read[ours[0]].batch.path)
    assert answers is not None and [a.file_name for a in answers] == ["000001-req_0.png", "000002-req_1.png"]
    assert not any(p.name.startswith(".") for p in read[dead].batch.path.iterdir())


def test_a_write_error_pauses_capture_and_it_resumes_once_the_folder_can_be_written(tmp_path: Path) -> None:
    """An unwritable landing folder (a regular file in its place: as root a chmod would not stop a write) pauses
    capture instead of ending it: the image being written and those queued are dropped and counted, the gap's
    seconds too, images offered meanwhile wait (bounded in bytes) for the next try after the back-off, which
    writes again once the folder is back."""
    unwritable = _counter("detops_serve_capture_images", outcome="unwritable")
    failures = _counter("detops_serve_capture_failures", error="ENOTDIR")
    seconds = _counter("detops_serve_capture_unwritable_seconds")
    landing = tmp_path / "landing"
    landing.write_text("a file where the landing folder should be")
    writer = CaptureWriter(landing, "_READY", batch_size=100, max_minutes=60, score_threshold=0.3)
    writer.start()
    before = _counts()
    writer.offer(_capture(0))
    wait_until(lambda: _counter("detops_serve_capture_failures", error="ENOTDIR") == failures + 1, 10,
               "the write error", poll=0.05)
    writer.offer(_capture(1))  # paused: it waits for the back-off (1 s)
    assert _counter("detops_serve_capture_images", outcome="unwritable") == unwritable + 1 and writer.saved == 0
    time.sleep(0.3)
    landing.unlink()
    landing.mkdir()
    wait_until(lambda: writer.saved, 10, "capture to resume", poll=0.05)
    writer.close()
    gap = _counter("detops_serve_capture_unwritable_seconds") - seconds
    assert 0.3 <= gap < 5 and _since(before) == {"saved": 1, "dropped": 0, "stopped": 0, "batches": 1}
    (manifest,) = landing.glob("capture-*/_READY")
    assert json.loads(manifest.read_text())["images"] == 1
    assert json.loads((manifest.parent / CAPTURED_ANSWERS).read_text())["request_id"] == "req:1"
    assert _counter("detops_serve_capture_failures", error="ENOTDIR") == failures + 1  # one gap
    assert _counter("detops_serve_capture_images", outcome="unwritable") == unwritable + 1


def test_the_queue_is_bounded_in_bytes_and_drops_instead_of_waiting(tmp_path: Path) -> None:
    before = _counts()
    writer = CaptureWriter(tmp_path, "_READY", batch_size=1000, max_minutes=60, score_threshold=0.3, queue_mb=1)
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")  # noise does not compress: about 270 kB
    big = buffer.getvalue()
    fits = 2**20 // (len(big) + ANSWER_BYTES)  # 3, whatever a count bound says
    started = time.perf_counter()
    for i in range(fits + 2):  # no writer thread: the queue fills
        writer.offer(_capture(i, big))
    assert time.perf_counter() - started < 1.0
    assert _since(before)["dropped"] == 2 and writer.queued_bytes == fits * (len(big) + ANSWER_BYTES)
    writer.close()  # never started: writes what is queued here, seals, then refuses
    writer.offer(_capture(99, big))
    assert _since(before) == {"saved": fits, "dropped": 2, "stopped": 1, "batches": 1} and writer.queued_bytes == 0
