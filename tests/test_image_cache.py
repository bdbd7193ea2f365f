"""`train.cache_images`: RAM when the decoded set fits the memory share, else one memory-mapped file reused across
runs (checksummed, rebuilt when corrupt), else decoding; training sees the same pixels whichever holds them."""

from __future__ import annotations

import errno
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _files import tree_bytes
from test_train import TINY, make_workspace

from detops.config import load_params
from detops.dataset.canonical import read_dataset
from detops.training import image_cache
from detops.training.data import ClassMap, DetectionDataset, build_records
from detops.training.image_cache import Memory, available_memory
from detops.workspace import Workspace

GIB = 1 << 30


def _dataset(ws: Workspace, split: str = "train") -> DetectionDataset:
    from detops.training.augment import eval_pipeline

    data = read_dataset(ws.split_json(split))
    records = build_records(data, ws.root, ClassMap.from_dataset(data))
    return DetectionDataset(records, ws.params.train.image_size, eval_pipeline(ws.params.train.image_size))


def _cache(dataset: DetectionDataset, mode: str, cache_dir: Path, share: float = 0.5,
           memory: Memory | None = None) -> tuple[Any, list[str]]:
    said: list[str] = []
    plan = dataset.cache("train", mode, cache_dir, share, threads=2, say=said.append, memory=memory)
    return plan, said


def _same_as_decoding(dataset: DetectionDataset) -> None:
    assert dataset.store is not None
    for index in range(len(dataset)):
        image, sx, sy, w, h = dataset.store.get(index)
        ref, rsx, rsy, rw, rh = dataset._decode(index)
        assert np.array_equal(image, ref) and (sx, sy, w, h) == (rsx, rsy, rw, rh)


def test_large_share_picks_ram_in_one_contiguous_array(tmp_path: Path) -> None:
    dataset = _dataset(make_workspace(tmp_path / "ws"))
    plan, said = _cache(dataset, "auto", tmp_path / "cache", share=1.0)
    assert plan.where == "ram" and plan.needed_bytes == len(dataset) * 64 * 64 * 3 <= plan.budget_bytes
    assert dataset.store is not None and dataset.store.images.flags.c_contiguous
    assert not (tmp_path / "cache").exists()
    assert len(said) == 1 and "ram" in said[0] and "GiB available" in said[0]
    _same_as_decoding(dataset)


