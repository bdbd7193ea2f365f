"""Going on after an interruption: the resume checkpoint, where it lives, when it is written and when it is used.

A killed run (a preempted spot GPU, a rebooted worker, `kill -9`) must not start training over. So `train` keeps
its full state (weights, EMA, optimizer, schedule, loop position, callbacks) in `.detops/resume/<key>.ckpt`, where
`<key>` is the step's Prefect/DVC key (params sections, the content of its deps, its code and the versions of the
libraries that decide its results: `detops.pipeline.fingerprint`). The next `train` with the same key goes on
from it, whoever starts it (the flow, a Prefect retry, `dvc repro`, `detops train`); a checkpoint with another key
is set aside with a message, never resumed. The folder is outside the declared outputs, so DVC's clean-before-run
cannot delete it; a completed run moves the file to `models/last.ckpt`.

When: at the end of every epoch, and inside an epoch every `train.checkpoint_minutes`, so at most that much work is
lost. A mid-epoch checkpoint records the epoch and how many batches it finished (`ResumableLoader`); the resumed
run skips exactly those batches of the same epoch order, and every sample's augmentation comes from (seed, epoch,
index) (`training.data`), so it sees the batches an uninterrupted run would have seen next.

How: each file is written beside its target and renamed over it (`AtomicCheckpointIO`), so a kill during the
write leaves the previous checkpoint whole (the half-written temporary is removed by the next run). The best
weights so far (`best.ckpt`, which DVC also deletes before the stage runs) are copied beside the resume file
before it is written, so the two always agree.

Where the disk does not outlive the run (a pod, a spot VM), `paths.resume_store` names an object-store prefix
(any fsspec URL) that every checkpoint is copied to as soon as it is written, the best weights first: an object
appears whole or not at all, and a checkpoint met with the best copy of the next save resumes to the same result,
since the replayed epoch decides the same. A run with no local checkpoint of its key downloads the store's, so a
new pod goes on where the killed one stopped; a completed run deletes it there.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from detops.atomic import atomic_path
from detops.objectstore import open_fs
from detops.workspace import RESUME_DIR

SET_ASIDE = "set-aside"
BEST_COPY = ".best-weights.ckpt"  # suffix of the best weights' copy beside a resume checkpoint


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to go on from: its file, the MLflow run it logged into, and where it stopped."""

    path: Path
    run_id: str | None
    epoch: int
    step: int


def resume_file(root: Path, key: str) -> Path:
    return root / RESUME_DIR / f"{key}.ckpt"


def best_copy(resume: Path) -> Path:
    """The best weights at the time of the resume checkpoint, beside it."""
    return resume.with_name(f"{resume.stem}{BEST_COPY}")


def interrupted(root: Path, store: str = "") -> bool:
    """Whether a killed `train` left a resume checkpoint (of any key) here or in `store`: a run about to change the
    data finishes that training first, on the data it had."""
    folder = root / RESUME_DIR
    if folder.is_dir() and any(not p.name.endswith(BEST_COPY) for p in folder.glob("*.ckpt")):
        return True
    if not store:
        return False
    fs, prefix = open_fs(store)
    return fs.exists(prefix) and any(
        str(name).endswith(".ckpt") and not str(name).endswith(BEST_COPY) for name in fs.ls(prefix, detail=False))


def find_resume_point(root: Path, key: str, say: Callable[[str], None], tidy: bool = True,
                      store: str = "") -> ResumePoint | None:
    """The checkpoint an interrupted `train` with this key left, if any: here, or else in `store`
    (paths.resume_store), downloaded. Half-written temporaries are removed; checkpoints of other keys (other params,
    data, code or library versions) and unreadable ones are moved to `set-aside/` and named, never resumed.
    `tidy`: False on the extra ranks of a multi-device run, which only read (rank 0 moves files)."""
    from filelock import FileLock

    folder = root / RESUME_DIR
    wanted = resume_file(root, key)
    if store:
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        return None
    with FileLock(str(folder / ".lock")):  # the ranks of one machine: one downloads, none tidies meanwhile
        if store and not wanted.is_file():
            _download(store, wanted, say)
        if tidy:
            _tidy(folder, wanted, say)
    if not wanted.is_file():
        return None
    try:
        state = torch.load(wanted, map_location="cpu", weights_only=True)
        mark = state["detops"]
    except Exception as exc:  # a checkpoint we cannot read is never resumed, and never silently deleted
        if tidy:
            _set_aside(wanted, f"it cannot be read ({type(exc).__name__}: {exc})", say)
        return None
    if mark.get("key") != key:
        if tidy:
            _set_aside(wanted, "its recorded key differs from its name", say)
        return None
    return ResumePoint(wanted, mark.get("run_id"), int(state.get("epoch", 0)), int(state.get("global_step", 0)))


