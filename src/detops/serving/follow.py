"""Hot swap: the server keeps each role (champion, challenger) on the version its source names.

A thread per role re-reads the alias every `serve.poll_seconds`. When it moves, the new version is downloaded,
loaded beside the served one and warmed up on one image; only then does one reference assignment switch to it,
and the thread warms its largest batch size after the switch (OpenVINO compiles a model per batch size; the model
answers one image at a time until then), so a cold start is ready as soon as batch 1 answers. A batch that
started on the old model finishes on it (it holds its own reference). A version that fails to download, load or
warm up is never switched to: the served one stays, the failure is counted (`detops_serve_model_load_failures`)
and logged, and that version is tried again only after `retry_seconds`. A poll that fails (the registry
unreachable, any unexpected error) is logged, counted (`detops_serve_follow_failures`) and tried again next poll.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from detops.serving.images import first_line
from detops.serving.loaded import LoadedModel, file_version, load, warm_up
from detops.serving.metrics import metrics
from detops.serving.settings import Reference, Source

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from detops.registry.files import Fetched
    from detops.serving.settings import ServeSettings

log = logging.getLogger("detops.serve")
MIN_RETRY_SECONDS = 30.0
FAILED_POLLS_SHOWN = 3  # consecutive failed polls after which /health says so


class LoadFailed(Exception):
    """A version could not be made ready; `stage` says where (download, load, warmup)."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {first_line(cause)}")
        self.stage = stage


class AliasMissing(Exception):
    """The followed alias is not set (any more): the champion keeps what it serves, a challenger stops serving."""


