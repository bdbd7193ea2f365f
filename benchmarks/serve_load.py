"""Benchmark: `detops serve` under bounded loopback load, next to its anchors, on one machine.

For each image set (the demo's sample images; BCCD photos from ../shared when present) and each concurrency
(1, 8, 32): a fixed number of requests per cell (then it stops), sent by an async aiohttp client over loopback
(--client httpx: the one used before, see CLIENT);
throughput (images/s), p50 / p95 / p99 latency and failed requests, for
  (a) `detops serve` of the champion, batching on (serve.max_batch_size, default 8) and off (max batch 1);
  (b) `mlflow models serve` of the same registered version (the anchor: --env-manager local, one worker);
  (c) the in-process predictor (`detops.inference.load_predictor`) on the very file the server serves, batch 1 and 8;
  (d) a no-op LitServe endpoint (benchmarks/noop_litserve.py; the same images as JSON base64, which is what LitServe
      itself parses in `detops serve` too; no model: the framework's own ceiling on this machine).
The cells run in interleaved rounds (--rounds: every target in turn, the idle servers paused with SIGSTOP), so a
drift in the machine's background load hits every target alike; each cell's rounds are merged.
Then, on the batching server under load at concurrency 8: a promotion (champion -> a second version) and a
rollback (`detops registry rollback`, in process): failed requests (target 0), the seconds from each alias move to
the first answer by the new version, and which versions answered. Server RSS per process. Prints markdown tables,
the machine and its CPU flags.
Per server, one summary row (the issue's acceptance): ready after start (the process started until /health 200,
until its first answer, and until it is idle: work after ready such as compiling other batch sizes is over; the load
starts only then), PSS summed over the server's processes (/proc/<pid>/smaps_rollup: shared pages counted once)
at steady state after the load and its peak during the swap, c=8 img/s against the predictor's batch 8 and against
`mlflow models serve`, c=1 p99. `--old-src DIR` adds another `detops serve` row run from the sources in DIR (a git
worktree of an older commit: `git worktree add --detach /tmp/old <commit>`; PYTHONPATH=DIR/src), so the old design
and the new one are measured in one run on one machine.

It needs a workspace where the demo ran (`make demo` in the repository leaves mlflow.db, mlartifacts/, models/ and
reports/export.json there; or any copy where `python -m flows.retrain` ran) and a registered champion:

    make demo                                            # once: the workspace is the repository
    .venv/bin/python benchmarks/serve_load.py [--workspace DIR] [--requests 200] [--images 40]

The workspace's registry is never changed: the benchmark works on a copy of its mlflow.db in a temporary folder
(the artifacts stay where they are, read only), registers the second version there and moves the aliases there.
Client and servers share the machine's cores: on a small CPU the client's own cost is part of every number.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The load client. On loopback it shares the servers' cores: httpx's async client spent 1.9-2.2 ms of CPU per
# request at c=8 on the 2-core CI machine, aiohttp's 0.36-0.43 ms (a no-op server, 120 kB bodies), so with httpx a
# quarter of a core went to the client in every served cell and none in the predictor's. --client httpx measures
# as this benchmark did before 2026-12-07.
CLIENT = "aiohttp"


# ---------------------------------------------------------------------------------------------------- load driver
@dataclass(frozen=True)
class Payload:
    """One request body, encoded once up front so the client spends nothing per request on encoding."""

    body: bytes
    content_type: str
    images: int = 1


def multipart_payload(data: bytes, filename: str, field_name: str = "image") -> Payload:
    """`multipart/form-data` with one file field, as `curl -F image=@a.jpg` sends it."""
    boundary = uuid.uuid4().hex
    mime = "image/png" if filename.lower().endswith(".png") else "image/jpeg"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
            f"Content-Type: {mime}\r\n\r\n").encode()
    return Payload(head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")


def json_payload(data: bytes) -> Payload:
    """`{"image": base64}`."""
    return Payload(json.dumps({"image": base64.b64encode(data).decode()}).encode(), "application/json")


def mlflow_payload(images: Sequence[bytes]) -> Payload:
    """MLflow's scoring protocol: a DataFrame with one binary column `image`, base64 in `dataframe_split`."""
    rows = [[base64.b64encode(data).decode()] for data in images]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
    return Payload(body, "application/json", images=len(images))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default); nan if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class LoadResult:
    """What one cell of load did: every request sent is either ok (2xx) or failed (any other status, or no answer)."""

    concurrency: int
    sent: int = 0
    ok: int = 0
    failed: int = 0
    images: int = 0  # images answered (a request may carry several)
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # of the ok requests
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)  # "200", "503", "ConnectError"
    versions: collections.Counter[str] = field(default_factory=collections.Counter)  # X-Model-Version of ok answers
    max_in_flight: int = 0

    @property
    def throughput(self) -> float:
        """Images answered per second of the cell's wall time."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


Answer = Callable[[float, float, int, "str | None"], None]  # (started, finished, status, version): perf_counter s


async def drive(url: str, payloads: Sequence[Payload], *, concurrency: int, requests: int, warmup: int = 0,
                headers: dict[str, str] | None = None, timeout: float = 120.0, deadline_s: float | None = None,
                stop: threading.Event | None = None, on_answer: Answer | None = None,
                version_header: str = "X-Model-Version", client: str | None = None) -> LoadResult:
    """POST `requests` requests to `url`, at most `concurrency` in flight, cycling through `payloads`; then stop.

    `warmup` requests go first on the same connections and are not counted. Bounded three ways: the request count,
    `deadline_s` seconds of wall time, and `stop` (set from another thread). A request that gets no answer
    (refused, reset, timed out) counts as failed, like a non-2xx status. `client`: aiohttp (the default, CLIENT)
    or httpx, which costs about 4x the CPU per request on the cores the servers share (`--client`).
    """
    import aiohttp
    import httpx

    if concurrency < 1 or requests < 0 or warmup < 0 or not payloads:
        raise ValueError("concurrency >= 1, requests >= 0, warmup >= 0 and at least one payload are needed")
    result = LoadResult(concurrency=concurrency)
    issued = 0
    in_flight = 0
    end: float | None = None
    use_httpx = (client or CLIENT) == "httpx"

    async def post(session: Any, payload: Payload) -> tuple[int, str | None]:
        sent = {"Content-Type": payload.content_type, **(headers or {})}
        if use_httpx:
            response = await session.post(url, content=payload.body, headers=sent)
            return response.status_code, response.headers.get(version_header)
        async with session.post(url, data=payload.body, headers=sent) as answer:
            await answer.read()
            return answer.status, answer.headers.get(version_header)

    async def worker(session: Any, count: int, record: bool) -> None:
        nonlocal issued, in_flight
        while issued < count and (end is None or time.perf_counter() < end) and not (stop and stop.is_set()):
            payload = payloads[issued % len(payloads)]
            issued += 1
            in_flight += 1
            if record:
                result.sent += 1
                result.max_in_flight = max(result.max_in_flight, in_flight)
            t0 = time.perf_counter()
            version = None
            try:
                status, version = await post(session, payload)
                key = str(status)
            except (httpx.HTTPError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, key = 0, type(exc).__name__
            finally:
                in_flight -= 1
            t1 = time.perf_counter()
            if not record:
                continue
            result.statuses[key] += 1
            if 200 <= status < 300:
                result.ok += 1
                result.images += payload.images
                result.latencies_ms.append((t1 - t0) * 1000)
                if version is not None:
                    result.versions[version] += 1
            else:
                result.failed += 1
            if on_answer is not None:
                on_answer(t0, t1, status, version)

    if use_httpx:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        session: Any = httpx.AsyncClient(timeout=timeout, limits=limits)
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                        timeout=aiohttp.ClientTimeout(total=timeout))
    async with session:
        if warmup:
            await asyncio.gather(*(worker(session, warmup, False) for _ in range(concurrency)))
            issued = 0
        started = time.perf_counter()
        end = None if deadline_s is None else started + deadline_s
        await asyncio.gather(*(worker(session, requests, True) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def run_load(url: str, payloads: Sequence[Payload], **options: Any) -> LoadResult:
    """`drive` in a fresh event loop."""
    return asyncio.run(drive(url, payloads, **options))


def merge(results: Sequence[LoadResult]) -> LoadResult:
    """Several runs of one cell (rounds) as one: counts and wall time added, latencies pooled."""
    out = LoadResult(concurrency=results[0].concurrency)
    for r in results:
        out.sent, out.ok, out.failed, out.images = out.sent + r.sent, out.ok + r.ok, out.failed + r.failed, \
            out.images + r.images
        out.seconds += r.seconds
        out.latencies_ms.extend(r.latencies_ms)
        out.statuses.update(r.statuses)
        out.versions.update(r.versions)
        out.max_in_flight = max(out.max_in_flight, r.max_in_flight)
    return out


# ------------------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server process started here in its own process group, ready once `ready_url` answers 200; stopped (the
    whole group: its workers too) on exit."""

    def __init__(self, name: str, command: list[str], ready_url: str, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, log: Path, timeout: float = 300.0,
                 first: tuple[str, Payload] | None = None) -> None:
        self.name, self.command, self.ready_url, self.env, self.cwd = name, command, ready_url, env, cwd
        self.log_path, self.timeout, self.first = log, timeout, first
        self.port = urlsplit(ready_url).port
        self.process: subprocess.Popen[bytes] | None = None
        self.started_s = 0.0  # process start -> ready_url 200
        self.answered_s: float | None = None  # process start -> the first 200 answer to `first` (path, payload)
        self.idle_s: float | None = None  # process start -> idle after ready (settle())

    def __enter__(self) -> Server:
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = started + self.timeout
        while time.perf_counter() < deadline:
            if (code := self.process.poll()) is not None:
                self.stop()
                raise RuntimeError(f"{self.name} exited with {code} before it was ready; its "
                                   f"log ({self.log_path}) ends:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.ready_url, timeout=5).status_code == 200:
                    self.started_s = time.perf_counter() - started
                    self.answered_s = self.first_answer(started, deadline)
                    self.idle_s = self.settle(started)  # measured at steady state, not while it still compiles
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {self.timeout:.0f} s; its log ends:\n{self.log_tail()}")

    def first_answer(self, started: float, deadline: float) -> float | None:
        """Seconds from the process start to the first 200 answer to `self.first` (retried while not 200)."""
        import httpx

        if self.first is None:
            return None
        path, payload = self.first
        url = f"http://127.0.0.1:{self.port}{path}"
        while time.perf_counter() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.post(url, content=payload.body, headers={"Content-Type": payload.content_type},
                                    timeout=60)
                if answer.status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.05)
        return None

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT to the group (LitServe and uvicorn shut down gracefully on it), SIGKILL to what is left."""
        process = self.process
        if process is None:
            return
        self.resume()
        self.process = None
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=wait)
                # The leader is gone; its group may still hold workers: give them the same signal's chance.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 0)
                    time.sleep(1.0)
                    continue
                return
            except subprocess.TimeoutExpired:
                continue

    def pause(self) -> None:
        """SIGSTOP the whole group: an idle server costs no CPU while another is measured (LitServe's batching loop
        and the alias watch poll even when no request comes)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)

    def rss(self) -> list[tuple[int, str, float]]:
        """(pid, role, RSS MiB) of the server and every process under it."""
        import psutil

        if self.process is None:
            return []
        root = psutil.Process(self.process.pid)
        out = []
        forked = 0
        for proc in [root, *sorted(root.children(recursive=True), key=lambda p: p.create_time())]:
            with contextlib.suppress(psutil.Error):
                role = process_role(proc, root, forked)
                forked += role.endswith("(forked)")
                out.append((proc.pid, role, proc.memory_info().rss / 2**20))
        return out


    def pids(self) -> list[int]:
        """The server's process and every process under it."""
        import psutil

        if self.process is None:
            return []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.process.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        return []

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's processes (user + system)."""
        import psutil

        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    def settle(self, started: float, limit: float = 60.0, every: float = 0.5) -> float:
        """Wait until the server is idle (under 10 % of a core for two samples in a row: work it does after
        ready, such as compiling its other batch sizes, is over), at most `limit` s; the seconds from `started`."""
        quiet, last = 0, self.cpu_seconds()
        deadline = time.perf_counter() + limit
        while quiet < 2 and time.perf_counter() < deadline:
            time.sleep(every)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - last < 0.1 * every else 0
            last = now
        return time.perf_counter() - started

    def pss(self) -> float:
        """PSS in MiB summed over the server's processes (shared pages counted once across them)."""
        return sum(pss_mib(pid) for pid in self.pids())


