"""Split COCO files -> batches of letterboxed uint8 images with xyxy boxes and contiguous labels.

Every random choice of an epoch derives from (seed, epoch, index): the sampler's order from seed + epoch,
each sample's augmentation from a per-sample seed. A run resumed mid-way therefore sees exactly the
batches an uninterrupted run would have seen, whichever worker loads them.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from detops.cpus import usable_cpus
from detops.dataset.canonical import Dataset as CocoDataset
from detops.dataset.canonical import dataset_root
from detops.dataset.paths import resolve_inside
from detops.model import preprocess
from detops.model.preprocess import Letterbox, fit_longest_side, pad_offsets, read_rgb
from detops.training import image_cache
from detops.training.image_cache import CachePlan, ImageStore, Memory, build_store, decode_code, file_identity

if TYPE_CHECKING:
    from detops.config.train import TrainParams


@dataclass(frozen=True)
class ClassMap:
    """Original COCO category ids <-> contiguous labels 0..C-1, in sorted id order."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_dataset(cls, dataset: CocoDataset) -> ClassMap:
        cats = sorted(dataset["categories"], key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c["name"]) for c in cats))

    @property
    def label_of(self) -> dict[int, int]:
        return {cat_id: label for label, cat_id in enumerate(self.ids)}

    def to_dict(self) -> dict[str, list[Any]]:
        return {"ids": list(self.ids), "names": list(self.names)}


@dataclass(frozen=True)
class Record:
    """One image to load: its file, COCO id and boxes (xyxy, original pixels) with labels."""

    path: Path
    image_id: int
    boxes: np.ndarray
    labels: np.ndarray
    sha1: str | None = None  # content hash from the dataset, naming the image in the disk cache's key


def build_records(dataset: CocoDataset, workspace_root: Path, classes: ClassMap) -> list[Record]:
    """Records in dataset order; crowd and zero-size boxes are not training targets and are left out."""
    root = dataset_root(dataset, workspace_root)
    label_of = classes.label_of
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in dataset["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    records = []
    for image in dataset["images"]:
        anns = [a for a in by_image.get(int(image["id"]), []) if not a.get("iscrowd")]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)[keep]
        labels = np.array([label_of[int(a["category_id"])] for a in anns], dtype=np.int64)[keep]
        path = resolve_inside(root, str(image["file_name"]), f"image id {image['id']}")
        records.append(Record(path, int(image["id"]), boxes, labels, image.get("sha1")))
    return records


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 32-bit seed per (run seed, epoch, sample)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class DetectionDataset(Dataset[dict[str, Any]]):
    """Images resized to their longest side = `image_size`, then `pipeline` (padding + augmentation).

    Items are addressed by index or by (index, epoch), the latter coming from `EpochSampler`.
    """

    def __init__(self, records: list[Record], image_size: int, pipeline: Any, seed: int = 0) -> None:
        self.records = records
        self.image_size = image_size
        self.pipeline = pipeline
        self.seed = seed
        self.store: ImageStore | None = None

    def __len__(self) -> int:
        return len(self.records)

    def cache(self, name: str, mode: str, cache_dir: Path, ram_share: float, threads: int,
              say: Callable[[str], None], memory: Memory | None = None, keep: int | None = None,
              ranks: int = 1) -> CachePlan:
        """Decode and resize every image once, into RAM or a disk cache as `mode` says (`image_cache`); `keep`
        (train.cache_keep) and `ranks` (`local_ranks`) as `build_store` reads them."""
        def identities() -> list[str]:
            return [file_identity(r.path, r.sha1) for r in self.records]

        self.store, plan = build_store(name, mode, len(self.records), self.image_size, self._decode, identities,
                                       pixel_code(), cache_dir, ram_share, threads, say, memory, keep, ranks)
        return plan

    def _decode(self, index: int) -> tuple[np.ndarray, float, float, int, int]:
        image = read_rgb(self.records[index].path)
        h, w = image.shape[:2]
        resized, sx, sy = fit_longest_side(image, self.image_size)
        return resized, sx, sy, w, h

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (key, 0) if isinstance(key, int) else key
        record = self.records[index]
        image, sx, sy, w, h = self.store.get(index) if self.store is not None else self._decode(index)
        boxes = record.boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
        self.pipeline.set_random_seed(sample_seed(self.seed, epoch, index))
        out = self.pipeline(image=image, bboxes=boxes, labels=record.labels)
        pad_x, pad_y = pad_offsets(image.shape[0], image.shape[1], self.image_size)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1),
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1)),
            "image_id": record.image_id,
            "letterbox": Letterbox(w, h, sx, sy, pad_x, pad_y),
        }


