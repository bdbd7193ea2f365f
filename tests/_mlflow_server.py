"""A real `mlflow server` on loopback with a PostgreSQL backend store, for the registry's integration tests.

PostgreSQL is Debian's `postgresql` package (`.ci/run` installs it when missing). Postgres refuses to run as
root, and CI runs as root, so the cluster is created and started as the `postgres` user, in a temporary folder
with its socket in /tmp and on a free port. `start()` raises `Unavailable` only when the binaries are missing or
the cluster cannot start; with `DETOPS_REQUIRE_POSTGRES=1` (set by `.ci/run`) the caller fails instead of skipping.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class Unavailable(RuntimeError):
    """PostgreSQL cannot be found or started here; the message says why."""


@dataclass
class Server:
    """A running PostgreSQL cluster and the MLflow server that stores its runs and registry in it."""

    url: str
    database: str
    root: Path
    bindir: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:  # a throwaway server: nothing to shut down gracefully
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        _as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
                     check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "mlflow.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bindir() -> Path:
    found = shutil.which("pg_ctl")
    candidates = [found] if found else sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if not candidates:
        raise Unavailable("PostgreSQL is not installed (apt-get install -y postgresql; .ci/run does it)")
    return Path(os.path.realpath(candidates[0])).parent


def _as_postgres(cmd: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `cmd` as the `postgres` user when we are root (Postgres refuses root), else as ourselves."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise Unavailable(f"{' '.join(cmd[:2])} failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")
    return done


def start_postgres(root: Path) -> tuple[Path, int]:
    """initdb + start a throwaway cluster under `root` (owned by `postgres` when we are root); returns its port."""
    bindir = postgres_bindir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    root.chmod(0o755)
    data, sock = root / "data", root / "sock"
    _as_postgres(["mkdir", "-p", str(sock)])
    _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--no-sync"])
    port = free_port()
    options = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
               " -c full_page_writes=off")
    _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-t", "60",
                  "-o", options, "start"])
    _as_postgres([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"])
    return bindir, port


def start(artifacts_destination: str | None = None, env: dict[str, str] | None = None) -> Server:
    """PostgreSQL, then `mlflow server` on it (proxied artifacts in the temp folder, or at
    `artifacts_destination`: s3://... with `env` naming its endpoint), ready to answer."""
    root = Path(tempfile.mkdtemp(prefix="detops-pg-", dir="/tmp"))
    try:
        bindir, pg_port = start_postgres(root)
    except (Unavailable, OSError, subprocess.SubprocessError, KeyError) as exc:  # KeyError: no postgres user
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(str(exc)) from exc
    database = f"postgresql+psycopg2://postgres@127.0.0.1:{pg_port}/mlflow"
    port = free_port()
    artifacts = root / "artifacts"
    artifacts.mkdir()
    with (root / "mlflow.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database,
             "--artifacts-destination", artifacts_destination or str(artifacts), "--host", "127.0.0.1",
             "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", **(env or {})},
        )
    server = Server(f"http://127.0.0.1:{port}", database, root, bindir, process)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_tail = server.log()
            server.stop()
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log_tail}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    log_tail = server.log()
    server.stop()
    raise RuntimeError(f"mlflow server did not answer /health within 120 s:\n{log_tail}")