def _tidy(folder: Path, wanted: Path, say: Callable[[str], None]) -> None:
    for tmp in folder.glob(".*.tmp"):
        say(f"removed {tmp.name}: a checkpoint write that was interrupted (the previous checkpoint is whole)")
        tmp.unlink()
    for other in sorted(folder.glob("*.ckpt")):
        if other.name.endswith(BEST_COPY) or other == wanted:
            continue
        _set_aside(other, "it was written by a run with other params, data, code or library versions", say)


def _set_aside(path: Path, why: str, say: Callable[[str], None]) -> None:
    target = path.parent / SET_ASIDE
    target.mkdir(exist_ok=True)
    for old in target.glob("*.ckpt"):  # keep one generation: a set-aside file is for a look, not a store
        old.unlink()
    for item in (path, best_copy(path)):
        if item.is_file():
            os.replace(item, target / item.name)
    say(f"not resuming from {path.name}: {why}; moved to {target}")


def restore_best(point: ResumePoint, best: Path) -> None:
    """Put back the best weights the resume checkpoint knows of (DVC deletes `best.ckpt` before the stage)."""
    copy = best_copy(point.path)
    if copy.is_file():
        best.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(best) as tmp:
            shutil.copyfile(copy, tmp)


def finish(point_file: Path, last: Path, store: str = "") -> None:
    """A completed run: the resume file becomes `last.ckpt` (the full final state), its best copy goes, here and
    in `store`."""
    best_copy(point_file).unlink(missing_ok=True)
    if point_file.is_file():
        last.parent.mkdir(parents=True, exist_ok=True)
        os.replace(point_file, last)
    if store:
        fs, prefix = open_fs(store)
        for name in (point_file.name, best_copy(point_file).name):
            if fs.exists(f"{prefix}/{name}"):
                fs.rm(f"{prefix}/{name}")


def upload(store: str, resume: Path) -> None:
    """Copy the resume checkpoint (and, first, its best weights) to `store`, under the same names."""
    fs, prefix = open_fs(store)
    fs.makedirs(prefix, exist_ok=True)
    for item in (best_copy(resume), resume):
        if item.is_file():
            fs.put_file(str(item), f"{prefix}/{item.name}")


def _download(store: str, wanted: Path, say: Callable[[str], None]) -> None:
    """The store's checkpoint of this key (and its best weights) into the resume folder, each renamed into place
    once whole; nothing when the store has none."""
    fs, prefix = open_fs(store)
    remote = f"{prefix}/{wanted.name}"
    if not fs.exists(remote):
        return
    for name, target in ((best_copy(wanted).name, best_copy(wanted)), (wanted.name, wanted)):
        if fs.exists(f"{prefix}/{name}"):
            with atomic_path(target) as tmp:
                fs.get_file(f"{prefix}/{name}", str(tmp))
    say(f"downloaded the resume checkpoint of this run's key from {store.rstrip('/')}/{wanted.name}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint file is written beside its target and renamed over it: a kill mid-write leaves the
    previous file whole. (Lightning's own write goes through a temporary in the system temp folder, which is
    not atomic where that is another file system, as in a container.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())


class RelocatableCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose saved state follows the workspace: resumed in another directory (a new pod that
    downloaded the checkpoint from paths.resume_store), it keeps its best score and files, the same files of the
    same workspace wherever that now is. (Lightning drops the best score when the folder's path changed: the next
    validation would then count as the best, whatever came before.)"""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            def move(path: str | None) -> str | None:
                return str(Path(new) / Path(path).relative_to(old)) if path and Path(path).is_relative_to(old) else path

            state_dict = {**state_dict, "dirpath": new, **{key: move(state_dict.get(key)) for key in (
                "best_model_path", "kth_best_model_path", "last_model_path")},
                "best_k_models": {move(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}}
        super().load_state_dict(state_dict)


class ResumeCheckpoint(RelocatableCheckpoint):
    """Writes the resume checkpoint at every epoch end and every `minutes` inside an epoch, stamped with the
    key and the MLflow run; the best weights are copied beside it first."""

    def __init__(self, path: Path, key: str, best: Path, minutes: float, store: str = "") -> None:
        super().__init__(dirpath=path.parent, filename=path.name.removesuffix(self.FILE_EXTENSION), monitor=None,
                         save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False)
        self.path, self.key, self.best, self.seconds, self.store = path, key, best, minutes * 60, store
        self.run_id: str | None = None
        self._saved_at = time.monotonic()

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["detops"] = {"key": self.key, "run_id": self.run_id}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._copy_best(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self._upload(trainer)
        self._saved_at = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        due = bool(self.seconds) and time.monotonic() - self._saved_at >= self.seconds
        if trainer.strategy.broadcast(due, src=0):  # every rank saves together (the save is collective)
            self._copy_best(trainer)
            trainer.save_checkpoint(self.path)
            self._upload(trainer)
            self._saved_at = time.monotonic()

    def _upload(self, trainer: pl.Trainer) -> None:
        if self.store and trainer.is_global_zero:
            upload(self.store, self.path)

    def _copy_best(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero and self.best.is_file():
            with atomic_path(best_copy(self.path)) as tmp:
                shutil.copyfile(self.best, tmp)
