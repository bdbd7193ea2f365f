"""Benchmark: fine-tune from ImageNet weights on BCCD (blood cells, Pascal VOC) and score the test split.

Uses ../shared (skips when absent): the BCCD dataset and the mobilenetv2_100 timm weights. Imports with
the VOC importer, keeps the dataset's own train/val/test ImageSets, drops BCCD's two zero-area boxes in
validation, trains with the overrides below, prints test mAP and mAP@0.5 (target mAP@0.5 >= 0.88).

    .venv/bin/python benchmarks/train_bccd.py [--workspace DIR] [--set train.epochs=30 ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_demo import REPO, bench_parser, fresh_workspace, prepare, report

SHARED = REPO.parent / "shared"
OVERRIDES = [
    "import.format=voc",
    f"import.source={SHARED / 'datasets/bccd/BCCD'}",
    "validate.on_error=drop",
    "split.respect_source_splits=true",
    "train.backbone=mobilenetv2_100",
    f"train.pretrained={SHARED / 'weights/mobilenetv2_100.imagenet.safetensors'}",
    "train.image_size=416",
    "train.batch_size=8",
    "train.epochs=12",
    "train.lr=0.002",
    "train.warmup_epochs=1",
    "train.max_minutes=14",
]


def main() -> int:
    args = bench_parser(__doc__, Path("/tmp/detops-bench/bccd")).parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent")
        return 0
    ws = fresh_workspace(args, OVERRIDES)
    timings = {} if ws.split_json("train").is_file() else prepare(ws, with_sample=False)
    report(ws, timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