class Follower:
    """One role: the model it serves now (`current`), and the thread that keeps it current."""

    def __init__(self, role: str, source: Source, settings: ServeSettings) -> None:
        self.role, self.source, self.settings = role, source, settings
        self.name, self.alias = (source.name, source.alias) if isinstance(source, Reference) else ("", None)
        self.current: LoadedModel | None = None
        self.error: str | None = None  # why nothing or not the newest version is served, for /health and logs
        self.failed_polls = 0  # consecutive polls that failed
        self.ready = threading.Event()  # set at the first switch
        self._client: MlflowClient | None = None
        self._retry_at: dict[str, float] = {}  # failed version -> when it may be tried again
        self._example: bytes | None = None  # the version's input example, for warm-up
        self._stop = threading.Event()  # set at shutdown: ends the sleep between polls and the warm-up
        self._thread = threading.Thread(target=self._run, name=f"detops-follow-{role}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """End the thread at its next step (a compile in progress finishes: OpenVINO aborts the process when its
        thread is cut at exit)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                self.check()
                self.failed_polls = 0
            except Exception as exc:  # one bad poll must never end the following
                self.failed_polls += 1
                metrics().follow_failures.labels(self.role).inc()
                log.error("%s: poll %d of %s failed: %s", self.role, self.failed_polls, self.source, first_line(exc))
                self.error = f"cannot resolve {self.source}: {first_line(exc)}"
            poll = self.settings.serve.poll_seconds
            if self.current is not None and (self.alias is None or poll == 0):
                return  # a fixed version or a file never changes; poll_seconds 0 turns following off
            wait = poll if self.current is not None else min(poll or 5.0, 5.0)
            if self._stop.wait(wait):
                return

    def check(self) -> None:
        """One look at the source: load and switch to what it names if that is new (and not failed lately).
        Raises when the source cannot be read (the caller counts the failed poll)."""
        try:
            version, path = self._target()
        except AliasMissing as exc:
            if self.role != "champion" and self.current is not None:
                log.info("%s no longer set; its traffic goes to the champion", exc)
                self._gauge(self.current, 0)
                self.current = None
            self._set_error(f"{exc} in the registry")
            return
        if self.current is not None and self.current.info.version == version:
            self.error = None  # e.g. an alias rolled back from a broken version to the served one
            return
        if time.monotonic() < self._retry_at.get(version, 0.0):
            return
        try:
            model = self._prepare(version, path)
        except LoadFailed as exc:
            retry = max(MIN_RETRY_SECONDS, 10 * self.settings.serve.poll_seconds)
            self._retry_at[version] = time.monotonic() + retry
            metrics().load_failures.labels(self.role, version, exc.stage).inc()
            serving = f"; still serving version {self.current.info.version}" if self.current else ""
            log.error("%s version %s of %s not served: %s%s", self.role, version, self.source, exc, serving)
            self._set_error(f"version {version}: {exc}{serving}")
            return
        self._switch(model)

    def _target(self) -> tuple[str, Path | None]:
        """The version the source names right now, and its file when the source is one."""
        if isinstance(self.source, Path):
            return file_version(self.source), self.source
        if self.source.version:
            return self.source.version, None
        from mlflow.exceptions import MlflowException

        try:
            found = self.client().get_model_version_by_alias(self.name, str(self.alias))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise AliasMissing(f"alias {self.alias!r} of {self.name!r} is not set") from None
            raise
        return str(found.version), None

    def client(self) -> MlflowClient:
        if self._client is None:
            from detops.registry.client import connect

            self._client = connect(self.settings.ws)  # detops.tracking.mlflow_client: bounded requests
        return self._client

    def _prepare(self, version: str, path: Path | None) -> LoadedModel:
        """Download (unless `path`, a file source, is given), load and warm `version` beside the served model; the
        served one is untouched. The download is deleted once loaded: the runtime holds the model in memory."""
        from detops.registry.files import Fetched

        folder = self.settings.runtime / f"{self.role}-{version.replace(':', '-')}-{uuid.uuid4().hex[:8]}"
        stage, example = "download", None
        try:
            if path is not None:
                fetched = Fetched(path, path.suffix.lstrip(".") or "file")
            else:
                from detops.registry.files import fetch_version, input_example

                fetched = fetch_version(self.client(), self.name, version, folder, gpu=self.settings.gpu)
                example = input_example(self.client(), self.name, version, folder / "example")
            stage = "load"
            model = self._load(fetched, version)
            stage = "warmup"
            warm_up(model, example, (1,))
        except Exception as exc:
            raise LoadFailed(stage, exc) from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self._example = example
        return model

    def _load(self, fetched: Fetched, version: str) -> LoadedModel:
        """The fetched file, or its CPU fallback when the GPU variant cannot run here."""
        try:
            model = load(fetched.path, role=self.role, name=self.name or fetched.path.name, version=version,
                         alias=self.alias, variant=fetched.variant,
                         device="cuda" if fetched.fallback else "auto" if self.settings.gpu else "cpu",
                         threads=self.settings.threads, score_threshold=self.settings.score_threshold)
            if fetched.fallback and model.predictor.kind == "onnx" and "CUDA" not in model.predictor.runtime_name:
                raise RuntimeError(f"ONNX Runtime runs it on {model.predictor.runtime_name}, not CUDA")
            return model
        except Exception as exc:
            if fetched.fallback is None:
                raise
            log.warning("GPU variant %s of version %s cannot run here (%s); serving the CPU variant %s",
                        fetched.variant, version, first_line(exc), fetched.fallback.variant)
            return self._load(fetched.fallback, version)

    def _switch(self, model: LoadedModel) -> None:
        old, self.current = self.current, model  # the swap: one reference assignment
        self.ready.set()
        self.error = None
        info = model.info
        self._gauge(model, 1)
        if old is not None:
            self._gauge(old, 0)
            metrics().swaps.labels(self.role).inc()
            log.info("%s swapped from version %s to %s (%s)", self.role, old.info.version, info.version, info.variant)
        else:
            log.info("%s version %s of %s ready (%s, %s)", self.role, info.version, self.source, info.variant,
                     info.runtime)
        started, top = time.perf_counter(), self.settings.serve.max_batch_size
        try:  # the largest batch, while the model serves
            warm_up(model, self._example, (top,), stop=self._stop)
            model.warm.set()
            log.info("%s version %s: batch size %d warmed in %.1f s after it started serving", self.role,
                     info.version, top, time.perf_counter() - started)
        except Exception as exc:  # batch 1 answered: a larger size that fails is logged; requests meet it again
            log.error("%s version %s: warming up batch size %d failed: %s", self.role, info.version, top,
                      first_line(exc))

    def _gauge(self, model: LoadedModel, value: int) -> None:
        """1 for the served version, 0 once replaced (a batch that still holds it finishes on it)."""
        o = model.info
        metrics().loaded.labels(self.role, o.name, o.version, o.alias or "", o.variant).set(value)

    def _set_error(self, message: str) -> None:
        if message != self.error and not message.startswith("version "):
            log.warning("%s: %s", self.role, message)
        self.error = message
