"""A real `detops serve` process on loopback for the serving tests: started in its own session (so anything it
starts can be found, inspected and killed), waited for on /health, always stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _mlflow_server import free_port

BIN = Path(sys.executable).parent


class ServeProcess:
    """`detops -w ROOT --set ... serve --port PORT` with its log in a file."""

    def __init__(self, root: Path, *sets: str, env: dict[str, str] | None = None, log_dir: Path | None = None,
                 bin_dir: Path = BIN) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or root) / f"serve-{self.port}.log"
        child_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DETOPS_SERVE_API_KEY")}
        child_env.update({"DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})})
        args = [arg for item in sets for arg in ("--set", item)]
        command = [str(bin_dir / "detops"), "-w", str(root), *args, "serve", "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=child_env,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 180.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"detops serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(f"{self.url}/health", timeout=2, headers=headers)
                if response.status_code == 200:
                    return dict(response.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"detops serve was not ready within {timeout:.0f} s:\n{self.log()}")

    def pids(self) -> list[int]:
        """Every live process of the server's session (one: the server)."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == self.process.pid:  # field 6 of stat: the session id
                out.append(int(entry.name))
        return sorted(out)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL for anything of the session left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.is_file() else ""

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