def test_small_share_picks_disk_and_a_second_open_reuses_it(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    first = _dataset(ws)
    plan, _ = _cache(first, "auto", tmp_path / "cache", share=1e-9)
    assert plan.where == "disk" and not plan.reused and plan.path is not None and first.store is not None
    assert isinstance(first.store.images, np.memmap) and first.store.images.shape == (len(first), 64, 64, 3)
    _same_as_decoding(first)

    again = _dataset(ws)
    plan2, said = _cache(again, "auto", tmp_path / "cache", share=1e-9)
    assert plan2.where == "disk" and plan2.reused and plan2.path == plan.path
    assert "reused" in said[0]
    _same_as_decoding(again)
    # Another size is another cache file.
    other = _dataset(make_workspace(tmp_path / "ws2", "train.image_size=96"))
    plan3, _ = _cache(other, "disk", tmp_path / "cache")
    assert plan3.path != plan.path and not plan3.reused


def test_spawned_worker_reopens_the_memory_map_instead_of_copying_it(tmp_path: Path) -> None:
    dataset = _dataset(make_workspace(tmp_path / "ws"))
    _cache(dataset, "disk", tmp_path / "cache")
    assert dataset.store is not None
    payload = pickle.dumps(dataset.store)
    assert len(payload) < dataset.store.images.nbytes / 4
    copy = pickle.loads(payload)
    assert isinstance(copy.images, np.memmap) and np.array_equal(copy.images, dataset.store.images)


def test_dataloader_workers_read_the_shared_memory_map(tmp_path: Path) -> None:
    from detops.training.data import make_loader

    dataset = _dataset(make_workspace(tmp_path / "ws"))
    _cache(dataset, "disk", tmp_path / "cache")
    alone = [b["images"] for b in make_loader(dataset, 4, num_workers=0, pin_memory=False)]
    # spawned: this test process already runs torch's OpenMP threads (and, in the suite, Prefect's), which a fork
    # can copy mid-lock; a spawned worker gets the memory map by pickle and reopens it
    workers = [b["images"] for b in make_loader(dataset, 4, num_workers=2, pin_memory=False, start="spawn")]
    assert len(alone) == len(workers) and all(np.array_equal(a, b) for a, b in zip(alone, workers, strict=True))


def test_corrupt_cache_file_is_detected_rebuilt_and_said_once(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    raw = tree_bytes(ws.root / "data")
    plan, _ = _cache(_dataset(ws), "disk", tmp_path / "cache")
    data = bytearray(plan.path.read_bytes())
    data[-100] ^= 0xFF  # one pixel of the last image
    plan.path.write_bytes(bytes(data))

    dataset = _dataset(ws)
    rebuilt, said = _cache(dataset, "disk", tmp_path / "cache")
    assert rebuilt.where == "disk" and not rebuilt.reused
    assert sum("checksum mismatch" in line for line in said) == 1
    _same_as_decoding(dataset)
    again, said = _cache(_dataset(ws), "disk", tmp_path / "cache")
    assert again.reused and not any("checksum" in line for line in said)
    assert tree_bytes(ws.root / "data") == raw  # the images themselves are never touched


def test_disk_full_while_caching_falls_back_to_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = make_workspace(tmp_path / "ws", splits=(10, 11))
    raw = tree_bytes(ws.root / "data")
    image_cache_chunk = 4
    monkeypatch.setattr(image_cache, "CHUNK", image_cache_chunk)  # several writes, so the failure is mid-file
    writes: list[int] = []

    def fill_up(out: Any, data: memoryview) -> None:
        if writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(out.write(data))

    monkeypatch.setattr(image_cache, "_append", fill_up)
    dataset = _dataset(ws)
    plan, said = _cache(dataset, "disk", tmp_path / "cache")
    assert writes and plan.where == "decode" and dataset.store is None
    assert any("disk filled" in line and "decoded on the fly" in line for line in said)
    assert list((tmp_path / "cache").iterdir()) == []  # the partial file is gone
    sample = dataset[0]  # training still gets its images
    assert sample["image"].shape == (3, 64, 64)
    assert tree_bytes(ws.root / "data") == raw  # nothing lost


def test_false_decodes_every_time(tmp_path: Path) -> None:
    dataset = _dataset(make_workspace(tmp_path / "ws"))
    plan, _ = _cache(dataset, "false", tmp_path / "cache", share=1.0)
    assert plan.where == "decode" and dataset.store is None


def test_cgroup_limit_bounds_available_memory(tmp_path: Path) -> None:
    import psutil

    host = psutil.virtual_memory().available
    (tmp_path / "memory.max").write_text(f"{GIB}\n")
    (tmp_path / "memory.current").write_text(f"{GIB // 2}\n")
    (tmp_path / "memory.stat").write_text(f"anon 1\ninactive_file {GIB // 8}\nactive_file 5\n")
    memory = available_memory(tmp_path)
    assert memory == Memory(GIB // 2 + GIB // 8, "cgroup") or host < GIB // 2 + GIB // 8
    (tmp_path / "memory.max").write_text("max\n")
    assert available_memory(tmp_path).source == "psutil"
    assert available_memory(tmp_path / "absent").source == "psutil"


@pytest.mark.parametrize(("value", "expected"), [("true", "ram"), ("false", "false"), ("disk", "disk"),
                                                 ("auto", "auto")])
def test_cache_images_accepts_the_earlier_booleans(value: str, expected: str) -> None:
    assert load_params(None, [f"train.cache_images={value}"]).train.cache_images == expected


@pytest.mark.slow
def test_training_from_the_disk_cache_equals_training_from_ram(tmp_path: Path) -> None:
    """auto with a share the set cannot fit: disk; the val curve and the weights equal a RAM-cached run; the
    next run reuses the file."""
    from mlflow import MlflowClient

    from detops import tracking

    def train(ws: Workspace, *overrides: str) -> tuple[dict[str, str], list[float], dict[str, Any]]:
        """`detops train` in a child process: the run starts from a clean process, as `dvc repro` runs it (in the
        suite's process, after the tests that run Prefect servers and spawn workers, training here once died
        with a segmentation fault that no run of this file alone showed)."""
        import torch

        sets = [arg for override in (*TINY, *overrides) for arg in ("--set", override)]
        done = subprocess.run([sys.executable, "-m", "detops.cli", "-w", str(ws.root), *sets, "train"],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        client = MlflowClient(tracking.tracking_uri(ws))
        run_id = str(tracking.read_run_id(ws))
        curve = [m.value for m in sorted(client.get_metric_history(run_id, "val/map"), key=lambda m: m.step)]
        state = torch.load(ws.models / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        return client.get_run(run_id).data.params, curve, state

    common = ("train.epochs=2", "train.ema=false")
    disk_sets = ("train.cache_images=auto", "train.cache_ram_share=1e-9", *common)
    ram_sets = ("train.cache_images=auto", "train.cache_ram_share=1.0", *common)
    disk_ws, ram_ws = make_workspace(tmp_path / "disk", *disk_sets), make_workspace(tmp_path / "ram", *ram_sets)
    disk_params, disk_curve, disk_state = train(disk_ws, *disk_sets)
    ram_params, ram_curve, ram_state = train(ram_ws, *ram_sets)

    assert disk_params["train.cache.train.where"] == "disk" and disk_params["train.cache.val.where"] == "disk"
    assert disk_params["train.cache.train.reused"] == "False"
    assert ram_params["train.cache.train.where"] == "ram" and ram_params["train.cache.val.where"] == "ram"
    assert len(disk_curve) == 2 and disk_curve == ram_curve
    for key, value in ram_state.items():
        assert np.array_equal(value.numpy(), disk_state[key].numpy()), key

    again_params, again_curve, _ = train(disk_ws, *disk_sets)
    assert again_params["train.cache.train.reused"] == "True" and again_params["train.cache.val.reused"] == "True"
    assert again_curve == disk_curve