@functools.cache
def pixel_code() -> str:
    """The code the cached pixels come from: decoding and resizing (`model.preprocess`), this dataset's `_decode`
    and the cache's layout (`image_cache`)."""
    return decode_code(preprocess, DetectionDataset._decode, image_cache)


def local_ranks(params: TrainParams) -> int:
    """Training processes on this machine, each with its own image cache: torchrun's LOCAL_WORLD_SIZE where it
    started them, else the devices Lightning will train on (one process each)."""
    started = os.environ.get("LOCAL_WORLD_SIZE")
    if started:
        return max(1, int(started))
    gpus = torch.cuda.device_count() if params.accelerator != "cpu" and torch.cuda.is_available() else 0
    if params.devices == "auto":
        return max(1, gpus)
    return max(1, gpus if params.devices == -1 else params.devices)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "boxes": [s["boxes"] for s in samples],
        "labels": [s["labels"] for s in samples],
        "image_ids": [s["image_id"] for s in samples],
        "letterbox": [s["letterbox"] for s in samples],
    }


class EpochSampler(DistributedSampler):
    """Lightning's DDP sampler (shuffled by seed + epoch) that also hands the epoch to the dataset, and skips the
    samples a resumed epoch already trained on (`resume_at`: the epoch and how many of this rank's samples)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_at: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # kept, not cleared: Lightning may start an iterator of the resumed epoch more than once before training
        skip = self.resume_at[1] if self.resume_at is not None and self.resume_at[0] == self.epoch else 0
        for index in itertools.islice(super().__iter__(), skip, None):
            yield int(index), int(self.epoch)


def resolve_workers(num_workers: int) -> int:
    """-1 = on a GPU machine one worker per spare core, at most 8 (more rarely helps a detector's input
    pipeline); on a CPU-only machine none: the model's math already uses every core, images are cached in
    RAM or memory-mapped, and forked workers under Prefect's threads were seen to die at teardown."""
    if num_workers >= 0:
        return num_workers
    import torch

    return min(usable_cpus() - 1, 8) if torch.cuda.is_available() else 0


def _init_worker(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # workers already run in parallel; nested OpenCV threads only contend
    torch.set_num_threads(1)


def make_loader(dataset: Dataset[Any], batch_size: int, num_workers: int, pin_memory: bool,
                sampler: Any = None, shuffle: bool = False, start: str | None = None) -> DataLoader[Any]:
    """`start`: how workers start (None: the platform's default, fork on Linux, which shares a RAM cache
    copy-on-write). `spawn` where the process already runs OpenMP or other threads, whose state a fork copies
    half-held (a forked worker can then hang in `torch.set_num_threads`); a disk cache reopens its map there."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, collate_fn=collate,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      worker_init_fn=_init_worker if num_workers > 0 else None,
                      multiprocessing_context=start if num_workers > 0 else None)


class DetectionDataModule(pl.LightningDataModule):
    """Train loader with the epoch-seeded sampler (DDP-aware), plain ordered val loader."""

    def __init__(self, train: DetectionDataset, val: DetectionDataset, batch_size: int, num_workers: int,
                 pin_memory: bool, seed: int, val_batch_size: int | None = None) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.pin_memory, self.seed = batch_size, num_workers, pin_memory, seed
        self.val_batch_size = val_batch_size or batch_size
        self.cache_params: dict[str, Any] = {}  # where the image caches went, for the run's MLflow params
        self.sampler: EpochSampler | None = None
        self.resume_at: tuple[int, int] | None = None  # (epoch, this rank's samples already trained), on resume

    def train_dataloader(self) -> DataLoader[Any]:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        self.sampler = EpochSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        self.sampler.resume_at = self.resume_at
        return make_loader(self.train_set, self.batch_size, self.num_workers, self.pin_memory, sampler=self.sampler)

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint, mid-epoch ones too: the epoch and how many of its batches were trained."""
        trainer = self.trainer
        if trainer is None:
            return {}
        return {"epoch": trainer.current_epoch, "batches": trainer.fit_loop.epoch_loop.batch_progress.current.ready}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """A resumed run skips the batches its epoch already trained (Lightning restores this before the first
        batch, possibly after the loader was made)."""
        if state_dict:
            self.resume_at = (int(state_dict["epoch"]), int(state_dict["batches"]) * self.batch_size)
            if self.sampler is not None:
                self.sampler.resume_at = self.resume_at

    def val_dataloader(self) -> DataLoader[Any]:
        return make_loader(self.val_set, self.val_batch_size, self.num_workers, self.pin_memory)