def pss_mib(pid: int) -> float:
    """A process's proportional set size from /proc/<pid>/smaps_rollup, MiB; 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="utf-8")
    except OSError:
        return 0.0
    kib = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)
    return kib / 1024


class PeakPss:
    """The highest summed PSS of a server, sampled every `every` seconds in a thread while the block runs."""

    def __init__(self, server: Server, every: float = 0.25) -> None:
        self.server, self.every, self.peak = server, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pss-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.pss())
            self._stop.wait(self.every)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def process_role(proc: Any, root: Any, forked_before: int) -> str:
    """A readable name for one process of a server's tree (multiprocessing children share their parent's command
    line). LitServe forks its manager before its API servers, so the first forked child is the manager."""
    cmdline = " ".join(proc.cmdline())
    if proc.pid == root.pid:
        return "main"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "multiprocessing.spawn" in cmdline or "spawn_main" in cmdline:
        return "inference worker (spawned)"
    if cmdline == " ".join(root.cmdline()):
        return "manager (forked)" if forked_before == 0 else "API server (forked)"
    return cmdline[:60]


def noop_command(port: int) -> list[str]:
    """The no-op LitServe endpoint (benchmarks/noop_litserve.py) on `port`."""
    return [sys.executable, str(Path(__file__).resolve().parent / "noop_litserve.py"), str(port)]


# ------------------------------------------------------------------------------------------------------- machine
KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                "amx_int8", "amx_bf16")  # the flags that decide ONNX Runtime's and OpenVINO's kernels


def cpu_table() -> str:
    """The CPU as /proc/cpuinfo names it, its usable cores and which kernel-deciding flags it has."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        text = ""
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}
    present = set(fields.get("flags", "").split())
    model = fields.get("model name", "unknown")
    have = [f for f in KERNEL_FLAGS if f in present]
    lacks = [f for f in KERNEL_FLAGS if f not in present]
    return ("| CPU | usable cores | flags present | flags absent |\n|---|---|---|---|\n"
            f"| {model} | {len(os.sched_getaffinity(0))} | {' '.join(have) or 'none'} | {' '.join(lacks) or 'none'} |")


