"""A real Label Studio server on loopback (SQLite, legacy token on), for the label round trip's tests.

Label Studio's pins clash with Prefect's, so it runs from its own Python 3.11 venv, made once with pip and cached in
~/.cache/detops-tests/label-studio-<version> (DETOPS_TEST_CACHE moves it); a file lock keeps parallel sessions from
building it twice, and a marker file written last tells a finished venv from a half-built one. `start()` raises
`Unavailable` only when the venv cannot be built (no Python 3.11, no PyPI) or the server does not come up; the
caller skips, or fails where DETOPS_REQUIRE_LABEL_STUDIO=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

VERSION = "1.23.2"
USER, PASSWORD, TOKEN = "labeller@example.com", "detops-test-password", "0123456789abcdef0123456789abcdef01234567"
REQUIRE_ENV = "DETOPS_REQUIRE_LABEL_STUDIO"
START_TIMEOUT_S = 360  # a fresh data dir runs its migrations first: minutes on a busy 2-core machine


class Unavailable(RuntimeError):
    """Label Studio cannot be installed or started here; the message says why."""


@dataclass
class Server:
    url: str
    token: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


def cache_root() -> Path:
    return Path(os.environ.get("DETOPS_TEST_CACHE", Path.home() / ".cache" / "detops-tests"))


def python311() -> str:
    """Label Studio 1.23 supports Python 3.10-3.12; the tests pin 3.11 (what it was checked on)."""
    if sys.version_info[:2] == (3, 11):
        return str(getattr(sys, "_base_executable", sys.executable))
    found = shutil.which("python3.11")
    if not found:
        raise Unavailable("no python3.11 on PATH to build Label Studio's own venv")
    return found


def label_studio_venv() -> Path:
    """The cached venv's `label-studio` executable, built under a file lock when missing or half-built."""
    from filelock import FileLock

    root = cache_root() / f"label-studio-{VERSION}"
    venv, ready = root / "venv", root / "READY"
    exe = venv / "bin" / "label-studio"
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock", timeout=900):
        if ready.is_file() and exe.is_file():
            return exe
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        log = root / "install.log"
        with log.open("wb") as out:
            steps = [[python311(), "-m", "venv", str(venv)],
                     [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", f"label-studio=={VERSION}"]]
            for step in steps:
                try:
                    subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900)
                except (subprocess.SubprocessError, OSError) as exc:
                    tail = log.read_text(errors="replace")[-1500:]
                    raise Unavailable(f"cannot build Label Studio {VERSION}'s venv ({exc}); {log}:\n{tail}") from None
        ready.write_text(VERSION)
        return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, document_root: Path, port: int | None = None) -> Server:
    """A server with one user and its legacy token, serving local files from below `document_root` (on `port`:
    a restart keeps its address)."""
    exe = label_studio_venv()
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_USERNAME": USER,
           "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "COLLECT_ANALYTICS": "false",
           "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
    with (data_dir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data_dir), "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", TOKEN, data_dir, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"label-studio exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/api/projects/", headers={"Authorization": f"Token {TOKEN}"},
                         timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1)
    server.stop()
    raise Unavailable(f"label-studio did not answer within {START_TIMEOUT_S} s:\n{server.log()}")


@contextmanager
def running(data_dir: Path, document_root: Path) -> Iterator[Server]:
    """A started server, stopped on exit; the test skips when Label Studio cannot run here (fails where required)."""
    from _requirements import require_or_skip

    try:
        server = start(data_dir, document_root)
    except Unavailable as exc:
        require_or_skip(False, f"Label Studio cannot run here: {exc}", REQUIRE_ENV)
        raise
    try:
        yield server
    finally:
        server.stop()
