"""`detops serve`: real server processes on loopback, a real MLflow registry (local SQLite store) holding the
tiny model three times: v1 (champion), v2, and v3 whose artifacts are deleted.

- hot swap under load: a promotion, a `detops registry rollback` and a broken version, with no failed request;
- canary by request id, shadow traffic that changes no answer;
- bad input: every refusal a JSON error with its status, and the next good request answered;
- no process of a server of an ONNX file has torch loaded.
The parsing, routing and agreement rules also have quick tests of their own (no server).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _serve_server import ServeProcess

from detops.inference.predictor import Detections
from detops.serving.agreement import agreement
from detops.serving.gate import form_image
from detops.serving.images import Rejected
from detops.serving.routing import assign, request_id
from detops.workspace import Workspace

SERVE = ("predict.score_threshold=0.05", "serve.batch_timeout=0.005")
KEY = "s3cret-key-for-tests"
REPO = Path(__file__).resolve().parents[1]


# --- quick rules, no server ----------------------------------------------------------------------------------

def test_canary_assignment_is_a_stable_hash_of_the_request_id() -> None:
    assert assign("client-7", 0.5, 0.0) == assign("client-7", 0.5, 0.0)
    share = np.mean([assign(f"r{i}", 0.3, 0.0).canary for i in range(20_000)])
    assert 0.28 < share < 0.32
    shadowed = [assign(f"r{i}", 0.3, 0.5) for i in range(20_000)]
    assert not any(a.canary and a.shadow for a in shadowed)  # a canary is answered by the challenger: no shadow
    assert 0.33 < np.mean([a.shadow for a in shadowed]) < 0.37  # half of the 70 % the champion answers
    assert not any(assign(f"r{i}", 0.0, 0.0).canary for i in range(1000))
    assert all(assign(f"r{i}", 1.0, 0.0).canary for i in range(1000))
    assert request_id("abc-1.2:3") == ("abc-1.2:3", None)
    made, problem = request_id(None)
    assert len(made) == 32 and problem is None
    for bad in ("", "a b", "x" * 129, "é"):
        made, problem = request_id(bad)
        assert len(made) == 32 and problem and "is not 1-128 characters" in problem


def _det(boxes: list[list[float]], labels: list[int], scores: list[float] | None = None) -> Detections:
    return Detections(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(scores or [0.9] * len(labels)),
                      np.asarray(labels, dtype=np.int64))


def test_agreement_is_f1_of_boxes_matched_at_iou_half() -> None:
    a = _det([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])
    assert agreement(a, a) == 1.0
    assert agreement(_det([], []), _det([], [])) == 1.0
    assert agreement(a, _det([], [])) == 0.0
    assert agreement(a, _det([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 0])) == 0.0  # right boxes, wrong classes
    assert agreement(a, _det([[1, 0, 11, 10]], [0])) == pytest.approx(2 / 3)  # IoU 0.82: one of two found
    assert agreement(a, _det([[5, 0, 15, 10], [20, 20, 30, 30]], [0, 1])) == pytest.approx(0.5)  # IoU 1/3 misses
    twice = _det([[0, 0, 10, 10], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])
    assert agreement(_det([[0, 0, 10, 10]], [0]), twice) == pytest.approx(2 / 3)  # one to one: a duplicate is extra


def test_multipart_bodies_are_parsed_exactly() -> None:
    data = bytes(range(256)) * 3 + b"\r\n--not-the-boundary\r\n\r\n"
    request = httpx.Request("POST", "http://x/predict", files={"image": ("a.png", data, "image/png")},
                            data={"note": "hi"})
    body, content_type = request.read(), request.headers["content-type"]
    assert body.index(b'name="note"') < body.index(b'name="image"')  # another field first: skipped
    assert form_image(body, content_type) == data
    with pytest.raises(Rejected, match=r"malformed multipart body: .*end of multipart stream") as err:
        form_image(body[: len(body) // 2], content_type)
    assert err.value.status == 400
    with pytest.raises(Rejected, match="no boundary"):
        form_image(body, "multipart/form-data")
    quoted = content_type.replace("boundary=", 'boundary="') + '"'
    assert form_image(body, quoted) == data
    other = httpx.Request("POST", "http://x/predict", files={"file": ("a.png", data, "image/png")}, data={"note": "hi"})
    with pytest.raises(Rejected, match=r"no `image` field \(fields: file, note\)"):
        form_image(other.read(), other.headers["content-type"])


@pytest.fixture
def gate_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The gate around an app that echoes what the handler gets: the image's bytes (base64 here) and the id."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from detops.serving import gate

    monkeypatch.setenv("DETOPS_SERVE_API_KEY", KEY)

    async def echo(request: Request) -> JSONResponse:
        image = base64.b64encode(request.scope[gate.IMAGE]).decode()
        return JSONResponse({"image": image, "request_id": request.scope[gate.REQUEST_ID]})

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    app = Starlette(routes=[Route("/predict", echo, methods=["POST"]), Route("/health", ok, methods=["GET"])])
    with TestClient(gate.Gate(app, max_body=100_000, max_pixels=10_000)) as client:
        yield client


def _png(width: int = 32, height: int = 24) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png3() -> bytes:
    """A PNG whose length is a multiple of 3 (its base64 has no padding; bytes after IEND are ignored)."""
    png = _png()
    return png + b"\0" * (-len(png) % 3)


def test_gate_hands_the_handler_the_image_bytes(gate_client: Any) -> None:
    png, auth = _png(), {"X-API-Key": KEY}
    encoded = base64.b64encode(png).decode()
    for kwargs in ({"files": {"image": ("a.png", png, "image/png")}},
                   {"json": {"image": encoded}},
                   {"json": {"image": "data:image/png;base64," + encoded}},
                   {"content": png, "headers": {"content-type": "image/png"}}):
        headers = {**auth, "X-Request-Id": "fixed-1", **kwargs.pop("headers", {})}
        response = gate_client.post("/predict", headers=headers, **kwargs)
        assert response.status_code == 200, response.text
        assert response.json() == {"image": encoded, "request_id": "fixed-1"}
        assert response.headers["x-request-id"] == "fixed-1"
    bearer = gate_client.post("/predict", content=png, headers={"content-type": "image/png",
                                                                 "Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    assert gate_client.get("/health").status_code == 200  # probes need no key


@pytest.mark.parametrize(("kwargs", "status", "fragment"), [
    ({"content": b"\x89PNG but not", "headers": {"content-type": "image/png"}}, 400, "not an image"),
    ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "body is empty"),
    ({"content": b'{"image": ', "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
    ({"json": {"img": "x"}}, 400, "`image` string"),
    ({"json": {"image": "%%%"}}, 400, "not valid base64"),
    # a stray character then padding: a length check balances it (3n bytes), the strict decoder does not
    ({"json": {"image": base64.b64encode(_png3()).decode() + '"==='}}, 400, "not valid base64"),
    ({"json": {"image": base64.b64encode(_png3()).decode()[:-4] + "A=AA"}}, 400, "not valid base64"),
    ({"content": b"[" * 90_000, "headers": {"content-type": "application/json"}}, 400, "nested too deeply"),
    ({"content": iter([b"\xff" * 30_000] * 4), "headers": {"content-type": "image/png"}}, 413, "body is larger"),
    ({"files": {"other": ("a.png", b"x", "image/png")}}, 400, "no `image` field (fields: other)"),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "'text/plain' is not accepted"),
    ({"content": b"hello"}, 415, "no Content-Type"),
    ({"content": b"x" * 100_001, "headers": {"content-type": "image/png"}}, 413, "more than the 100,000 allowed"),
    ({"content": _png(101, 100), "headers": {"content-type": "image/png"}}, 413, "10,100 pixels, more than"),
    ({"content": _png(), "headers": {"content-type": "image/png", "X-Request-Id": "a b"}}, 400, "X-Request-Id"),
])
def test_gate_refusals(gate_client: Any, kwargs: dict[str, Any], status: int, fragment: str) -> None:
    kwargs = {**kwargs, "headers": {"X-API-Key": KEY, **kwargs.get("headers", {})}}
    response = gate_client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"] and response.json()["request_id"]


def test_gate_refuses_without_the_key(gate_client: Any) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        response = gate_client.post("/predict", content=_png(), headers={"content-type": "image/png", **headers})
        assert response.status_code == 401 and "key" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"


def test_what_to_serve(tmp_path: Path) -> None:
    from detops.config import load_params
    from detops.errors import DataError, ParamsError
    from detops.registry.resolve import Reference
    from detops.serving.settings import challenger_source, parse_source

    ws = Workspace.at(tmp_path, load_params(None))
    champion = parse_source(ws, "champion")
    assert champion == Reference("detops-detector", alias="champion")
    assert str(champion) == "models:/detops-detector@champion"
    assert parse_source(ws, "models:/other/4") == Reference("other", version="4")
    assert parse_source(ws, "models:/other@staging") == Reference("other", alias="staging")
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert parse_source(ws, "m.onnx") == tmp_path / "m.onnx"
    with pytest.raises(DataError, match="model file not found"):
        parse_source(ws, "missing/m.onnx")
    assert challenger_source(ws, champion) is None  # canary and shadow off: no challenger followed
    canary = Workspace.at(tmp_path, load_params(None, ["serve.canary_share=0.1"]))
    assert str(challenger_source(canary, champion)) == "models:/detops-detector@challenger"
    with pytest.raises(ParamsError, match="need a registered model"):
        challenger_source(canary, parse_source(ws, "m.onnx"))


def test_serve_params_and_help() -> None:
    from typer.testing import CliRunner

    from detops.cli import app
    from detops.config import load_params
    from detops.errors import ParamsError

    assert load_params(None).serve.host == "127.0.0.1"  # loopback unless told otherwise
    with pytest.raises(ParamsError, match=r"serve\.host"):
        load_params(None, ["serve.host=192.168.1.4"])
    with pytest.raises(ParamsError, match=r"serve\.batch_timeout"):
        load_params(None, ["serve.batch_timeout=-0.001"])
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--model", "--host", "--port"):
        assert option in result.output
    assert "--workers" not in result.output  # one process per replica
    code = ("import sys\nfrom detops.cli import app\ntry:\n    app(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED=' + ','.join(m for m in ('mlflow', 'uvicorn', 'prometheus_client', 'onnxruntime', 'torch')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "LOADED="  # `detops --help` stays fast


# --- a registry with three versions of the tiny model ----------------------------------------------------------

@dataclass
class Registry:
    ws: Workspace
    name: str

    def client(self) -> Any:
        from detops.registry.client import connect

        return connect(self.ws)

    def set_aliases(self, **aliases: str | None) -> float:
        """Point (or remove, with None) aliases; returns when, on the monotonic clock."""
        client = self.client()
        for alias, version in aliases.items():
            alias = alias.replace("_", "-")
            if version is None:
                if alias in client.get_registered_model(self.name).aliases:
                    client.delete_registered_model_alias(self.name, alias)
            else:
                client.set_registered_model_alias(self.name, alias, version)
        return time.monotonic()

    def images(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted((self.ws.root / "data" / "raw" / "tiny" / "images").glob("*.png"))]


def _register_copy(ws: Workspace) -> str:
    """Another version of the trained run's model (the same files), as `detops promote` packages it."""
    from detops.registry.client import connect
    from detops.registry.package import log_model, model_files
    from detops.tracking import configure, read_run_id

    configure(ws)  # MLflow resolves a version's `models:/m-...` source through its global tracking URI
    run_id = str(read_run_id(ws))
    model_id = log_model(ws, run_id, model_files(ws, run_id))
    version = connect(ws).create_model_version(ws.params.mlflow.registered_model, source=f"models:/{model_id}",
                                               run_id=run_id, model_id=model_id)
    return str(version.version)


