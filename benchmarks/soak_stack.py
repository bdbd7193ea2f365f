"""The servers of the soak (benchmarks/soak.py), all real, all on loopback, each restartable on its own port (as a
Kubernetes Service keeps its address when its pod is replaced), all stopped by `Stack.close()` whatever happened.

- S3: moto's server (`ThreadedMotoServer`, as dvc-s3's tests run it), and in front of it, for the serving replicas
  only, a gate that can refuse writes (`S3Gate.refuse_writes`): the capture prefix made unwritable, as an expired
  credential or a full bucket quota would, while the model downloads and everything else go on.
- MLflow on PostgreSQL (tests/_mlflow_server.py) with its artifacts on that S3, restartable on its port.
- A Prefect server and a process worker (`prefect worker start --pool`), the worker restartable.
- Label Studio from its own venv (tests/_label_studio_server.py), restartable on its port.
- `detops serve` replicas, restartable on their ports.

Every process starts in a session of its own; `Stack.leftovers()` lists any process of those sessions still alive.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' server helpers: the same servers the tests start

import _label_studio_server  # noqa: E402
import _mlflow_server  # noqa: E402

BIN = Path(sys.executable).parent
BUCKET = "detops-soak"
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
QUIET = {"DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "PREFECT_UI_ENABLED": "false"}


def free_port() -> int:
    return _mlflow_server.free_port()


def session_pids(leader: int) -> list[int]:
    """Every live process whose session is `leader`'s (a server and all it started)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == leader and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def rss_mib(leader: int) -> float:
    """Resident memory of a session's processes, summed (MiB)."""
    total = 0
    for pid in session_pids(leader):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process that ended meanwhile
            total += sum(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                         if line.startswith("VmRSS"))
    return total / 1024


def kill_session(leader: int, sig: int = signal.SIGKILL) -> None:
    for pid in session_pids(leader):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def healthy(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, timeout=3, headers=headers).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(condition: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@dataclass
class Service:
    """A server process started by `command`, in its own session, logging to `log`, restartable as it was."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path
    health: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    peak_rss: float = 0.0
    leaders: list[int] = field(default_factory=list)  # every session it ever had, to check none is left

    def start(self, timeout: float = 180) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        self.leaders.append(self.process.pid)
        if health := self.health:
            process = self.process
            wait_for(lambda: process.poll() is not None or healthy(health), timeout, f"{self.name} to answer {health}",
                     self.log)
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        """SIGKILL to the whole session: a machine gone, nothing shut down."""
        if self.process is not None:
            kill_session(self.process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for whatever of the session is left."""
        if self.process is not None and self.process.poll() is None:
            kill_session(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        if self.process is not None:
            self.kill()

    def sample_rss(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.peak_rss = max(self.peak_rss, rss_mib(self.process.pid))


class S3Gate:
    """A reverse proxy in front of moto: requests pass through unchanged, except that while `refusing` every write
    (PUT, POST, DELETE) gets S3's 403 AccessDenied."""

    def __init__(self, upstream_port: int) -> None:
        self.refusing = False
        self.refused = 0
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if gate.refusing and self.command in ("PUT", "POST", "DELETE"):
                    gate.refused += 1
                    error = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
                             b"<Message>Access Denied</Message></Error>")
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Stack:
    """Everything the soak starts, in start order; `close()` stops it all, last started first."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services: dict[str, Service] = {}
        self.closers: list[Callable[[], None]] = []
        self.s3 = ""
        self.gate: S3Gate | None = None
        self.mlflow: _mlflow_server.Server | None = None
        self.label_studio: _label_studio_server.Server | None = None
        self.extra_leaders: list[int] = []  # the sessions of servers started outside `services`
        self.peaks: dict[str, float] = {}  # peak RSS (MiB) of the servers started outside `services`

    # ------------------------------------------------------------------ S3, MLflow, Label Studio
    def start_s3(self) -> str:
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        moto.start()
        self.closers.append(moto.stop)
        self.s3 = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=self.s3, **{k.lower(): v for k, v in S3_ENV.items()
                                                      if k != "AWS_DEFAULT_REGION"},
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        self.gate = S3Gate(port)
        self.closers.append(self.gate.close)
        return self.s3

    def start_mlflow(self) -> str:
        server = _mlflow_server.start(f"s3://{BUCKET}/mlartifacts", {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": self.s3})
        self.closers.append(server.stop)
        self.mlflow = server
        self.extra_leaders.append(server.process.pid)
        return server.url

    def restart_mlflow(self) -> float:
        """Kill the MLflow server (not its database) and start it again on the same port; seconds it was down."""
        assert self.mlflow is not None
        server = self.mlflow
        command = list(server.process.args)
        started = time.monotonic()
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        with (server.root / "mlflow.log").open("ab") as log:
            server.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **QUIET, **S3_ENV, "MLFLOW_S3_ENDPOINT_URL": self.s3})
        self.extra_leaders.append(server.process.pid)
        wait_for(lambda: healthy(f"{server.url}/health"), 120, "MLflow to come back", server.root / "mlflow.log")
        return time.monotonic() - started

    def start_label_studio(self, document_root: Path, port: int | None = None) -> _label_studio_server.Server:
        data = self.root / "label-studio"
        server = _label_studio_server.start(data, document_root, port=port)
        self.label_studio = server
        self.extra_leaders.append(server.process.pid)
        return server

    def stop_label_studio(self) -> None:
        if self.label_studio is not None:
            self.label_studio.stop()

    # ------------------------------------------------------------------ generic services
    def add(self, name: str, command: list[str], env: dict[str, str], cwd: Path, health: str | None = None,
            timeout: float = 180) -> Service:
        service = Service(name, command, env, self.root / f"{name}.log", cwd, health)
        self.services[name] = service
        service.start(timeout)
        return service

    def sample_rss(self) -> dict[str, float]:
        for service in self.services.values():
            service.sample_rss()
        for name, server in (("mlflow", self.mlflow), ("label-studio", self.label_studio)):
            if server is not None and server.process.poll() is None:
                self.peaks[name] = max(self.peaks.get(name, 0.0), rss_mib(server.process.pid))
        return {**self.peaks, **{name: s.peak_rss for name, s in self.services.items()}}

    def leftovers(self) -> list[int]:
        leaders = [*self.extra_leaders, *(pid for s in self.services.values() for pid in s.leaders)]
        return sorted(pid for leader in leaders for pid in session_pids(leader))

    def close(self) -> None:
        for service in reversed(list(self.services.values())):
            with contextlib.suppress(Exception):
                service.stop()
        if self.label_studio is not None:
            with contextlib.suppress(Exception):
                self.label_studio.stop()
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                closer()
