"""Ultralytics side of the benchmark: YOLO11n from scratch on the exported BCCD split, offline.

Runs in benchmarks/.venv-ultralytics (Ultralytics is AGPL: it never enters the project's
dependencies); `compare.py` starts it as a subprocess and scores the detections it writes with the
project's own evaluator. What it writes (`--out`, JSON): parameters, epochs done, train-only images/s,
Ultralytics' own test mAP (its `val`, 101-point interpolation), and the COCO results of a `predict`
over the test images (original category ids, xywh in original pixels).

Offline by construction: YOLO_OFFLINE / YOLO_AUTOINSTALL=0 and every integration and telemetry
setting off, the model built from `yolo11n.yaml` (no .pt), amp=False (its check downloads weights),
and a socket guard that refuses (and records) any connection that is not local.

    benchmarks/.venv-ultralytics/bin/python benchmarks/vs_ultralytics/ultralytics_side.py \
        --data DIR/data.yaml --test-index DIR/test_index.json --imgsz 320 --minutes 6 --project RUNDIR --out X.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1"}


def block_network() -> list[str]:
    """Refuse every non-local connection and DNS lookup; the returned list fills with what was tried.

    The benchmark must prove Ultralytics trained without the internet; refusing (rather than hoping no
    call happens) makes an attempt visible in the output instead of a silent download.
    """
    attempts: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family == socket.AF_UNIX or (isinstance(address, tuple) and address[0] in LOCAL_HOSTS):
            return real_connect(self, address)
        attempts.append(f"connect {address}")
        raise OSError(f"benchmark is offline: connection to {address} refused")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in LOCAL_HOSTS:
            return real_getaddrinfo(host, *args, **kwargs)
        attempts.append(f"dns {host}")
        raise socket.gaierror(f"benchmark is offline: lookup of {host} refused")

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo
    return attempts


def configure_offline(config_dir: Path, run_dir: Path) -> None:
    """Environment and settings that keep Ultralytics from downloading, installing or phoning home."""
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_VERBOSE", "1")
    from ultralytics import settings

    settings.update({
        "sync": False,
        "datasets_dir": str(run_dir / "datasets"),
        "weights_dir": str(run_dir / "weights"),
        "runs_dir": str(run_dir),
        **dict.fromkeys(("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb"), False),
    })
    # Ultralytics' Arial.ttf would be downloaded by the dataset check; any local TTF serves (no plots
    # are drawn anyway): matplotlib's DejaVu Sans under the name it looks for.
    import matplotlib

    font = config_dir / "Ultralytics" / "Arial.ttf"
    if not font.is_file():
        font.parent.mkdir(parents=True, exist_ok=True)
        font.write_bytes((Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf").read_bytes())


class TrainClock:
    """Train-only seconds and images (validation excluded), the same definition as detops' TrainHistory."""

    def __init__(self, train_images: int) -> None:
        self.train_images = train_images
        self.seconds = 0.0
        self.images = 0
        self.epochs = 0
        self._started: float | None = None
        self._batches = 0

    def epoch_start(self, trainer: Any) -> None:
        self._started, self._batches = time.perf_counter(), 0

    def batch_end(self, trainer: Any) -> None:
        self._batches += 1

    def epoch_end(self, trainer: Any) -> None:
        if self._started is None:
            return
        self.seconds += time.perf_counter() - self._started
        self.images += min(self._batches * trainer.batch_size, self.train_images)
        self.epochs += 1
        self._started = None


def count_images(data_yaml: Path, split: str) -> int:
    import yaml

    spec = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    folder = data_yaml.parent / spec[split]
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})


