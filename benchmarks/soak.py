"""Benchmark: a week in an hour. The whole loop runs unattended under load while faults are injected, and at the end
the soak checks that nothing was lost.

On loopback only, every server real and started here, everything stopped here whatever happens
(benchmarks/soak_stack.py): moto's S3, MLflow on PostgreSQL with its artifacts on that S3, a Prefect server and a
process worker with `detops deploy`'s deployments (crons every minute), Label Studio, and two `detops serve`
replicas following `champion` with capture on into the landing prefix on S3 (the workspace's `monitor.landing`).

- Traffic (benchmarks/soak_traffic.py): `--rate` requests/s split over both replicas; at 30 % of the time the pool
  shifts to darker images with smaller objects (a sample seed never trained on), so the drift is real.
- The loop, unattended: the replicas seal captured batches, `drift-check` finds the shift and starts
  `retrain-on-drift`, which lists the images to label; `labels-sync` selects and pushes them to Label Studio
  (`label.push_drifted`), where a scripted labeller answers with the ground truth (some late, a few boxes wrong);
  the next `labels-sync` pulls them and `retrain-on-drift` accepts the batch (its production accuracy scored),
  trains, and promotion moves `champion`, which both replicas swap in.
- Faults, at times drawn from `--seed` and printed: `kill -9` of the worker and its flow-run process while it trains
  (a new worker is started; the heartbeat automation marks the run Crashed and starts it again, and training resumes),
  `kill -9` of one replica (restarted on its port, as Kubernetes would), the MLflow server restarted, Label Studio
  stopped for two labels-sync ticks, the capture prefix unwritable for a minute.
- After `--minutes` the traffic stops and the loop is left to drain (`--drain-minutes` at most); then every invariant
  is checked and printed with its count, with the figures, the machine and its CPU flags. Exit status 1 when an
  invariant broke.

    .venv/bin/python benchmarks/soak.py --minutes 30 --seed 0
    short: --minutes 4 --rate 10 --seed 1 --drain-minutes 10 (about 15 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_stack import BIN, BUCKET, QUIET, REPO, S3_ENV, Service, Stack, free_port, kill_session
from soak_traffic import Labeller, Traffic, make_pool

POOL = "detops-soak"
MODEL = "detops-detector"
POLL_SECONDS = 5.0
SWAP_SLACK = 3.0  # the bound: a promotion is served within serve.poll_seconds + 3 s of the alias move
GRACE = 3.0  # seconds after a replica is ready again during which its errors still belong to its outage
LS_DOWN_SECONDS = 130  # two labels-sync ticks (deploy.labels_cron every minute)
UNWRITABLE_SECONDS = 60
LOCK_WAIT = 120.0  # longest a cron tick may hold the workspace lock when the end checks run
BATCH = 40  # images per capture batch


def options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30, help="traffic time (the drain comes after)")
    parser.add_argument("--seed", type=int, default=0, help="fault times, traffic and labeller")
    parser.add_argument("--rate", type=float, default=20, help="requests per second, both replicas together")
    parser.add_argument("--drain-minutes", type=float, default=12, help="longest wait for the loop to settle")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/detops-soak"))
    parser.add_argument("--keep", action="store_true", help="keep the workdir (logs, workspace) afterwards")
    return parser.parse_args(argv)


def soak_params(root: Path, ls_port: int, minutes: float, rate: float) -> list[str]:
    """The workspace's params: small and quick to train, the loop's state on S3, every cron each minute."""
    period = min(300.0, max(60.0, minutes * 60 / 2))  # seconds in which each replica captures a batch of 40
    capture_share = min(1.0, 2 * BATCH / (rate * period))
    return [
        "sample.num_images=200", "sample.image_size=96", "sample.max_object_size=48",
        "train.epochs=10", "train.checkpoint_minutes=0", "train.image_size=96",
        "promote.lock=prefect", "promote.min_improvement=0.0",
        f"monitor.landing=s3://{BUCKET}/landing", "monitor.min_batch_size=30", "monitor.screenshot=false",
        f"serve.poll_seconds={POLL_SECONDS}", f"serve.capture_share={capture_share:.4f}",
        f"serve.capture_batch_size={BATCH}", f"serve.capture_max_minutes={max(2.0, minutes / 4):.1f}",
        "label.push_drifted=true", "label.budget=24", "label.accuracy_share=0.25",
        f"label_studio.url=http://127.0.0.1:{ls_port}", f"label_studio.document_root={root}",
        f"deploy.work_pool={POOL}", "deploy.cron='*/20 * * * *'", "deploy.drift_cron='* * * * *'",
        "deploy.labels_cron='* * * * *'", "deploy.heartbeat_seconds=30", "deploy.dead_after_seconds=60",
    ]


@dataclass
class Fault:
    kind: str
    at: float  # planned, seconds after the traffic started
    fired: float | None = None
    ended: float | None = None
    detail: str = ""


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))
        print(f"[{'ok' if ok else 'BROKEN'}] {name}: {detail}", flush=True)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def say(t0: float, text: str) -> None:
    print(f"{time.monotonic() - t0:8.1f} s  {text}", flush=True)


def sh(*args: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def make_workspace(root: Path, overrides: list[str], env: dict[str, str]) -> Path:
    """The repository's pipeline in a git repository of its own (tests/test_dvc.py's copy), with the soak's params
    and its DVC remote on S3."""
    import yaml
    from test_dvc import make_copy

    from detops.config.loader import apply_override

    ws = root / "ws"
    ws.mkdir(parents=True)
    make_copy(ws)
    raw = yaml.safe_load((ws / "params.yaml").read_text(encoding="utf-8"))
    for item in overrides:
        apply_override(raw, item)
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    sh(str(BIN / "dvc"), "remote", "add", "-d", "-f", "s3", f"s3://{BUCKET}/dvc", cwd=ws, env=env)
    sh("git", "add", "-A", cwd=ws, env=env)
    sh("git", "commit", "-qm", "soak params, DVC remote on S3", cwd=ws, env=env)
    return ws


class Soak:
    def __init__(self, args: argparse.Namespace, stack: Stack, report: Report) -> None:
        self.args, self.stack, self.report = args, stack, report
        self.root = stack.root
        self.t0 = time.monotonic()
        self.faults: list[Fault] = []
        self.down: dict[int, list[tuple[float, float]]] = {0: [], 1: []}  # replica -> outage windows
        self.champions: list[tuple[float, str]] = []  # (seen at, version) each time the alias moved
        self.rss: dict[str, float] = {}
        self.worker_kills: list[str] = []  # flow run ids killed while training
        self.sealed_before: list[str] | None = None  # capture batches sealed when the drain began
        self.writable_again: datetime | None = None  # when the capture prefix took writes again
        self.capture_failures = 0.0
        self.replicas: list[Service] = []
        self.traffic: Traffic | None = None
        self.labeller: Labeller | None = None
        self.env: dict[str, str] = {}
        self.ws = Path()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------------------------------------ set-up
    def start(self) -> None:
        args, stack = self.args, self.stack
        s3 = stack.start_s3()
        say(self.t0, f"S3 (moto) at {s3}, the replicas' gate at {stack.gate.url if stack.gate else ''}")
        ls_port = free_port()
        ls_box: dict[str, Any] = {}
        ls_thread = threading.Thread(target=lambda: ls_box.update(server=stack.start_label_studio(self.root, ls_port)),
                                     daemon=True)
        ls_thread.start()  # its first start runs its migrations: minutes, meanwhile the rest starts
        mlflow_url = stack.start_mlflow()
        say(self.t0, f"MLflow on PostgreSQL at {mlflow_url}, artifacts in s3://{BUCKET}/mlartifacts")
        home = self.root / "prefect"
        home.mkdir()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING", "AWS_"))}
        base.update(QUIET, **S3_ENV, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PREFECT_HOME=str(home))
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        stack.add("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                     str(port)], base, home, health=f"{api}/health")
        say(self.t0, f"Prefect server at {api}")
        os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home), MLFLOW_TRACKING_URI=mlflow_url,
                          AWS_ENDPOINT_URL=s3, **S3_ENV)
        self.env = {**base, "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": mlflow_url, "AWS_ENDPOINT_URL": s3,
                    "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
        # this process's own reads (the alias it watches) fail fast while MLflow restarts, and are tried again
        os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
        self.ws = make_workspace(self.root, soak_params(self.root, ls_port, args.minutes, args.rate), self.env)
        from _label_studio_server import TOKEN

        self.env["LABEL_STUDIO_API_KEY"] = TOKEN
        say(self.t0, "detops deploy: " + sh(str(BIN / "detops"), "deploy", cwd=self.ws, env=self.env).strip()
            .splitlines()[-1])
        self.start_worker()
        self.pools()
        self.first_champion()
        ls_thread.join(600)
        if "server" not in ls_box:
            raise RuntimeError("Label Studio did not start")
        say(self.t0, f"Label Studio at {ls_box['server'].url}")
        replica_env = {**self.env, "AWS_ENDPOINT_URL": stack.gate.url if stack.gate else s3}
        for name in ("replica-0", "replica-1"):
            replica_port = free_port()
            self.replicas.append(stack.add(name, [str(BIN / "detops"), "-w", str(self.ws), "serve", "--port",
                                                  str(replica_port)], replica_env, self.ws,
                                           health=f"http://127.0.0.1:{replica_port}/health", timeout=300))
        say(self.t0, "two replicas serve the champion: " + ", ".join(r.health or "" for r in self.replicas))

    def start_worker(self) -> Service:
        name = f"worker-{sum(1 for s in self.stack.services if s.startswith('worker'))}"
        service = self.stack.add(name, [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name],
                                 self.env, self.root / "prefect")
        self.worker = service
        return service

    def pools(self) -> None:
        from detops.config import load_params

        base = load_params(self.ws / "params.yaml").sample
        self.before = make_pool(self.root / "pool-before", base, 1000 + self.args.seed, 120, shifted=False)
        self.after = make_pool(self.root / "pool-after", base, 2000 + self.args.seed, 120, shifted=True)

    def first_champion(self) -> None:
        """The first model, trained and promoted by a UI-style run of retrain-on-demand."""
        from prefect.deployments import run_deployment

        run = run_deployment("retrain/retrain-on-demand", timeout=0)
        final = self.wait_run(run.id, 1200)  # type: ignore[union-attr]
        if not final.state.is_completed():
            raise RuntimeError(f"the first training run ended {final.state.name}: {final.state.message}")
        self.champions.append((self.now(), self.champion() or "?"))
        say(self.t0, f"first champion: version {self.champions[-1][1]}")

    def wait_run(self, run_id: Any, timeout: float) -> Any:
        from prefect import get_client

        deadline = time.monotonic() + timeout
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final() and run.state.name != "Crashed":
                    return run
                time.sleep(2)
        raise RuntimeError(f"flow run {run_id} did not finish within {timeout:.0f} s")

    def champion(self) -> str | None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            return str(MlflowClient().get_model_version_by_alias(MODEL, "champion").version)
        except (MlflowException, OSError):
            return None

    # ------------------------------------------------------------------------------------------------ faults
    def plan(self, minutes: float) -> None:
        rng = random.Random(self.args.seed)
        span = minutes * 60
        self.faults = [
            Fault("worker", rng.uniform(0.35, 0.55) * span),  # armed then; fires when a run trains (or drains)
            Fault("replica", rng.uniform(0.15, 0.85) * span, detail=f"replica-{rng.randrange(2)}"),
            Fault("mlflow", rng.uniform(0.1, 0.9) * span),
            Fault("label-studio", rng.uniform(0.15, 0.6) * span),
            Fault("capture", rng.uniform(0.1, 0.8) * span),
        ]
        self.faults.sort(key=lambda f: f.at)
        for fault in self.faults:
            say(self.t0, f"fault planned: {fault.kind} {fault.detail} at +{fault.at:.0f} s of the traffic")

    def tick_faults(self, traffic_at: float, draining: bool = False) -> None:
        """Inject the faults that are due; while draining (no traffic, replicas stopped) only the worker's, which
        waits for a run that trains."""
        for fault in self.faults:
            if fault.fired is not None or traffic_at < fault.at or (draining and fault.kind != "worker"):
                continue
            if fault.kind == "worker":
                if not self.training_now():
                    continue
                fault.fired = self.now()
                self.kill_worker(fault)
            else:
                fault.fired = self.now()
                threading.Thread(target=self.inject, args=(fault,), daemon=True).start()

    def training_now(self) -> bool:
        """A run trains, past its first epoch (its resume checkpoint exists)."""
        resume = self.ws / ".detops" / "resume"
        return resume.is_dir() and any(resume.glob("*.ckpt")) and bool(self.flow_run_processes())

    def flow_run_processes(self) -> list[int]:
        """The worker's children: its flow runs' processes, each the leader of a session of its own."""
        process = self.worker.process
        if process is None:
            return []
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def kill_worker(self, fault: Fault) -> None:
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        with get_client(sync_client=True) as client:
            running = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))
        runs = [str(r.id) for r in running if r.name]
        for pid in self.flow_run_processes():
            kill_session(pid)
        self.worker.kill()
        self.worker_kills.extend(runs)
        fault.detail = f"flow run(s) {', '.join(r[:8] for r in runs)} killed with the worker"
        say(self.t0, f"FAULT worker: kill -9 of the worker and its run ({fault.detail})")
        time.sleep(5)
        self.start_worker()
        fault.ended = self.now()
        say(self.t0, "a new worker started")

    def inject(self, fault: Fault) -> None:
        stack = self.stack
        if fault.kind == "replica":
            index = int(fault.detail[-1])
            replica = self.replicas[index]
            say(self.t0, f"FAULT replica: kill -9 of {replica.name}")
            replica.kill()
            time.sleep(5)  # Kubernetes notices and starts the pod again
            replica.start(timeout=300)
            fault.ended = self.now()
            self.down[index].append((fault.fired or 0, fault.ended + GRACE))
            say(self.t0, f"{replica.name} ready again after {fault.ended - (fault.fired or 0):.1f} s")
        elif fault.kind == "mlflow":
            say(self.t0, "FAULT mlflow: the tracking server killed and started again")
            fault.detail = f"down {stack.restart_mlflow():.1f} s"
            fault.ended = self.now()
            say(self.t0, f"MLflow back ({fault.detail})")
        elif fault.kind == "label-studio":
            say(self.t0, f"FAULT label-studio: stopped for {LS_DOWN_SECONDS} s")
            stack.stop_label_studio()
            time.sleep(LS_DOWN_SECONDS)
            server = stack.label_studio
            assert server is not None
            stack.start_label_studio(self.root, int(server.url.rsplit(":", 1)[1]))
            fault.ended = self.now()
            say(self.t0, "Label Studio back")
        elif fault.kind == "capture":
            assert stack.gate is not None
            say(self.t0, f"FAULT capture: the landing prefix refuses writes for {UNWRITABLE_SECONDS} s")
            stack.gate.refusing = True
            time.sleep(UNWRITABLE_SECONDS)
            stack.gate.refusing = False
            fault.ended = self.now()
            self.writable_again = datetime.now(timezone.utc)
            self.capture_failures = sum(metric(r, "detops_serve_capture_failures_total") for r in self.replicas)
            fault.detail = f"{stack.gate.refused} write(s) refused, capture paused {self.capture_failures:g} time(s)"
            say(self.t0, f"the landing prefix is writable again ({fault.detail})")

    # ------------------------------------------------------------------------------------------------ the run
    def run(self) -> None:
        args = self.args
        self.start()
        from _label_studio_server import TOKEN

        assert self.stack.label_studio is not None
        self.labeller = Labeller(self.stack.label_studio.url, TOKEN, self.root, {**self.before.truth,
                                                                                   **self.after.truth},
                                 self.before.size, args.seed)
        self.labeller.start()
        urls = [(r.health or "").removesuffix("/health") for r in self.replicas]
        self.traffic = Traffic(urls, self.before, self.after, args.rate, args.seed, self.t0)
        self.plan(args.minutes)
        self.traffic_start = self.now()
        self.traffic.start()
        self.stop_watching = threading.Event()
        threading.Thread(target=self.watch_alias, args=(self.stop_watching,), daemon=True).start()
        say(self.t0, f"traffic: {args.rate:g} req/s for {args.minutes:g} min")
        span = args.minutes * 60
        while (traffic_at := self.now() - self.traffic_start) < span:
            if self.traffic.shifted_at is None and traffic_at >= 0.3 * span:
                self.traffic.shift()
                say(self.t0, "the traffic shifts: darker images, smaller objects")
            self.tick_faults(traffic_at)
            self.watch()
            time.sleep(1)
        wait_until_true(lambda: all(f.fired is None or f.ended is not None for f in self.faults), LS_DOWN_SECONDS + 300)
        self.traffic.unshift()
        say(self.t0, "the shift is over: images like the training data again, the traffic goes on")
        self.drain()
        self.traffic.stop()
        self.traffic_end = self.now()
        say(self.t0, f"traffic stopped: {len(self.traffic.answers)} requests")
        for replica in self.replicas:  # a graceful stop seals the open capture batch: left for the next tick
            replica.stop()
        self.labeller.stop()
        self.stop_watching.set()

    def watch(self) -> None:
        self.rss = self.stack.sample_rss()

    def watch_alias(self, stop: threading.Event) -> None:
        """Every 0.5 s, the champion alias through MLflow's REST API: when it moved is known to half a second."""
        import httpx

        url = f"{self.env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/registered-models/alias"
        with httpx.Client(timeout=3) as client:
            while not stop.wait(0.5):
                try:
                    response = client.get(url, params={"name": MODEL, "alias": "champion"})
                    version = str(response.json()["model_version"]["version"]) if response.is_success else None
                except (httpx.HTTPError, ValueError, KeyError):
                    continue  # MLflow restarting: look again
                if version and (not self.champions or self.champions[-1][1] != version):
                    self.champions.append((self.now(), version))
                    say(self.t0, f"champion moved to version {version}")

    def pipeline_state(self) -> dict[str, list[str]]:
        """What the loop still has to do: batches sealed and not checked, listed and not pushed, pushed and not
        pulled, pulled and not accepted; flow runs not finished."""
        from detops.config import load_params
        from detops.labeling.push import batches_to_push
        from detops.labeling.state import round_trips
        from detops.monitoring.accept import accepted_path
        from detops.monitoring.batches import ledger
        from detops.monitoring.landing import open_store
        from detops.workspace import Workspace

        ws = Workspace.at(self.ws, load_params(self.ws / "params.yaml"))
        checked = ledger(ws).entries()
        sealed = open_store(ws.params.monitor.landing).sealed(ws.params.monitor.manifest)
        if self.sealed_before is None:  # the batches the drain waits for: those sealed while the shift lasted
            self.sealed_before = sealed
        trips = round_trips(ws)
        return {
            "unchecked": [b for b in self.sealed_before if b not in checked],
            "unpushed": batches_to_push(ws),
            "unpulled": [t.batch for t in trips if t.pulled is None and not t.review],
            "unaccepted": [t.pulled for t in trips if t.pulled and not accepted_path(ws, t.pulled).exists()],
            "active runs": self.active_runs(),
        }

    def active_runs(self) -> list[str]:
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        active = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=active))))
            retrain = client.read_flow_by_name("retrain").id
        # the crons' ticks (drift-check, labels-sync) run every minute: only retraining counts as work in flight
        return [f"{r.name} ({r.state_name})" for r in runs if r.flow_id == retrain]

    def drain(self) -> None:
        """Wait for the loop to settle (traffic going on): every batch sealed before now checked, every drifted one
        labelled and accepted, no retraining running; at most --drain-minutes."""
        self.drain_start = self.now()
        deadline = time.monotonic() + self.args.drain_minutes * 60
        say(self.t0, f"draining: at most {self.args.drain_minutes:g} min for the loop to settle")
        state: dict[str, list[str]] = {}
        shown: dict[str, list[str]] = {}
        quiet_since = None
        while time.monotonic() < deadline:
            try:
                state = self.pipeline_state()
            except Exception as exc:  # a read during a write: look again
                say(self.t0, f"state not readable yet: {exc}")
                time.sleep(5)
                continue
            self.watch()
            self.tick_faults(self.now() - self.traffic_start, draining=True)
            if state != shown:
                say(self.t0, f"loop: {json.dumps({k: v for k, v in state.items() if v})}")
                shown = state
            if any(state.values()):
                quiet_since = None
            else:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 75:  # a tick of each cron found nothing new
                    break
            time.sleep(5)
        self.drained = state
        self.drain_end = self.now()
        say(self.t0, f"drained: {json.dumps(state)}")

    # ------------------------------------------------------------------------------------------------ checks
    def verify(self) -> None:
        report = self.report
        self.check_requests()
        state = self.drained
        report.check("every sealed batch checked", not state.get("unchecked"),
                     f"{len(state.get('unchecked', []))} left unchecked {state.get('unchecked', [])}")
        self.check_announced_once()
        self.check_labelled()
        self.check_resumed()
        self.check_swaps()
        self.check_aliases()
        self.check_faults()
        self.check_capture_resumed()
        status = json.loads(sh(str(BIN / "dvc"), "status", "--json", "-q", cwd=self.ws, env=self.env, timeout=300)
                            or "{}")
        # dvc.yaml's `code` stage (the code fingerprints) is always changed by design
        changed = {stage: why for stage, why in status.items() if why != ["always changed"]}
        report.check("dvc status clean", not changed, f"{len(status)} stage(s) listed, changed: {changed}")
        self.check_locks()

    def check_requests(self) -> None:
        assert self.traffic is not None
        answers = self.traffic.answers
        bad = [a for a in answers if a.status == 0 or a.status >= 500]
        excused = [a for a in bad if any(start <= a.at <= end for start, end in self.down[a.replica])]
        refused = [a for a in answers if 400 <= a.status < 500]
        self.report.check("every request answered, or refused by design", len(bad) == len(excused) and not refused,
                          f"{len(answers)} sent, {sum(a.status == 200 for a in answers)} answered, "
                          f"{len(excused)} failed while their replica was down, {len(bad) - len(excused)} failed "
                          f"outside, {len(refused)} refused (4xx)")

    def check_announced_once(self) -> None:
        import httpx

        from flows.deploy.spec import DRIFT_EVENT

        body = {"filter": {"event": {"name": [DRIFT_EVENT]}}, "limit": 50}  # the API's largest page
        page = httpx.post(f"{self.env['PREFECT_API_URL']}/events/filter", json=body, timeout=30).json()
        events = list(page["events"])
        while page.get("next_page"):
            page = httpx.get(page["next_page"], timeout=30).json()
            events += page["events"]
        batches = [e["resource"]["prefect.resource.id"] for e in events]
        twice = sorted({b for b in batches if batches.count(b) > 1})
        self.report.check("every drifted batch announced once", not twice,
                          f"{len(set(batches))} drifted batch(es), announced twice: {twice}")
        self.drifted = len(set(batches))

    def check_labelled(self) -> None:
        from detops.config import load_params
        from detops.labeling.state import round_trips
        from detops.monitoring.accept import accepted_path
        from detops.monitoring.production import report_path
        from detops.workspace import Workspace

        ws = Workspace.at(self.ws, load_params(self.ws / "params.yaml"))
        pulled = [t.pulled for t in round_trips(ws) if t.pulled]
        dataset = json.loads(ws.dataset_json.read_text(encoding="utf-8"))
        listed = list(dataset["info"].get("batches", []))
        once = [b for b in pulled if accepted_path(ws, b).exists() and listed.count(b) == 1]
        scored = [b for b in pulled if report_path(ws, b).is_file()]
        self.report.check("every labelled batch accepted exactly once", len(once) == len(pulled) and pulled != [],
                          f"{len(once)} of {len(pulled)} labelled batch(es) in the dataset once")
        self.report.check("production accuracy logged for each", len(scored) == len(pulled),
                          f"{len(scored)} of {len(pulled)} scored ({', '.join(scored)})")
        self.labelled = pulled

    def check_resumed(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient()
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
        steps = [int(r.data.tags["detops.resumed_after_step"]) for r in runs
                 if "detops.resumed_after_step" in r.data.tags]
        self.resumed_steps = steps
        kills = len(self.worker_kills)
        self.report.check("every interrupted training resumed, never from epoch 0",
                          len(steps) >= kills and all(s > 0 for s in steps),
                          f"{kills} run(s) killed while training, {len(steps)} resumed after step(s) {steps}")

    def served_at(self, replica: int, version: str, since: float) -> float | None:
        assert self.traffic is not None
        return next((a.at + a.latency for a in sorted(self.traffic.answers, key=lambda a: a.at)
                     if a.replica == replica and a.status == 200 and a.version == version and a.at >= since), None)

    def check_swaps(self) -> None:
        self.swaps: list[tuple[str, list[float | None]]] = []
        for seen, version in self.champions[1:]:
            if seen > self.traffic_end:
                continue  # moved after the traffic: nobody asked
            delays = [None if (t := self.served_at(i, version, seen - 1)) is None else max(0.0, t - seen)
                      for i in range(2)]
            self.swaps.append((version, delays))
        late = [(v, d) for v, d in self.swaps if any(x is None or x > POLL_SECONDS + SWAP_SLACK for x in d)]
        self.report.check(f"every promotion served by both replicas within {POLL_SECONDS + SWAP_SLACK:g} s",
                          not late, f"{len(self.swaps)} promotion(s) under traffic, late or never: {late}")

    def check_aliases(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient()
        aliases = client.get_registered_model(MODEL).aliases  # alias -> version: one version per alias
        order = [v for _, v in self.champions]
        champion, previous = aliases.get("champion"), aliases.get("previous-champion")
        self.report.check("registry aliases consistent", str(champion) == order[-1]
                          and (str(previous) if previous else None) == (order[-2] if len(order) > 1 else None),
                          f"champion {champion}, previous-champion {previous}, champions seen in turn {order}")

    def check_capture_resumed(self) -> None:
        """Capture paused while the prefix refused writes and went on after: batches opened since."""
        from detops.config import load_params
        from detops.monitoring.landing import open_store

        if self.writable_again is None:
            return
        params = load_params(self.ws / "params.yaml")
        stamp = self.writable_again.strftime("%Y%m%dT%H%M%S")
        later = [f for f in open_store(params.monitor.landing).folders()
                 if f.startswith("capture-") and f.rsplit("-", 1)[-1][:15] > stamp]
        self.report.check("capture resumed after the unwritable minute", self.capture_failures > 0 and bool(later),
                          f"paused {self.capture_failures:g} time(s), {len(later)} batch(es) opened after")

    def check_faults(self) -> None:
        missed = [f.kind for f in self.faults if f.fired is None]
        self.report.check("every planned fault happened", not missed, f"{len(self.faults)} planned, missed {missed}")

    def check_locks(self) -> None:
        from filelock import FileLock, Timeout
        from prefect import get_client

        from detops.locking import LOCK_FILE

        # the crons still tick here, and a tick (drift-check, labels-sync) holds the workspace lock for seconds:
        # a lock left behind is one still held after LOCK_WAIT (seed 2 once caught a tick with no wait at all)
        started = time.monotonic()
        try:
            with FileLock(str(self.ws / LOCK_FILE), timeout=LOCK_WAIT):
                free = True
        except Timeout:
            free = False
        waited = time.monotonic() - started
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(f"detops-promote-{MODEL}")
        self.report.check("no lock left", free and limit.active_slots == 0,
                          f"workspace lock free: {free} (after {waited:.1f} s), promotion slots held: "
                          f"{limit.active_slots}")

    # ------------------------------------------------------------------------------------------------ figures
    def figures(self) -> str:
        assert self.traffic is not None
        from serve_load import cpu_table, machine_line, percentile

        lines = [f"machine: {machine_line()}", cpu_table(), "",
                 f"soak: --minutes {self.args.minutes:g} --seed {self.args.seed} --rate {self.args.rate:g}; "
                 f"wall {self.now() / 60:.1f} min (set-up {self.traffic_start / 60:.1f}, traffic "
                 f"{(self.drain_start - self.traffic_start) / 60:.1f} with faults, "
                 f"drain {(self.drain_end - self.drain_start) / 60:.1f})",
                 "", "| phase | requests | answered | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        for name in ("before the shift", "after the shift", "the shift over (drain)"):
            phase = [a for a in self.traffic.answers if self.traffic.phase(a.at) == name]
            ok = [a.latency * 1000 for a in phase if a.status == 200]
            lines.append(f"| {name} | {len(phase)} | {len(ok)} | {percentile(ok, 50):.0f} | {percentile(ok, 99):.0f} |")
        lines += ["", "| fault | planned at s | fired at s | ended at s | detail |", "|---|---|---|---|---|"]
        for f in self.faults:
            lines.append(f"| {f.kind} | {f.at:.0f} | {fmt(f.fired, self.traffic_start)} | "
                         f"{fmt(f.ended, self.traffic_start)} | {f.detail} |")
        lines += ["", f"cycles: {len(getattr(self, 'labelled', []))} labelled batch(es) accepted and trained on, "
                      f"{getattr(self, 'drifted', 0)} drifted batch(es), {len(self.champions) - 1} promotion(s) after "
                      "the first",
                  "swaps (version: delay of replica 0, replica 1, s): " + ", ".join(
                      f"v{v}: {', '.join('never' if d is None else f'{d:.1f}' for d in ds)}" for v, ds in
                      getattr(self, "swaps", [])),
                  f"resumed trainings: {len(getattr(self, 'resumed_steps', []))}, optimizer steps not redone: "
                  f"{sum(getattr(self, 'resumed_steps', []))}",
                  "labeller: " + (f"{len(self.labeller.done)} task(s) answered, {len(self.labeller.late)} late, "
                                  f"{len(self.labeller.wrong)} with a wrong box, {self.labeller.errors} failed call(s)"
                                  if self.labeller else "-"),
                  "", "| server | peak RSS MiB |", "|---|---|"]
        lines += [f"| {name} | {mib:.0f} |" for name, mib in sorted(self.rss.items())]
        return "\n".join(lines)


def metric(service: Service, name: str) -> float:
    """The sum of a Prometheus counter's samples on a replica's /metrics (0 when it does not answer)."""
    import httpx

    try:
        text = httpx.get((service.health or "").replace("/health", "/metrics"), timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def fmt(at: float | None, origin: float) -> str:
    return "-" if at is None else f"{at - origin:.0f}"


def wait_until_true(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    sys.path.insert(0, str(REPO / "tests"))
    stack = Stack(args.workdir)
    report = Report()
    soak = Soak(args, stack, report)
    try:
        soak.run()
        soak.verify()
    except Exception as exc:  # the soak itself broke: reported as such, then everything stops
        import traceback

        traceback.print_exc()
        report.check("the soak ran to its end", False, f"{type(exc).__name__}: {exc}")
    finally:
        stack.close()
    left = stack.leftovers()
    report.check("no process left", not left, f"{len(left)} process(es) of the soak's servers alive {left}")
    try:
        print("\n" + soak.figures())
    except Exception as exc:  # figures of a soak that broke early may be missing
        print(f"figures incomplete: {exc}")
    print("\n| invariant | holds | count |\n|---|---|---|")
    for name, ok, detail in report.checks:
        print(f"| {name} | {'yes' if ok else 'NO'} | {detail} |")
    print(f"python {platform.python_version()}")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

