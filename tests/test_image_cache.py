"""`train.cache_images`: RAM when the decoded set fits the memory share, else one memory-mapped file reused across
runs (checksummed, rebuilt when corrupt), else decoding; training sees the same pixels whichever holds them."""

from __future__ import annotations

import errno
import importlib
import os
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
           memory: Memory | None = None, ranks: int = 1) -> tuple[Any, list[str]]:
    said: list[str] = []
    plan = dataset.cache("train", mode, cache_dir, share, threads=2, say=said.append, memory=memory, ranks=ranks)
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
    # the partial file is gone; the lock the builders take stays
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".lock"]
    sample = dataset[0]  # training still gets its images
    assert sample["image"].shape == (3, 64, 64)
    assert tree_bytes(ws.root / "data") == raw  # nothing lost


def test_false_decodes_every_time(tmp_path: Path) -> None:
    dataset = _dataset(make_workspace(tmp_path / "ws"))
    plan, _ = _cache(dataset, "false", tmp_path / "cache", share=1.0)
    assert plan.where == "decode" and dataset.store is None


V1_UNLIMITED = "9223372036854771712"  # what cgroup v1 writes for no limit
MIB = 1 << 20


def _layout(root: Path, memberships: str, mounts: list[str], files: dict[str, str]) -> Path:
    """A real /proc/self/{cgroup,mountinfo} and cgroup file system tree under `root`, as the kernel lays them out."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(memberships)
    (root / "proc/self/mountinfo").write_text("".join(f"{index + 30} 23 0:{index + 40} {line}\n"
                                                      for index, line in enumerate(mounts)))
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_limit_is_the_tightest_over_the_nested_chain(tmp_path: Path) -> None:
    """A process in /user.slice/job/step: the limit is set two levels up (the step and the job set none), the
    least headroom is on the job, whose usage is highest after its reclaimable page cache."""
    v2 = "sys/fs/cgroup"
    root = _layout(tmp_path, "0::/user.slice/job/step\n",
                   ["/ /proc rw - proc proc rw", "/ /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"], {
        f"{v2}/memory.stat": "anon 1\n",  # the root cgroup has no memory.max
        f"{v2}/user.slice/memory.max": f"{4 * GIB}\n",
        f"{v2}/user.slice/memory.current": f"{GIB}\n",
        f"{v2}/user.slice/memory.stat": f"anon 1\ninactive_file {GIB // 4}\n",
        f"{v2}/user.slice/job/memory.max": f"{2 * GIB}\n",
        f"{v2}/user.slice/job/memory.current": f"{GIB + GIB // 2}\n",
        f"{v2}/user.slice/job/memory.stat": f"active_file 3\ninactive_file {GIB // 8}\n",
        f"{v2}/user.slice/job/step/memory.max": "max\n",
        f"{v2}/user.slice/job/step/memory.current": f"{GIB}\n",
    })
    assert image_cache.cgroup_memory(root) == image_cache.CgroupMemory(2 * GIB, GIB // 2 + GIB // 8)
    # A limit deeper down, on the process's own cgroup, is tighter still.
    (root / v2 / "user.slice/job/step/memory.max").write_text(f"{GIB + 100 * MIB}\n")
    assert image_cache.cgroup_memory(root) == image_cache.CgroupMemory(GIB + 100 * MIB, 100 * MIB)


def test_cgroup_v1_memory_controller_limit_is_read_through_its_mount(tmp_path: Path) -> None:
    """A hybrid host (v1 controllers, an empty v2 tree beside them), the process nested two levels deep in the memory
    hierarchy: the limit sits on the middle level; the root and the leaf say "no limit" the v1 way."""
    v1 = "sys/fs/cgroup/memory"
    root = _layout(tmp_path, "9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n",
                   ["/ /sys/fs/cgroup rw - tmpfs tmpfs rw", "/ /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset",
                    "/ /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
                    "/ /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw"], {
        f"{v1}/memory.limit_in_bytes": V1_UNLIMITED, f"{v1}/memory.usage_in_bytes": f"{20 * GIB}",
        f"{v1}/process_api/memory.limit_in_bytes": f"{3 * GIB}\n",
        f"{v1}/process_api/memory.usage_in_bytes": f"{GIB}\n",
        f"{v1}/process_api/memory.stat": f"inactive_file 7\ntotal_inactive_file {GIB // 2}\n",
        f"{v1}/process_api/abc/memory.limit_in_bytes": V1_UNLIMITED,
        f"{v1}/process_api/abc/memory.usage_in_bytes": f"{GIB // 2}",
        "sys/fs/cgroup/unified/cgroup.procs": "1\n",
    })
    assert image_cache.cgroup_memory(root) == image_cache.CgroupMemory(3 * GIB, 3 * GIB - GIB // 2)


def test_cgroup_v1_without_a_namespace_is_found_below_the_mount_root(tmp_path: Path) -> None:
    """Docker on cgroup v1 without a cgroup namespace: /proc names the full path, the mount is rooted at it."""
    root = _layout(tmp_path, "5:memory,hugetlb:/docker/0123abcd\n",
                   ["/docker/0123abcd /sys/fs/cgroup/memory ro - cgroup cgroup rw,hugetlb,memory"], {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{512 * MIB}\n",
        "sys/fs/cgroup/memory/memory.usage_in_bytes": f"{500 * MIB}\n",
        "sys/fs/cgroup/memory/memory.stat": f"total_inactive_file {MIB}\n",
    })
    assert image_cache.cgroup_memory(root) == image_cache.CgroupMemory(512 * MIB, 13 * MIB)
    # The limit bounds what the cache plans with, whatever the host has free.
    assert available_memory(root) == Memory(13 * MIB, 512 * MIB, "cgroup")


def test_no_cgroup_limit_means_the_machines_memory(tmp_path: Path) -> None:
    import psutil

    root = _layout(tmp_path, "0::/a\n", ["/ /sys/fs/cgroup rw - cgroup2 cgroup2 rw"], {
        "sys/fs/cgroup/a/memory.max": "max\n", "sys/fs/cgroup/a/memory.current": f"{GIB}\n"})
    assert image_cache.cgroup_memory(root) is None
    memory = available_memory(root)
    assert memory.source == "psutil" and memory.limit == psutil.virtual_memory().total
    assert image_cache.cgroup_memory(tmp_path / "absent") is None


def test_ddp_ranks_share_one_plan_whatever_each_sees_free(tmp_path: Path) -> None:
    """Rank 0 cached in RAM before rank 1 planned, so rank 1 sees less free; with the ranks counted, both plan from
    the limit split between them and agree. Alone, a process plans from what is available now."""
    from detops.config.train import TrainParams
    from detops.training.data import local_ranks

    dataset = _dataset(make_workspace(tmp_path / "ws"))
    needed = len(dataset) * 64 * 64 * 3
    limit = 4 * needed
    first, second = Memory(3 * needed, limit, "cgroup"), Memory(needed // 2, limit, "cgroup")
    plans = [_cache(dataset, "auto", tmp_path / "cache", share=0.5, memory=m, ranks=2)[0] for m in (first, second)]
    assert [(p.where, p.budget_bytes) for p in plans] == [("ram", needed)] * 2
    assert "over 2 ranks" in plans[0].describe() and plans[0].params()["train.cache.train.ranks"] == 2
    alone = [_cache(dataset, "auto", tmp_path / "cache", share=0.5, memory=m)[0].where for m in (first, second)]
    assert alone == ["ram", "disk"]

    assert local_ranks(TrainParams(accelerator="cpu", devices=3)) == 3
    assert local_ranks(TrainParams(accelerator="cpu")) == 1


def test_local_ranks_follow_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from detops.config.train import TrainParams
    from detops.training.data import local_ranks

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_ranks(TrainParams()) == 4


def test_a_change_of_opencv_or_of_the_decode_code_is_another_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    from detops.training import data

    ws = make_workspace(tmp_path / "ws")
    plan, _ = _cache(_dataset(ws), "disk", tmp_path / "cache")
    monkeypatch.setattr(cv2, "__version__", "0.0.0-other")
    data.pixel_code.cache_clear()
    try:
        other, _ = _cache(_dataset(ws), "disk", tmp_path / "cache")
    finally:
        data.pixel_code.cache_clear()
    assert other.path != plan.path and not other.reused

    module = tmp_path / "decoder_under_test.py"
    module.write_text("def decode(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import decoder_under_test

    before = image_cache.decode_code(decoder_under_test)
    module.write_text("def decode(x):\n    return x[::-1]\n")
    assert image_cache.decode_code(importlib.reload(decoder_under_test)) != before


def _sized(ws: Workspace, size: int) -> DetectionDataset:
    from detops.training.augment import eval_pipeline

    data = read_dataset(ws.split_json("train"))
    return DetectionDataset(build_records(data, ws.root, ClassMap.from_dataset(data)), size, eval_pipeline(size))


def test_old_disk_caches_are_evicted_newest_kept_the_one_in_use_never(tmp_path: Path) -> None:
    ws, cache = make_workspace(tmp_path / "ws"), tmp_path / "cache"
    val = _dataset(ws, "val").cache("val", "disk", cache, 0.5, threads=2, say=print, keep=1)
    (cache / "0123.npy").write_bytes(b"an earlier layout")
    (cache / "0123.json").write_text('{"format": 1, "shape": [1, 1, 1, 3]}')

    def open_size(size: int, keep: int) -> tuple[Any, list[str]]:
        said: list[str] = []
        plan = _sized(ws, size).cache("train", "disk", cache, 0.5, threads=2, say=said.append, keep=keep)
        assert plan.path is not None and plan.path.is_file()
        return plan, said

    a, _ = open_size(64, keep=2)
    assert not (cache / "0123.npy").exists()  # never reusable, deleted at the first eviction
    b, _ = open_size(80, keep=2)
    c, said = open_size(96, keep=2)
    assert not a.path.exists() and b.path.exists() and c.path.exists()
    assert not a.path.with_suffix(".json").exists()
    assert any("deleted 1 older disk cache(s) of train" in line and a.path.name in line for line in said)
    # b used again: the most recently used; with one kept, c goes.
    again, _ = open_size(80, keep=1)
    assert again.reused and again.path == b.path and not c.path.exists()
    # Another run's cache that looks newer than the one in use: the one in use stays, counted among the kept.
    d, _ = open_size(112, keep=5)
    os.utime(d.path.with_suffix(".json"), (4e9, 4e9))
    in_use, said = open_size(80, keep=1)
    assert in_use.path == b.path and b.path.exists() and not d.path.exists()
    assert val.path is not None and val.path.with_suffix(".json").exists()  # another dataset's caches are its own
    assert sorted(p.name for p in cache.glob("*.npy")) == sorted([b.path.name, val.path.name])


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
