"""Benchmark: GPU training throughput and utilisation, the issue's H100 side-by-side setting.

BCCD from scratch at 640 px, the train split repeated 10x (2,050 images an epoch), batch 32, 8 loader
workers, images cached in RAM, bf16-mixed (precision auto), channels-last. Prints train images/s, mean GPU
utilisation (sampled by nvidia-smi every 0.5 s during training), time to each val mAP, and test mAP,
next to the reference measured for Ultralytics YOLO11n with the same data and settings: about 380 train
images/s, test mAP 0.611 / mAP@0.5 0.906 after 20 epochs (127 s). Target: 2x its images/s, its test mAP in
at most half its time.

    .venv/bin/python benchmarks/train_gpu.py [--repeat 10] [--set train.epochs=20 ...]

Needs ../shared (BCCD) and a CUDA GPU; says so and exits 0 without them. `--set train.accelerator=cpu`
with small settings runs the same code on a CPU (a smoke run, not a measurement).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_demo import REPO, bench_parser, fresh_workspace, prepare, report

SHARED = REPO.parent / "shared"
REFERENCE = {"model": "Ultralytics YOLO11n", "images_per_second": 380, "test_map": 0.611, "test_map_50": 0.906,
             "epochs": 20, "train_seconds": 127}
OVERRIDES = [
    "import.format=voc",
    f"import.source={SHARED / 'datasets/bccd/BCCD'}",
    "validate.on_error=drop",
    "validate.data_docs=false",
    "split.respect_source_splits=true",
    "train.pretrained=false",
    "train.image_size=640",
    "train.batch_size=32",
    "train.num_workers=8",
    "train.epochs=20",
    "train.patience=0",
    "evaluate.batch_size=64",
]


def repeat_train_split(ws: Any, times: int) -> None:
    """The train split `times` over, each copy with fresh image and annotation ids (same files)."""
    from detops.dataset.canonical import read_dataset, write_dataset

    path = ws.split_json("train")
    original = read_dataset(path)
    step_images = max(int(im["id"]) for im in original["images"])
    step_boxes = max((int(a["id"]) for a in original["annotations"]), default=0)
    images, annotations = [], []
    for copy in range(times):
        images += [{**im, "id": int(im["id"]) + copy * step_images} for im in original["images"]]
        annotations += [
            {**a, "id": int(a["id"]) + copy * step_boxes, "image_id": int(a["image_id"]) + copy * step_images}
            for a in original["annotations"]
        ]
    write_dataset(path, {**original, "images": images, "annotations": annotations})


class GpuSampler:
    """nvidia-smi's utilisation.gpu every 0.5 s while training runs, in a background thread."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "500"],
                stdout=subprocess.PIPE, text=True,
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line.strip()))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()

    def summary(self) -> str:
        if not self.samples:
            return "n/a (no nvidia-smi)"
        busy = sorted(self.samples)
        return f"mean {sum(busy) / len(busy):.0f} %, median {busy[len(busy) // 2]} % ({len(busy)} samples)"


def main() -> int:
    parser = bench_parser(__doc__, Path("/tmp/detops-bench/gpu"), keep_data=False)
    parser.add_argument("--repeat", type=int, default=10, help="copies of the train split per epoch")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent")
        return 0
    import torch

    ws = fresh_workspace(args, OVERRIDES)
    if ws.params.train.accelerator != "cpu" and not torch.cuda.is_available():
        print("skipped: no CUDA GPU here (pass --set train.accelerator=cpu for a CPU smoke run)")
        return 0
    timings = prepare(ws, with_sample=False)
    repeat_train_split(ws, args.repeat)
    with GpuSampler() as gpu:
        report(ws, timings)
    history = torch.load(ws.models / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    epochs = next(v for k, v in history.items() if "TrainHistory" in k)["epochs"]
    print(f"GPU utilisation during training: {gpu.summary()}")
    print(f"reference ({REFERENCE['model']}): {json.dumps(REFERENCE)}")
    print("epoch, train seconds so far, val mAP, val mAP@0.5:")
    for e in epochs:
        print(f"  {e['epoch']:>3}  {e['train_seconds']:>7.1f}  {e.get('val/map', 0):.3f}  {e.get('val/map_50', 0):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
