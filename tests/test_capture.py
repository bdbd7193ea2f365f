"""The capture writer in this process: batches sealed by size and by time, readable by the drift check's batch
reader; a full disk (an injected ENOSPC) stops capture without an error reaching the caller; a full queue drops.

The server side (a real `detops serve` capturing, and one whose landing folder cannot be written) is tested in
test_prediction_drift.py and test_serve.py.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import time
from pathlib import Path

import pytest
from _waiting import wait_until
from PIL import Image

from detops.config import load_params
from detops.monitoring.batches import complete_batches, read_batch
from detops.monitoring.predictions import CAPTURED_ANSWERS, read_captured
from detops.serving.capture import QUEUE_SIZE, Capture, CaptureWriter, captured
from detops.serving.metrics import MULTIPROC_ENV, metrics, render, use_directory
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The metrics of this process go to a folder (multiprocess mode), as in a server's worker."""
    if MULTIPROC_ENV not in os.environ and metrics.cache_info().currsize == 0:
        use_directory(tmp_path_factory.mktemp("metrics"))


def _counter(name: str, **labels: str) -> float:
    text = render()[0].decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{name}_total(?:\{{{re.escape(want)}\}})? (\S+)$" if labels else rf"^{name}_total (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


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


def test_a_full_disk_stops_capture_and_never_reaches_the_caller(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    failures, stopped = _counter("detops_serve_capture_failures", error="ENOSPC"), _counter(
        "detops_serve_capture_images", outcome="stopped")
    writer = CaptureWriter(tmp_path, "_READY", batch_size=2, max_minutes=60, score_threshold=0.3)
    writer.write(_capture(0))  # one image on disk, then the disk fills

    def no_space(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", no_space)
    writer.start()
    writer.offer(_capture(1))
    wait_until(lambda: writer.stopped, 10, "capture to stop", poll=0.05)
    for i in range(2, 5):
        writer.offer(_capture(i))  # returns at once, counted, nothing written
    assert _counter("detops_serve_capture_failures", error="ENOSPC") == failures + 1
    assert _counter("detops_serve_capture_images", outcome="stopped") == stopped + 3
    assert not list(tmp_path.glob("*/_READY"))  # the batch it was writing stays unsealed: never read
    monkeypatch.undo()
    time.sleep(0.2)
    assert len(list(tmp_path.glob("*/*.png"))) == 1  # stopped for good: nothing written after the failure


def test_a_full_queue_drops_instead_of_waiting(tmp_path: Path) -> None:
    dropped = _counter("detops_serve_capture_images", outcome="dropped")
    writer = CaptureWriter(tmp_path, "_READY", batch_size=1000, max_minutes=60, score_threshold=0.3)
    image = _png(1)
    started = time.perf_counter()
    for i in range(QUEUE_SIZE + 5):  # no writer thread: the queue fills
        writer.offer(Capture(image, {"request_id": str(i)}))
    assert time.perf_counter() - started < 1.0
    assert _counter("detops_serve_capture_images", outcome="dropped") == dropped + 5