def _perturb(folder: Path) -> None:
    """Every ONNX file of a version with its float weights scaled by a seeded random 1 +- 30 %: the same classes
    and metadata, other answers."""
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(25)
    for path in folder.rglob("*.onnx"):
        model = onnx.load(str(path))
        for init in model.graph.initializer:
            weights = numpy_helper.to_array(init)
            if weights.dtype == np.float32 and weights.size > 16:
                scaled = weights * (1 + 0.3 * rng.standard_normal(weights.shape)).astype(np.float32)
                init.CopyFrom(numpy_helper.from_array(scaled, init.name))
        onnx.save(model, str(path))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Train, evaluate, export and promote the tiny model once (v1 champion), then register v2 and v3 from the
    same run, give v2 other weights (so the shadow's agreement measures something) and delete v3's files."""
    import mlflow
    from test_promote import FAST
    from test_train import make_workspace, run_train

    from detops.steps import evaluate, export, promote

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = make_workspace(tmp_path_factory.mktemp("serve") / "ws", *FAST)
    run_train(ws)
    evaluate.run(ws)
    export.run(ws)
    assert promote.run(ws).metrics["decision"] == "promoted"
    served = json.loads((ws.reports / "export.json").read_text(encoding="utf-8"))["deployable"]["cpu"]
    assert served.startswith(("onnx", "openvino")), f"the served variant must be an ONNX file, export chose {served}"
    assert [_register_copy(ws), _register_copy(ws)] == ["2", "3"]
    registry = Registry(ws, ws.params.mlflow.registered_model)
    files = Path(registry.client().get_model_version_download_uri(registry.name, "3").removeprefix("file://"))
    assert (files / "MLmodel").is_file()
    shutil.rmtree(files)
    _perturb(Path(registry.client().get_model_version_download_uri(registry.name, "2").removeprefix("file://")))
    mp.undo()
    yield registry
    mlflow.set_tracking_uri(None)


# --- helpers for a running server --------------------------------------------------------------------------

@dataclass
class Answer:
    sent: float
    received: float
    status: int
    version: str | None
    header: str | None
    alias: str | None = None


def _answer(client: httpx.Client, url: str, image: bytes, rid: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[Answer, dict[str, Any]]:
    sent = time.monotonic()
    extra = {**({"X-Request-Id": rid} if rid else {}), **(headers or {})}
    response = client.post(f"{url}/predict", files={"image": ("i.png", image, "image/png")}, headers=extra)
    body = response.json()
    model = body.get("model") or {}
    return Answer(sent, time.monotonic(), response.status_code, model.get("version"),
                  response.headers.get("x-model-version"), model.get("alias")), body


class Load:
    """Bounded loopback load: `clients` threads send requests one after another until `stop`, `limit` seconds or
    `max_requests` each (far above what `limit` allows one serial client here: the seconds end a run first)."""

    def __init__(self, url: str, images: list[bytes], clients: int = 3, limit: float = 150.0,
                 max_requests: int = 50_000) -> None:
        self.url, self.images, self.limit, self.max_requests = url, images, limit, max_requests
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(timeout=30) as client:
            for i in range(index, index + self.max_requests):
                if self._stop.is_set() or time.monotonic() >= deadline:
                    break
                try:
                    answer, _ = _answer(client, self.url, self.images[i % len(self.images)])
                    self.answers.append(answer)
                except (httpx.HTTPError, ValueError) as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def _model(server: ServeProcess, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/model", timeout=5, headers=headers).json())


def _serves(model: dict[str, Any], role: str) -> str | None:
    return model.get("version") if role == "champion" else (model.get("challenger") or {}).get("version")


def _wait_model(server: ServeProcess, role: str, version: str | None, timeout: float = 60.0) -> float:
    """When the server serves `version` in `role` (monotonic clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _serves(_model(server), role) == version:
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"the server did not reach {role} {version}: {_model(server)}\n{server.log()}")


def _metrics(server: ServeProcess, headers: dict[str, str] | None = None) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=5, headers=headers).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _wait_metric(server: ServeProcess, name: str, at_least: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = _metrics(server).get(name, 0.0)
        if value >= at_least:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{name} did not reach {at_least}: {_metrics(server)}\n{server.log()}")


def _assert_no_torch(server: ServeProcess) -> None:
    """The server is one process, and it has no libtorch mapped."""
    assert server.pids() == [server.process.pid]
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "libtorch" not in maps, "the server has torch loaded"


# --- hot swap under load -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_hot_swap_under_load_promotion_rollback_and_a_broken_version(registry: Registry, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from detops.cli import app

    registry.set_aliases(champion="1", previous_champion=None, challenger=None)
    images = registry.images()[:6]
    sets = (*SERVE, "serve.poll_seconds=0.5", "serve.max_batch_size=4")
    with ServeProcess(registry.ws.root, *sets, log_dir=tmp_path) as server:
        assert server.wait_ready()["model"]["version"] == "1"
        _assert_no_torch(server)
        with Load(server.url, images) as load:
            time.sleep(1.5)
            moved = registry.set_aliases(champion="2", previous_champion="1")  # what a promotion of v2 does
            swapped = _wait_model(server, "champion", "2")
            time.sleep(1.5)
            rolled = time.monotonic()
            result = CliRunner().invoke(app, ["--workspace", str(registry.ws.root), "registry", "rollback",
                                              "--reason", "v2 under load test"])
            assert result.exit_code == 0 and "champion -> version 1" in result.output, result.output
            back = _wait_model(server, "champion", "1")
            time.sleep(1.5)
            broken = registry.set_aliases(champion="3")  # its files are gone
            failures = _wait_metric(server, 'detops_serve_model_load_failures_total{role="champion",stage="download",'
                                            'version="3"}', at_least=1)
            time.sleep(1.5)
            health = httpx.get(f"{server.url}/health", timeout=5)
        metrics = _metrics(server)
        model = _model(server)
        _assert_no_torch(server)

    answers = load.answers
    assert not load.errors and all(a.status == 200 for a in answers), (load.errors, server.log())
    assert {a.version for a in answers} == {"1", "2"} and all(a.header == a.version for a in answers)
    assert all(a.version == "1" for a in answers if a.received < moved)
    assert all(a.version == "2" for a in answers if swapped < a.sent and a.received < rolled)
    assert all(a.version == "1" for a in answers if a.sent > back)
    after_broken = [a for a in answers if a.sent > broken]
    assert after_broken and all(a.version == "1" for a in after_broken)  # v3 is never served
    assert health.status_code == 200 and health.json()["model"]["version"] == "1"
    assert failures >= 1 and metrics['detops_serve_model_swaps_total{role="champion"}'] == 2
    assert model["version"] == "1" and "version 3" in model["error"]
    first_v2 = min(a.received for a in answers if a.version == "2")
    print(f"\nhot swap: {len(answers)} requests, 0 failed; alias move -> first v2 answer {first_v2 - moved:.2f} s, "
          f"-> /model on v2 {swapped - moved:.2f} s; rollback -> /model on v1 {back - rolled:.2f} s")
    assert swapped - moved < 20


# --- canary and shadow -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_canary_share_follows_the_request_id(registry: Registry, tmp_path: Path) -> None:
    registry.set_aliases(champion="1", challenger="2")
    image = min(registry.images(), key=len)
    sets = (*SERVE, "serve.canary_share=0.5", "serve.poll_seconds=1")
    with ServeProcess(registry.ws.root, *sets, log_dir=tmp_path) as server:
        server.wait_ready()
        _wait_model(server, "challenger", "2")
        with httpx.Client(timeout=30) as client:
            for rid in ("client-a", "client-b", "client-c"):
                seen = {_answer(client, server.url, image, rid)[0].version for _ in range(4)}
                expected = "2" if assign(rid, 0.5, 0.0).canary else "1"
                assert seen == {expected}

        def send(first: int) -> list[tuple[int, Answer]]:
            with httpx.Client(timeout=30) as client:
                return [(i, _answer(client, server.url, image, f"id-{i}")[0]) for i in range(first, 1000, 8)]

        with ThreadPoolExecutor(8) as pool:
            answers = [a for _, a in sorted(pair for part in pool.map(send, range(8)) for pair in part)]
        canary_id = next(f"id-{i}" for i in range(1000) if assign(f"id-{i}", 0.5, 0.0).canary)
        registry.set_aliases(challenger=None)  # no challenger any more: its share goes back to the champion
        _wait_model(server, "challenger", None)
        with httpx.Client(timeout=30) as client:
            assert _answer(client, server.url, image, canary_id)[0].version == "1"
    assert all(a.status == 200 for a in answers)
    share = sum(a.version == "2" for a in answers) / len(answers)
    assert 0.45 <= share <= 0.55, share
    assert all((a.version == "2") == assign(f"id-{i}", 0.5, 0.0).canary for i, a in enumerate(answers))
    assert all(a.alias == ("challenger" if a.version == "2" else "champion") for a in answers)


@pytest.fixture(scope="module")
def fixed_server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """Version 1 pinned (models:/NAME/1: no alias followed), an API key, a 1 MiB body limit, and no batching."""
    sets = (*SERVE, f"serve.model=models:/{registry.name}/1", "serve.max_body_mb=1", "serve.max_batch_size=1")
    with ServeProcess(registry.ws.root, *sets, env={"DETOPS_SERVE_API_KEY": KEY},
                      log_dir=tmp_path_factory.mktemp("fixed")) as server:
        server.wait_ready()
        yield server


def _detections(server: ServeProcess, images: list[bytes], headers: dict[str, str] | None = None
                ) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(timeout=30) as client:
        for image in images:
            answer, body = _answer(client, server.url, image, headers=headers)
            assert answer.status == 200, body
            out.append({"version": answer.version, "detections": body["detections"]})
            time.sleep(0.05)  # an idle moment: the shadow runs when no request waits
    return out


@pytest.mark.slow
def test_shadow_changes_no_answer_and_measures_agreement(registry: Registry, fixed_server: ServeProcess,
                                                         tmp_path: Path) -> None:
    registry.set_aliases(champion="1", challenger="2")
    images = registry.images()
    expected = _detections(fixed_server, images, {"X-API-Key": KEY})
    assert sum(len(e["detections"]) for e in expected) > 0, "the comparison needs some detections"
    with ServeProcess(registry.ws.root, *SERVE, "serve.shadow_share=1.0", log_dir=tmp_path) as server:
        server.wait_ready()
        _wait_model(server, "challenger", "2")
        assert _detections(server, images) == expected
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every shadow run or skipped (they queue behind canary requests)
            metrics = _metrics(server)
            run = metrics.get('detops_serve_shadow_requests_total{outcome="run"}', 0.0)
            skipped = metrics.get('detops_serve_shadow_requests_total{outcome="skipped"}', 0.0)
            if run + skipped >= len(images):
                break
            time.sleep(0.2)
    assert run + skipped == len(images) and run >= len(images) // 2, metrics
    assert metrics["detops_serve_shadow_agreement_count"] == run
    assert metrics["detops_serve_shadow_agreement_sum"] < run  # v2 has other weights: they disagree somewhere
    assert 1 <= metrics["detops_serve_shadow_seconds_count"] <= run  # one per shadow batch
    assert metrics['detops_serve_answers_total{role="champion",version="1"}'] == len(images)
    assert not any(name.startswith('detops_serve_answers_total{role="challenger"') for name in metrics)


# --- bad input ---------------------------------------------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: a valid header and a tiny IDAT, never decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _truncated_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


BAD = {
    "not an image": ({"files": {"image": ("a.png", b"GIF? no, plain text", "image/png")}}, 400, "not an image"),
    "truncated jpeg": ({"files": {"image": ("a.jpg", _truncated_jpeg(), "image/jpeg")}}, 400, "truncated"),
    "empty body": ({"content": b"", "headers": {"content-type": "image/jpeg"}}, 400, "body is empty"),
    "malformed json": ({"content": b'{"image": "abc', "headers": {"content-type": "application/json"}}, 400,
                       "malformed JSON"),
    "30000x30000 png header": ({"content": _png_header(30000, 30000), "headers": {"content-type": "image/png"}},
                               413, "too large"),
    "body over the limit": ({"content": b"\xff" * (1024 * 1024 + 1), "headers": {"content-type": "image/jpeg"}},
                            413, "serve.max_body_mb"),
    "chunked body over the limit": ({"content": iter([b"\xff" * 65536] * 17),  # no Content-Length: chunked
                                     "headers": {"content-type": "image/jpeg"}}, 413, "serve.max_body_mb"),
    "deeply nested json": ({"content": b"[" * 200_000, "headers": {"content-type": "application/json"}}, 400,
                           "nested too deeply"),
    "wrong content type": ({"content": b"<xml/>", "headers": {"content-type": "application/xml"}}, 415,
                           "is not accepted"),
    "missing api key": ({"files": {"image": ("a.png", _png(), "image/png")}, "key": None}, 401, "needs an API key"),
    "wrong api key": ({"files": {"image": ("a.png", _png(), "image/png")}, "key": "nope"}, 401, "wrong API key"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_clear_json_error_and_the_server_goes_on(fixed_server: ServeProcess, registry: Registry,
                                                                case: str) -> None:
    request, status, fragment = BAD[case]
    request = dict(request)
    key = request.pop("key", KEY)
    headers = {**request.pop("headers", {}), **({"X-API-Key": key} if key else {})}
    response = httpx.post(f"{fixed_server.url}/predict", headers=headers, timeout=30, **request)
    assert response.status_code == status, response.text
    body = response.json()
    assert fragment in body["detail"] and body["request_id"] == response.headers["x-request-id"]
    good = httpx.post(f"{fixed_server.url}/predict", files={"image": ("a.png", registry.images()[0], "image/png")},
                      headers={"X-API-Key": KEY}, timeout=30)
    assert good.status_code == 200 and good.json()["model"] == {"name": registry.name, "version": "1", "alias": None}


@pytest.mark.slow
def test_routes_health_model_metrics_docs_and_the_key(fixed_server: ServeProcess, registry: Registry) -> None:
    url, auth = fixed_server.url, {"X-API-Key": KEY}
    health = httpx.get(f"{url}/health", timeout=5)  # open: probes carry no key
    assert health.status_code == 200 and health.json()["status"] == "ready"
    for path in ("/model", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{url}{path}", timeout=5).status_code == 401, path
        assert httpx.get(f"{url}{path}", timeout=5, headers=auth).status_code == 200, path
    model = _model(fixed_server, auth)
    assert (model["name"], model["version"], model["alias"]) == (registry.name, "1", None)
    assert model["variant"].startswith(("onnx", "openvino")) and model["run_id"]
    assert model["thresholds"]["score_threshold"] == 0.05
    assert model["classes"] == [{"id": 3, "name": "box"}, {"id": 7, "name": "disc"}]
    schema = httpx.get(f"{url}/openapi.json", timeout=5, headers=auth).json()["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "application/json", "image/*"} <= set(schema["requestBody"]["content"])
    assert "X-Request-Id" in schema["description"] and schema["summary"] == "Detect objects in one image"
    metrics = _metrics(fixed_server, auth)
    assert any(re.match(r'detops_serve_requests_total\{route="/predict",status="200"\}', k) for k in metrics)
    loaded = f'alias="",name="{registry.name}",role="champion",variant="{model["variant"]}",version="1"'
    assert metrics[f"detops_serve_model_loaded{{{loaded}}}"] == 1
    assert metrics['detops_serve_request_seconds_count{route="/predict"}'] >= 1
    assert "capture: off (serve.capture_share is 0" in fixed_server.log_path.read_text()  # said at start


def test_capture_that_cannot_write_pauses_and_serving_goes_on(registry: Registry, tmp_path: Path) -> None:
    """monitor.landing under a regular file: the capture writer's first folder fails (ENOTDIR, as a full disk's
    ENOSPC would), capture pauses (one gap in /metrics, every image it could not keep counted; it tries again with
    back-off: test_capture.py sees it resume), and every request is still answered."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the landing folder's parent should be")
    sets = (*SERVE, f"serve.model=models:/{registry.name}/1", "serve.capture_share=1.0",
            f"monitor.landing={blocked / 'landing'}")
    images = registry.images()[:6]
    with ServeProcess(registry.ws.root, *sets, log_dir=tmp_path) as server:
        server.wait_ready()
        with httpx.Client(timeout=30) as client:
            first, _ = _answer(client, server.url, images[0])
            assert first.status == 200
            _wait_metric(server, 'detops_serve_capture_failures_total{error="ENOTDIR"}', 1)
            answers = [_answer(client, server.url, image)[0] for image in images[1:]]
        assert all(a.status == 200 and a.version == "1" for a in answers)
        _wait_metric(server, 'detops_serve_capture_images_total{outcome="unwritable"}', len(images))
        metrics = _metrics(server)
        assert metrics['detops_serve_capture_failures_total{error="ENOTDIR"}'] == 1  # one gap, however many tries
        assert metrics['detops_serve_capture_images_total{outcome="unwritable"}'] == len(images)
        assert "capture paused" in server.log()
        assert f"capture: on, 100% of requests (serve.capture_share) with the champion's answers, in batches of " \
               f"200 image(s) or 60 min, into {blocked / 'landing'}" in server.log_path.read_text()


# --- the single process: class names, follower guard, canary fallback, shutdown, code rules ---------------------

def test_agreement_compares_class_names_not_indices() -> None:
    """A challenger trained with another class order agrees fully when it finds the same objects."""
    champion = _det([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])
    reordered = _det([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 0])
    names = (["box", "disc"], ["disc", "box"])
    assert agreement(champion, reordered, names=names) == 1.0
    assert agreement(champion, champion, names=(["box", "disc"], ["disc", "box"])) == 0.0


def test_shadows_waiting_are_bounded_in_bytes(tmp_path: Path) -> None:
    """Full-size photos waiting for an idle moment: skipped once their pixels pass MAX_SHADOW_BYTES, not after a
    count (64 photos of 24 Mpx would hold 4.6 GB)."""
    from detops.serving.engine import MAX_SHADOW_BYTES, Engine, Job
    from detops.serving.metrics import metrics

    engine = Engine(_settings(tmp_path, "serve.shadow_share=1.0", challenger=True))  # not started: nothing is taken
    champion = _stand_in("champion", "1")
    photo = np.zeros((4000, 6000, 3), dtype=np.uint8)  # 72 MB
    before = metrics().shadows.labels("skipped")._value.get()
    for _ in range(3):
        engine.offer_shadow(Job("r", b"", image=photo, shadow=(champion, _det([], []))))
    assert photo.nbytes > MAX_SHADOW_BYTES and metrics().shadows.labels("skipped")._value.get() - before == 3
    small = np.zeros((640, 640, 3), dtype=np.uint8)
    engine.offer_shadow(Job("r", b"", image=small, shadow=(champion, _det([], []))))
    assert metrics().shadows.labels("skipped")._value.get() - before == 3  # a small one still waits
    assert engine.queues["challenger"].qsize() == 1


def _settings(tmp_path: Path, *sets: str, challenger: bool = False) -> Any:
    from detops.config import load_params
    from detops.registry.resolve import Reference
    from detops.serving.settings import ServeSettings

    ws = Workspace.at(tmp_path, load_params(None, list(sets)))
    return ServeSettings(ws, ws.params.serve, Reference("m", alias="champion"),
                         Reference("m", alias="challenger") if challenger else None, tmp_path, False, 1, 0.3)


@dataclass(frozen=True, eq=False)
class _Model:
    """A stand-in for a loaded model in the in-process tests (loading OpenVINO into the test process is avoided):
    one box per image, or an error."""

    info: Any
    predictor: Any
    fails: bool = False

    def predict(self, images: list[Any]) -> list[Detections]:
        if self.fails:
            raise RuntimeError("the challenger broke")
        return [_det([[1, 1, 5, 5]], [0]) for _ in images]


def _stand_in(role: str, version: str) -> Any:
    import functools
    from types import SimpleNamespace

    from detops.inference.predictor import Predictor
    from detops.serving.loaded import ModelInfo

    info = ModelInfo(role, "m", version, role, "onnx", None, "test", ((3, "box"),), {}, 32)
    predictor = SimpleNamespace(meta=SimpleNamespace(class_ids=[3], class_names=["box"]))
    predictor.to_coco = functools.partial(Predictor.to_coco, predictor)  # the real conversion to COCO results
    return _Model(info, predictor, role != "champion")


def test_a_failing_canary_is_answered_by_the_champion(tmp_path: Path) -> None:
    """The challenger's thread hands the canary batch it failed on to the champion's queue; the champion answers
    it, and nothing else of the challenger's batch is lost."""
    from detops.serving.engine import Engine, Job, collect
    from detops.serving.metrics import metrics

    engine = Engine(_settings(tmp_path, "serve.canary_share=1.0", challenger=True))
    engine.champion.current = _stand_in("champion", "1")
    engine.challenger.current = _stand_in("challenger", "2")  # type: ignore[union-attr]
    before = metrics().canary_fallbacks._value.get()
    jobs = [Job(f"r{i}", _png()) for i in range(3)]
    assert engine.answer(engine.challenger, jobs) == []  # type: ignore[arg-type]
    handed = collect(engine.queues["champion"], 8, 0.0)
    assert [job.request_id for job in handed] == ["r0", "r1", "r2"]  # type: ignore[union-attr]
    assert engine.answer(engine.champion, handed) == jobs  # type: ignore[arg-type]
    assert [job.outcome.status for job in jobs] == [200, 200, 200]  # type: ignore[union-attr]
    assert {job.outcome.headers["X-Model-Version"] for job in jobs} == {"1"}  # type: ignore[union-attr]
    assert metrics().canary_fallbacks._value.get() - before == 3


def test_a_failing_poll_is_counted_retried_and_shown_in_health(tmp_path: Path) -> None:
    """The registry unreachable (an OSError at every poll): the follower thread lives on, counts each failed poll,
    /health says so after 3 and stays ready while a model serves; the next good poll clears it."""
    from detops.serving.engine import Engine
    from detops.serving.metrics import metrics
    from detops.serving.routes import health

    engine = Engine(_settings(tmp_path, "serve.poll_seconds=0.05"))
    follower = engine.champion
    follower.current = _stand_in("champion", "1")
    state = {"down": True}

    def target() -> tuple[str, Path | None]:
        if state["down"]:
            raise OSError("registry unreachable")
        return "1", None

    follower._target = target  # type: ignore[method-assign]
    before = metrics().follow_failures.labels("champion")._value.get()
    follower.start()
    try:
        deadline = time.monotonic() + 10
        while follower.failed_polls < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        ok, body = health(engine)
        assert ok and body["status"] == "ready"
        assert "polls of models:/m@champion failed" in body["following"]["champion"]
        assert metrics().follow_failures.labels("champion")._value.get() - before >= 4
        state["down"] = False
        while follower.failed_polls and time.monotonic() < deadline:
            time.sleep(0.02)
        ok, body = health(engine)
        assert ok and "following" not in body and "errors" not in body
    finally:
        follower.stop(timeout=5)


@pytest.mark.slow
def test_sigint_stops_the_server_and_seals_the_open_capture_batch(registry: Registry, tmp_path: Path) -> None:
    """`kill -INT` to the server process alone (as a supervisor sends it): it stops within seconds, and the batch
    it was capturing into is sealed, so the drift check reads it."""
    import os
    import signal

    landing = tmp_path / "landing"
    sets = (*SERVE, f"serve.model=models:/{registry.name}/1", "serve.capture_share=1.0",
            "serve.capture_batch_size=50", f"monitor.landing={landing}")
    images = registry.images()[:3]
    with ServeProcess(registry.ws.root, *sets, log_dir=tmp_path) as server:
        server.wait_ready()
        with httpx.Client(timeout=30) as client:
            assert all(_answer(client, server.url, image)[0].status == 200 for image in images)
        sent = time.monotonic()
        os.kill(server.process.pid, signal.SIGINT)
        server.process.wait(20)
        stopped = time.monotonic() - sent
    (batch,) = list(landing.glob("capture-*"))
    assert (batch / registry.ws.params.monitor.manifest).is_file(), server.log()
    assert len(list(batch.glob("*.png"))) == len(images)
    assert stopped < 15, stopped


@pytest.mark.slow
def test_two_servers_capture_into_one_object_store_prefix_and_a_fresh_monitor_checks_each_batch_once(
        registry: Registry, s3: str, tmp_path: Path) -> None:
    """monitor.landing on S3 (moto's server on loopback): two `detops serve` replicas capture into one prefix and
    seal their batches as they stop; `detops monitor` in a fresh directory (params and the MLflow store only)
    checks both, once each; a run in another fresh directory finds nothing new, as the ledger is on the store too;
    a batch without its manifest (a writer still at work) is never read."""
    from datetime import datetime, timezone

    from test_train import TINY

    from detops.monitoring.landing import open_store

    manifest = registry.ws.params.monitor.manifest
    landing = f"{s3}/{tmp_path.name}/landing"
    sets = (*SERVE, f"serve.model=models:/{registry.name}/1", "serve.capture_share=1.0", f"monitor.landing={landing}")
    images = registry.images()[:4]
    with ServeProcess(registry.ws.root, *sets, log_dir=tmp_path) as one, \
            ServeProcess(registry.ws.root, *sets, log_dir=tmp_path) as two, httpx.Client(timeout=30) as client:
        for server in (one, two):
            server.wait_ready()
            assert all(_answer(client, server.url, image)[0].status == 200 for image in images)
    store = open_store(landing)
    sealed = store.sealed(manifest)
    assert len(sealed) == 2 and all(name.startswith("capture-") for name in sealed), (one.log(), two.log())
    for name in sealed:
        assert len(store.fs.cat_file(store.path(name, "predictions.jsonl")).splitlines()) == len(images)
    at_work = f"capture-elsewhere-1-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}"
    store.fs.pipe_file(store.path(at_work, "000001.png"), images[0])

    def monitor(root: Path) -> dict[str, Any]:
        root.mkdir()
        shutil.copy(registry.ws.root / "params.yaml", root / "params.yaml")
        sets = [*TINY, f"mlflow.tracking_uri=sqlite:///{registry.ws.root / 'mlflow.db'}", f"monitor.landing={landing}",
                "monitor.min_batch_size=2"]
        out = subprocess.run([sys.executable, "-m", "detops", "-w", str(root),
                              *(arg for item in sets for arg in ("--set", item)), "monitor"],
                             capture_output=True, text=True, cwd=root, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert not (root / ".detops" / "landing" / at_work).exists()
        return dict(json.loads((root / "reports" / "drift" / "verdict.json").read_text()))

    first = monitor(tmp_path / "first")
    assert sorted(check["batch"] for check in first["checks"]) == sealed
    assert all(check["images"] == len(images) for check in first["checks"])
    assert monitor(tmp_path / "second")["checks"] == []
    ledger = json.loads(store.fs.cat_file(store.path("ledger.json")))
    assert sorted(ledger["batches"]) == sealed


@pytest.mark.slow
def test_the_serve_image_install_serves_the_champion_from_a_tracking_server(registry: Registry,
                                                                           tmp_path: Path) -> None:
    """What the serve image installs (deployments/Dockerfile: detops without its dependencies, then pyproject's
    `serve` group), in a venv of its own: no torch, no MLflow server; its `detops serve` loads a version through an
    MLflow server on loopback (the registry's store behind it, as a cluster's replicas reach theirs), answers, and
    captures."""
    import urllib.request

    from _mlflow_server import free_port

    venv = tmp_path / "venv"
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    for command in ([sys.executable, "-m", "venv", str(venv)], [*pip, "pip>=25.1"], [*pip, "--no-deps", str(REPO)],
                    [*pip, "--group", "serve"]):
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stderr[-3000:]}"
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    assert "torch" not in listed and "\nmlflow==" not in f"\n{listed}" and "mlflow-skinny==" in listed, listed
    port = free_port()
    with (tmp_path / "mlflow.log").open("wb") as log:
        tracking = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{registry.ws.root / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port), "--workers",
             "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and tracking.poll() is None, (tmp_path / "mlflow.log").read_text()
                time.sleep(0.5)
        sets = (*SERVE, f"serve.model=models:/{registry.name}/1", "serve.capture_share=1.0",
                f"monitor.landing={tmp_path / 'landing'}")
        with ServeProcess(registry.ws.root, *sets, env={"MLFLOW_TRACKING_URI": url}, log_dir=tmp_path,
                          bin_dir=venv / "bin") as server:
            server.wait_ready()
            with httpx.Client(timeout=30) as client:
                answer, body = _answer(client, server.url, registry.images()[0])
            assert answer.status == 200 and answer.version == "1" and "detections" in body, server.log()
            _assert_no_torch(server)
        assert list((tmp_path / "landing").glob(f"capture-*/{registry.ws.params.monitor.manifest}"))
    finally:  # the server and the workers it started (its own session)
        os.killpg(tracking.pid, signal.SIGKILL)
        tracking.wait(30)

SERVING = Path(__file__).resolve().parents[1] / "src" / "detops" / "serving"


def _serving_code_lines() -> int:
    """Lines of code of src/detops/serving (docstrings, comments and blank lines not counted); asserts on the way
    that no module imports a name starting with `_` from another package."""
    import ast
    import tokenize

    code_lines = 0
    for path in sorted(SERVING.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        docstrings: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                        first.value.value, str):
                    docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
            if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("detops") and node.level == 0:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name}:{node.lineno} imports {private} from {node.module}"
            if isinstance(node, ast.Import):
                assert not any(part.startswith("_") for a in node.names for part in a.name.split(".")[1:]), path
        with path.open("rb") as fh:
            lines = {tok.start[0] for tok in tokenize.tokenize(fh.readline)
                     if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING,
                                         tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)}
        code_lines += len(lines - docstrings)
    return code_lines


def test_serving_imports_no_private_names_of_other_packages() -> None:
    """A framework's private name breaks on its next release (LitServe's `_SENTINEL_VALUE` once did here)."""
    _serving_code_lines()


def test_serving_is_at_most_1000_lines_of_code() -> None:
    code_lines = _serving_code_lines()
    assert code_lines <= 1000, f"src/detops/serving has {code_lines} lines of code"