def train(args: argparse.Namespace, clock: TrainClock) -> tuple[Path, float]:
    """Fit from scratch; the best (EMA) weights by Ultralytics' fitness on val, and the fit's wall seconds."""
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    # Ultralytics trains on CPU with cpu_count - 1 torch threads (1 here) and no loader workers; give it
    # the same cores as our side instead of handicapping it.
    torch_utils.NUM_THREADS = args.threads
    model = YOLO(args.model)  # a .yaml: architecture only, random init
    model.add_callback("on_train_epoch_start", clock.epoch_start)
    model.add_callback("on_train_batch_end", clock.batch_end)
    model.add_callback("on_train_epoch_end", clock.epoch_end)
    started = time.perf_counter()
    model.train(
        data=str(args.data), imgsz=args.imgsz, epochs=args.epochs, time=args.minutes / 60 if args.minutes else None,
        fraction=args.fraction, batch=args.batch, workers=args.workers, device="cpu", pretrained=False, amp=False,
        plots=False, cache="ram", seed=args.seed, deterministic=False, project=str(args.project), name="train",
        exist_ok=True, verbose=False,
    )
    wall = time.perf_counter() - started
    save_dir = Path(model.trainer.save_dir)
    best = save_dir / "weights" / "best.pt"
    return best if best.is_file() else save_dir / "weights" / "last.pt", wall


def predict_test(model: Any, test_index: dict[str, Any], imgsz: int, batch: int) -> list[dict[str, Any]]:
    """COCO results for every test image: the thresholds our `evaluate` step uses (conf 0.001, IoU 0.6, 100)."""
    category_ids = test_index["category_ids"]
    detections: list[dict[str, Any]] = []
    images = test_index["images"]
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        results = model.predict([im["path"] for im in chunk], imgsz=imgsz, conf=0.001, iou=0.6, max_det=100,
                                device="cpu", verbose=False)
        for im, result in zip(chunk, results, strict=True):
            boxes = result.boxes
            for (x1, y1, x2, y2), cls, score in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(),
                                                   strict=True):
                detections.append({
                    "image_id": im["image_id"], "category_id": category_ids[int(cls)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score,
                })
    return detections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="data.yaml of the exported YOLO dataset")
    parser.add_argument("--test-index", type=Path, required=True, help="test images with their detops ids")
    parser.add_argument("--project", type=Path, required=True, help="folder for Ultralytics' run and settings")
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    parser.add_argument("--model", default="yolo11n.yaml")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget; 0 = --epochs decides")
    parser.add_argument("--epochs", type=int, default=1000, help="upper bound (time mode re-fits it to --minutes)")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of train images (smoke tests)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="Ultralytics forces 0 on CPU anyway")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    attempts = block_network()
    args.project = args.project.resolve()
    configure_offline(args.project / "config", args.project)
    import torch

    clock = TrainClock(round(count_images(args.data, "train") * args.fraction))
    weights, wall = train(args, clock)

    from ultralytics import YOLO

    trained = YOLO(str(weights))
    parameters = sum(p.numel() for p in trained.model.parameters())  # before val fuses conv + bn
    own = trained.val(data=str(args.data), split="test", imgsz=args.imgsz, batch=args.batch, device="cpu",
                      plots=False, verbose=False, project=str(args.project), name="val_test", exist_ok=True)
    test_index = json.loads(args.test_index.read_text(encoding="utf-8"))
    detections = predict_test(trained, test_index, args.imgsz, args.batch)

    import ultralytics

    result = {
        "model": Path(args.model).stem,
        "ultralytics": ultralytics.__version__,
        "parameters": parameters,
        "image_size": args.imgsz,
        "budget_minutes": args.minutes,
        "epochs": clock.epochs,
        "train_seconds": round(clock.seconds, 1),
        "train_images": clock.images,
        "images_per_second": round(clock.images / clock.seconds, 2) if clock.seconds else 0.0,
        "fit_wall_seconds": round(wall, 1),
        "torch_threads": torch.get_num_threads(),
        "weights": str(weights),
        "ultralytics_test_map": float(own.box.map),
        "ultralytics_test_map_50": float(own.box.map50),
        "network_attempts": attempts,
        "detections": detections,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result), encoding="utf-8")
    print(f"ultralytics side: {clock.epochs} epochs, test mAP {own.box.map:.4f} (its own val), "
          f"{len(detections)} detections, network attempts: {len(attempts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