def machine_line() -> str:
    import platform

    return (f"{platform.node()}, {platform.machine()}, Python {platform.python_version()}; "
            f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


# --------------------------------------------------------------------------------------------------------- images
def image_sets(workspace: Path, source: str, shared: Path, count: int) -> dict[str, list[tuple[str, bytes]]]:
    """name -> [(file name, bytes)]: the demo's sample images; BCCD photos where ../shared has them."""
    sets: dict[str, list[tuple[str, bytes]]] = {}
    demo = sorted(p for p in (workspace / source).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not demo:
        raise SystemExit(f"no images under {workspace / source} (import.source): run the demo in {workspace} first")
    sets["demo sample"] = [(p.name, p.read_bytes()) for p in demo[:count]]
    bccd = shared / "datasets" / "bccd" / "BCCD" / "JPEGImages"
    if bccd.is_dir():
        photos = sorted(p for p in bccd.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        sets["BCCD photos"] = [(p.name, p.read_bytes()) for p in photos[:count]]
    else:
        print(f"BCCD photos skipped: {bccd} is absent (only the developers' checkout has ../shared; DETOPS_SHARED "
              "names another place)")
    return sets


# --------------------------------------------------------------------------------------------- the registry copy
@dataclass
class Registry:
    """A copy of the workspace's MLflow store: the benchmark registers and moves aliases here, never there."""

    root: Path
    uri: str
    name: str
    champion: str
    params_file: Path

    def workspace(self) -> Any:
        from detops.config import load_params
        from detops.workspace import Workspace

        return Workspace.at(self.root, load_params(self.params_file, [f"mlflow.tracking_uri={self.uri}"]))

    def client(self) -> Any:
        from detops.tracking import mlflow_client

        return mlflow_client(self.workspace())


def copy_registry(workspace: Path, root: Path) -> Registry:
    from detops.config import load_params

    db = workspace / "mlflow.db"
    if not db.is_file():
        raise SystemExit(f"no {db}: run the demo in {workspace} first (`make demo` there), or pass --workspace")
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(db, root / "mlflow.db")
    shutil.copy(workspace / "params.yaml", root / "params.yaml")
    params = load_params(root / "params.yaml", [])
    registry = Registry(root, f"sqlite:///{root / 'mlflow.db'}", params.mlflow.registered_model, "",
                        root / "params.yaml")
    # This process works on the copy only; MLflow's registry store also builds default clients of its own
    # (create_model_version of a logged model), which read the environment.
    os.environ["MLFLOW_TRACKING_URI"] = registry.uri
    client = registry.client()
    try:
        registry.champion = str(client.get_model_version_by_alias(registry.name, params.promote.alias).version)
    except Exception as exc:  # an MlflowException of any kind: no model, no alias
        raise SystemExit(f"no {params.promote.alias!r} of {registry.name!r} in {db}: the demo's promote step "
                         f"registers one ({exc})") from exc
    return registry


def add_version(registry: Registry) -> str:
    """A second version of the champion's own files (another version number, same model): a promotion the
    server must follow all the same (download, load, warm-up, switch)."""
    client = registry.client()
    champion = client.get_model_version(registry.name, registry.champion)
    version = client.create_model_version(registry.name, champion.source, run_id=champion.run_id,
                                          description="serve_load benchmark: the champion's files again")
    return str(version.version)


def served_file(registry: Registry, dst: Path) -> Path:
    """The file the registered champion serves (the deployable variant), as `detops serve` downloads it."""
    from detops.registry.files import download_version_file

    return download_version_file(registry.client(), registry.name, registry.champion, None, dst)


# ------------------------------------------------------------------------------------------------------- results
@dataclass
class Row:
    server: str
    images: str
    setting: str  # "c=8", "batch 8"
    result: LoadResult

    def cells(self) -> list[str]:
        r = self.result
        return [self.server, self.images, self.setting, str(r.sent), str(r.failed), f"{r.throughput:.1f}",
                f"{r.p(50):.1f}", f"{r.p(95):.1f}", f"{r.p(99):.1f}"]


def markdown(rows: Sequence[Row]) -> str:
    head = "| server | images | concurrency | requests (calls) | failed | img/s | p50 ms | p95 ms | p99 ms |\n" \
           "|---|---|---|---|---|---|---|---|---|\n"
    return head + "\n".join("| " + " | ".join(row.cells()) + " |" for row in rows)


def find(rows: Sequence[Row], server: str, images: str, setting: str) -> LoadResult | None:
    return next((r.result for r in rows if (r.server, r.images, r.setting) == (server, images, setting)), None)


def target_lines(rows: Sequence[Row], sets: Sequence[str]) -> list[str]:
    """The issue's targets, each with its measured ratio."""
    out = []
    for images in sets:
        serve8 = find(rows, SERVE_BATCH, images, "c=8")
        serve1 = find(rows, SERVE_BATCH, images, "c=1")
        pred8 = find(rows, PREDICTOR, images, "batch 8")
        pred1 = find(rows, PREDICTOR, images, "batch 1")
        mlflow8 = find(rows, MLFLOW, images, "c=8")
        if serve8 and pred8:  # issue 25: 75 % on the demo images, 85 % on photos
            share, goal = serve8.throughput / pred8.throughput, 0.75 if "demo" in images else 0.85
            out.append(f"{images}: detops serve at c=8 is {share:.0%} of the in-process predictor's batch-8 img/s "
                       f"(target >= {goal:.0%}): {'met' if share >= goal else 'NOT met'}")
        if serve8 and mlflow8:
            ratio = serve8.throughput / mlflow8.throughput
            out.append(f"{images}: detops serve at c=8 is {ratio:.2f}x `mlflow models serve` (target >= 1.5x): "
                       f"{'met' if ratio >= 1.5 else 'NOT met'}")
        if serve1 and pred1:
            bound = pred1.p(50) + 10
            out.append(f"{images}: detops serve p99 at c=1 {serve1.p(99):.1f} ms vs the predictor's batch-1 p50 + 10 ms"
                       f" = {bound:.1f} ms: {'met' if serve1.p(99) <= bound else 'NOT met'}")
    return out


@dataclass
class Summary:
    """What the issue's acceptance asks per server, beside the load table."""

    processes: int = 0
    ready_s: float | None = None  # process start -> ready (/health or /ping 200)
    answered_s: float | None = None  # process start -> the first answer
    idle_s: float | None = None  # process start -> idle (what it does after ready is done)
    pss_mib: float | None = None  # summed PSS after the load
    swap_peak_mib: float | None = None  # summed PSS peak during the swap under load


def summary_table(summaries: Mapping[str, Summary], rows: Sequence[Row], sets: Sequence[str]) -> str:
    """One row per server: ready, memory, and its c=8 / c=1 numbers next to the predictor's and mlflow's."""
    head = ["server", "processes", "ready s (health / first answer / idle)", "PSS MiB after load",
            "PSS MiB peak in swap"]
    for images in sets:
        head += [f"{images}: c=8 img/s", "vs predictor b8", "vs mlflow", "c=1 p99 ms (predictor b1 p50 + 10)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, sm in summaries.items():
        cells = [name, str(sm.processes or ""), f"{fmt_s(sm.ready_s)} / {fmt_s(sm.answered_s)} / {fmt_s(sm.idle_s)}",
                 f"{sm.pss_mib:.0f}" if sm.pss_mib else "", f"{sm.swap_peak_mib:.0f}" if sm.swap_peak_mib else ""]
        for images in sets:
            c8, c1 = find(rows, name, images, "c=8"), find(rows, name, images, "c=1")
            pred8, pred1 = find(rows, PREDICTOR, images, "batch 8"), find(rows, PREDICTOR, images, "batch 1")
            mlflow8 = find(rows, MLFLOW, images, "c=8")
            cells += [f"{c8.throughput:.1f}" if c8 else "",
                      f"{c8.throughput / pred8.throughput:.0%}" if c8 and pred8 else "",
                      f"{c8.throughput / mlflow8.throughput:.2f}x" if c8 and mlflow8 else "",
                      f"{c1.p(99):.1f} ({pred1.p(50) + 10:.1f})" if c1 and pred1 else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SERVE_BATCH, SERVE_NOBATCH = "detops serve, batching on", "detops serve, batching off"
SERVE_OLD = "detops serve (--old-src), batching on"
MLFLOW, PREDICTOR, NOOP = "mlflow models serve", "in-process predictor", "no-op LitServe"


# ---------------------------------------------------------------------------------------------------------- parts
def server_env(registry: Registry) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DETOPS_SERVE_API_KEY", "MLFLOW_TRACKING_URI")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "MLFLOW_TRACKING_URI": registry.uri,
            "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}


def detops_command(workspace: Path, registry: Registry, port: int, overrides: Sequence[str]) -> list[str]:
    sets = [f"mlflow.tracking_uri={registry.uri}", *overrides]
    return [str(BIN / "detops"), "-w", str(workspace), *[a for s in sets for a in ("--set", s)],
            "serve", "--model", "champion", "--host", "127.0.0.1", "--port", str(port)]


@dataclass
class Target:
    """One thing measured in turn with the others: a server (paused while the others run) or the predictor."""

    name: str
    sets: Mapping[str, Sequence[Any]]  # image set -> what one run of it sends (payloads, or image bytes)
    settings: list[str]
    run: Callable[[str, str, int], LoadResult]  # (image set, setting, requests) -> one run of the cell
    server: Server | None = None


def server_target(name: str, server: Server, path: str, sets: dict[str, list[Payload]],
                  levels: Sequence[int]) -> Target:
    url = f"http://127.0.0.1:{server.port}{path}"

    def run(images: str, setting: str, requests: int) -> LoadResult:
        c = int(setting.removeprefix("c="))
        return run_load(url, sets[images], concurrency=c, requests=requests, warmup=c)

    return Target(name, sets, [f"c={c}" for c in levels], run, server)


def predictor_target(model: Path, files: dict[str, list[tuple[str, bytes]]], threads: int) -> Target:
    """The in-process predictor on the served file, on encoded bytes as the server gets them (decode included)."""
    from detops.inference import load_predictor

    predictor = load_predictor(model, threads=threads)
    data = {k: [d for _, d in v] for k, v in files.items()}

    def run(images: str, setting: str, requests: int) -> LoadResult:
        batch = int(setting.removeprefix("batch "))
        pool = data[images]
        predictor.predict(pool[:batch], batch_size=batch)  # warm-up
        result = LoadResult(concurrency=1)
        started = time.perf_counter()
        i = 0
        while result.images < requests:
            chunk = [pool[(i + k) % len(pool)] for k in range(batch)]
            i += batch
            t0 = time.perf_counter()
            predictor.predict(chunk, batch_size=batch)
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            result.sent += 1
            result.ok += 1
            result.images += batch
        result.seconds = time.perf_counter() - started
        return result

    return Target(PREDICTOR, data, ["batch 1", "batch 8"], run)


def measure(targets: Sequence[Target], image_names: Sequence[str], requests: int, rounds: int) -> list[Row]:
    """Every cell of every target, in `rounds` interleaved rounds of requests/rounds each (a slow drift in the
    machine's background load then hits every target alike); each cell's rounds merged. Only the target being
    measured runs: the other servers are paused."""
    runs: dict[tuple[str, str, str], list[LoadResult]] = collections.defaultdict(list)
    per_round = max(1, math.ceil(requests / rounds))
    for t in targets:
        if t.server is not None:
            t.server.pause()
    for r in range(rounds):
        for images in image_names:
            for t in targets:
                if images not in t.sets:
                    continue
                if t.server is not None:
                    t.server.resume()
                try:
                    for setting in t.settings:
                        result = t.run(images, setting, per_round)
                        runs[(t.name, images, setting)].append(result)
                        print(f"  round {r + 1}/{rounds} | {t.name} | {images} | {setting}: "
                              f"{result.throughput:.1f} img/s, p50 {result.p(50):.1f} ms, failed {result.failed}",
                              flush=True)
                finally:
                    if t.server is not None:
                        t.server.pause()
    return [Row(name, images, setting, merge(results)) for (name, images, setting), results in runs.items()]


@dataclass
class Swap:
    what: str
    to_version: str
    moved_at: float = 0.0
    first_new_s: float | None = None  # alias move -> first answer by the new version
    all_new_s: float | None = None  # alias move -> the start of a run of `settle` answers all by the new version


SWAP_MAX_REQUESTS = 200_000  # the count bound of the swap run; its deadline or `stop` ends it long before here


def swap_under_load(url: str, payloads: Sequence[Payload], registry: Registry, new_version: str, poll_seconds: float,
                    concurrency: int = 8, settle: int = 40) -> tuple[LoadResult, list[Swap]]:
    """Load at `concurrency` while the champion moves to `new_version` (a promotion, as `detops promote` moves the
    aliases) and back (`detops registry rollback`); bounded by a deadline of a few poll periods per move."""
    old_version = registry.champion
    answers: list[tuple[float, float, str | None]] = []
    lock = threading.Lock()

    def on_answer(t0: float, t1: float, status: int, version: str | None) -> None:
        with lock:
            answers.append((t0, t1, version if 200 <= status < 300 else None))

    stop = threading.Event()
    per_move = 4 * poll_seconds + 120
    box: dict[str, LoadResult] = {}

    def load() -> None:
        box["result"] = asyncio.run(drive(url, payloads, concurrency=concurrency, requests=SWAP_MAX_REQUESTS,
                                          deadline_s=2 * per_move + 30, stop=stop, on_answer=on_answer))

    thread = threading.Thread(target=load, name="swap-load")
    thread.start()
    swaps = [Swap("promotion", new_version), Swap("rollback (detops registry rollback)", old_version)]
    try:
        time.sleep(3.0)
        for swap in swaps:
            swap.moved_at = move_alias(registry, swap)
            deadline = swap.moved_at + per_move
            while time.perf_counter() < deadline and thread.is_alive():
                time.sleep(0.2)
                with lock:
                    after = [(t0, t1, v) for t0, t1, v in answers if t1 >= swap.moved_at]
                first = next((t1 for _, t1, v in after if v == swap.to_version), None)
                if first is not None and swap.first_new_s is None:
                    swap.first_new_s = first - swap.moved_at
                settled = settled_at([(t1, v) for _, t1, v in after], swap.to_version, settle)
                if settled is not None:
                    swap.all_new_s = settled - swap.moved_at
                    break
    finally:
        stop.set()
        thread.join()
    return box["result"], swaps


def settled_at(answers: Sequence[tuple[float, str | None]], version: str, settle: int) -> float | None:
    """The finish time of the first answer of the first `settle` answers in a row all by `version` (ok answers only;
    a failed one breaks the run)."""
    run = 0
    for i, (_, v) in enumerate(sorted(answers)):
        run = run + 1 if v == version else 0
        if run == settle:
            return sorted(answers)[i - settle + 1][0]
    return None


def move_alias(registry: Registry, swap: Swap) -> float:
    """Move the champion; return the perf_counter time the move was done."""
    from detops.registry.names import previous_alias

    ws = registry.workspace()
    alias = ws.params.promote.alias
    if swap.what == "promotion":
        client = registry.client()
        client.set_registered_model_alias(registry.name, previous_alias(alias), registry.champion)
        client.set_registered_model_alias(registry.name, alias, swap.to_version)
    else:
        from detops.registry.commands import rollback_registry

        change = rollback_registry(ws, reason="serve_load benchmark")
        if str(change.champion) != swap.to_version:
            raise RuntimeError(f"rollback moved the champion to {change.champion}, not {swap.to_version}")
    return time.perf_counter()


def poll_seconds(workspace: Path) -> float:
    from detops.config import load_params

    params = load_params(workspace / "params.yaml", [])
    serve = getattr(params, "serve", None)
    return float(getattr(serve, "poll_seconds", 10.0))


# ----------------------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=REPO, help="where the demo ran (default: the repository)")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("DETOPS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--requests", type=int, default=200, help="requests per cell (images for the predictor)")
    parser.add_argument("--images", type=int, default=40, help="images per set")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the requests of a cell are split in")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-batch-size", type=int, default=0, help="batching on: serve.max_batch_size (0: params)")
    parser.add_argument("--threads", type=int, default=0,
                        help="in-process predictor's threads (0: the usable CPUs, as one serve worker takes them)")
    parser.add_argument("--only", default="serve,serve1,mlflow,predictor,noop,swap",
                        help="parts to run, comma-separated: serve (batching on), serve1 (batching off), mlflow, "
                             "predictor, noop, swap (on each detops server)")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp",
                        help="the load client (aiohttp: about a quarter of httpx's CPU per request on shared cores)")
    parser.add_argument("--old-src", type=Path, default=None,
                        help="also run `detops serve` from this source tree (a worktree of an older commit)")
    args = parser.parse_args()
    global CLIENT
    CLIENT = args.client
    parts = set(args.only.split(","))
    levels = [int(c) for c in args.concurrency.split(",")]
    workspace = args.workspace.resolve()
    rows: list[Row] = []
    rss: dict[str, list[tuple[int, str, float]]] = {}
    notes: list[str] = []
    swaps_run: dict[str, tuple[LoadResult, list[Swap]]] = {}
    summaries: dict[str, Summary] = {}

    from detops.config import load_params

    if not (workspace / "params.yaml").is_file():
        raise SystemExit(f"{workspace} is not a detops workspace (no params.yaml): pass --workspace DIR of one where "
                         "the demo ran (`make demo` in the repository, the default)")
    params = load_params(workspace / "params.yaml", [])
    notes.append(f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; load client: {CLIENT}")
    with tempfile.TemporaryDirectory(prefix="detops-serve-load-") as tmp:
        root = Path(tmp)
        registry = copy_registry(workspace, root / "registry")
        files = image_sets(workspace, params.import_.source, args.shared, args.images)
        model = served_file(registry, root / "model")
        print(f"workspace {workspace}: {registry.name} champion version {registry.champion} serves {model.name}")
        multipart = {k: [multipart_payload(d, n) for n, d in v] for k, v in files.items()}
        env = server_env(registry)
        batch_on = [f"serve.max_batch_size={args.max_batch_size}"] if args.max_batch_size else []
        second = add_version(registry) if "swap" in parts else None

        first_payload = next(iter(multipart.values()))[0]
        with contextlib.ExitStack() as stack:
            targets: list[Target] = []
            if "predictor" in parts:
                from detops.cpus import usable_cpus

                targets.append(predictor_target(model, files, args.threads or usable_cpus()))

            def start(name: str, command: list[str], port: int, ready: str, log: str,
                      first: tuple[str, Payload] | None, server_env: dict[str, str] = env) -> Server:
                server = stack.enter_context(Server(name, command, f"http://127.0.0.1:{port}{ready}",
                                                    env=server_env, cwd=root, log=root / log, first=first))
                summaries[name] = Summary(len(server.pids()), server.started_s, server.answered_s, idle_s=server.idle_s)
                server.pause()  # measured one at a time
                return server

            followers: list[Server] = []  # the detops servers a swap runs on
            detops_servers = []  # (name, environment, log file, the sources' params.yaml: the server's own keys)
            if "serve" in parts:
                detops_servers.append((SERVE_BATCH, env, "serve.log", REPO / "params.yaml"))
            if args.old_src is not None:
                old_env = {**env, "PYTHONPATH": str(args.old_src.resolve() / "src")}
                detops_servers.append((SERVE_OLD, old_env, "serve-old.log", args.old_src / "params.yaml"))
            for name, server_env_, log_name, params_file in detops_servers:
                port = free_port()
                server_ws = root / log_name.removesuffix(".log")  # the registry comes by --set: no data needed
                server_ws.mkdir()
                shutil.copy(params_file, server_ws / "params.yaml")
                server = start(name, detops_command(server_ws, registry, port, batch_on), port, "/health",
                               log_name, ("/predict", first_payload), server_env_)
                server.resume()
                notes.append(f"{name}: ready in {server.started_s:.1f} s; serves {model_info(port)}")
                server.pause()
                followers.append(server)
                targets.append(server_target(name, server, "/predict", multipart, levels))
            if "serve1" in parts:
                port = free_port()
                server = start(SERVE_NOBATCH, detops_command(workspace, registry, port, ["serve.max_batch_size=1"]),
                               port, "/health", "serve1.log", ("/predict", first_payload))
                targets.append(server_target(SERVE_NOBATCH, server, "/predict", multipart, levels))
            if "mlflow" in parts:
                port = free_port()
                command = [str(BIN / "mlflow"), "models", "serve", "-m",
                           f"models:/{registry.name}/{registry.champion}", "--env-manager", "local",
                           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
                mlflow_first = mlflow_payload([next(iter(files.values()))[0][1]])
                server = start(MLFLOW, command, port, "/ping", "mlflow.log", ("/invocations", mlflow_first))
                notes.append(f"{MLFLOW}: ready in {server.started_s:.1f} s")
                mlflow_sets = {k: [mlflow_payload([d]) for _, d in v] for k, v in files.items()}
                targets.append(server_target(MLFLOW, server, "/invocations", mlflow_sets, levels))
            if "noop" in parts:
                port = free_port()
                server = start(NOOP, noop_command(port), port, "/health", "noop.log", None)
                # JSON with base64: what LitServe itself parses in `detops serve` too (its gate turns a multipart
                # upload into that before LitServe's handler), and no python-multipart needed.
                as_json = {k: [json_payload(d) for _, d in v] for k, v in files.items()}
                targets.append(server_target(NOOP, server, "/predict", as_json, levels))

            rows = measure(targets, list(files), args.requests, args.rounds)
            for t in targets:
                if t.server is not None:
                    rss[t.name] = t.server.rss()
                    summaries[t.name].processes = len(rss[t.name])
                    summaries[t.name].pss_mib = t.server.pss()  # paused after its last cell: steady, after load
            if "swap" in parts and second is not None:
                for server in followers:
                    server.resume()
                    with PeakPss(server) as peak:
                        swaps_run[server.name] = swap_under_load(f"http://127.0.0.1:{server.port}/predict",
                                                                 next(iter(multipart.values())), registry, second,
                                                                 poll_seconds(workspace))
                    summaries[server.name].swap_peak_mib = peak.peak
                    rss.setdefault(server.name, server.rss())
                    summaries[server.name].pss_mib = summaries[server.name].pss_mib or server.pss()
                    server.pause()  # the rollback moved the champion back: the next server's swap is the same

    print(f"\n## serve_load ({time.strftime('%Y-%m-%d %H:%M')})\n\nmachine: {machine_line()}\n\n{cpu_table()}\n")
    print(f"model: {registry.name} version {registry.champion}, served file {model.name}; {args.requests} requests "
          f"per cell (images for the predictor), {args.images} images per set, loopback, async httpx client\n")
    print(markdown(rows))
    if rows:
        print("\n" + "\n".join(f"- {line}" for line in target_lines(rows, list(files))))
    if summaries:
        print("\n" + summary_table(summaries, rows, list(files)))
        mlflow_sm, serve_sm = summaries.get(MLFLOW), summaries.get(SERVE_BATCH)
        if mlflow_sm and serve_sm and mlflow_sm.pss_mib and serve_sm.pss_mib and serve_sm.ready_s and mlflow_sm.ready_s:
            memory, ready = serve_sm.pss_mib / mlflow_sm.pss_mib, serve_sm.ready_s <= mlflow_sm.ready_s
            print(f"\n- memory: detops serve PSS {memory:.2f}x `mlflow models serve`'s (target <= 1.1x): "
                  f"{'met' if memory <= 1.1 else 'NOT met'}; ready after start {serve_sm.ready_s:.1f} s vs "
                  f"{mlflow_sm.ready_s:.1f} s (target <= mlflow's): {'met' if ready else 'NOT met'}")
    for name, (result, swaps) in swaps_run.items():
        print(f"\n| {name}: under load (c=8, {next(iter(files))}) | requests | failed | answers by version |\n"
              "|---|---|---|---|")
        print(f"| promotion + rollback | {result.sent} | {result.failed} | "
              f"{', '.join(f'v{k}: {n}' for k, n in sorted(result.versions.items()))} |")
        print(f"\n| alias move (serve.poll_seconds {poll_seconds(workspace):g}) | to version | first answer by it | "
              "all answers by it |\n|---|---|---|---|")
        for s in swaps:
            print(f"| {s.what} | {s.to_version} | {fmt_s(s.first_new_s)} | {fmt_s(s.all_new_s)} |")
    if rss:
        print("\n| server | process | RSS MiB |\n|---|---|---|")
        for name, procs in rss.items():
            for pid, role, mib in procs:
                print(f"| {name} | {role} (pid {pid}) | {mib:.0f} |")
            print(f"| {name} | **total** | **{sum(m for _, _, m in procs):.0f}** |")
    for note in notes:
        print(f"\n{note}")
    return 0


def fmt_s(value: float | None) -> str:
    return "not seen" if value is None else f"{value:.1f} s"


def model_info(port: int) -> str:
    """What /model says the server runs: version, variant, runtime."""
    import httpx

    try:
        info = httpx.get(f"http://127.0.0.1:{port}/model", timeout=10).json()
        return f"version {info.get('version')} as {info.get('variant')} on {info.get('runtime')}"
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return f"(/model unavailable: {exc})"


if __name__ == "__main__":
    sys.exit(main())
