"""Benchmark: drift-monitoring features for 1,000 photo-like 640x480 JPEGs, with and without embeddings.

Pixel features (brightness, contrast, saturation, sharpness, size) with 1 and 2 worker threads, then with
embeddings from the demo's backbone (regnetx_002 at 192 px; untrained weights cost the same as trained ones),
each with an empty cache and again with the cache filled. torch gets as many threads as there are workers.

    .venv/bin/python benchmarks/drift_features.py [--images 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from validate_speed import HEIGHT, WIDTH, write_jpegs  # the same photo-like 640x480 JPEGs


def checkpoint(path: Path) -> Path:
    """An untrained detector with the demo's training defaults, saved as a detops checkpoint."""
    import torch

    from detops.config.train import TrainParams
    from detops.model.detector import Detector, DetectorConfig

    train = TrainParams()
    config = DetectorConfig.from_params(train, 4)
    state = {f"model.{k}": v for k, v in Detector(config).state_dict().items()}
    torch.save({"hyper_parameters": {"model": config.to_dict(), "classes": {"ids": [1, 2, 3, 4], "names": list("abcd")},
                                     "postprocess": {}}, "state_dict": state}, path)
    return path


def timed(run: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    run(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import torch

    from detops.monitoring.cache import FeatureCache
    from detops.monitoring.embeddings import Embedder
    from detops.monitoring.features import image_features

    torch.set_num_threads(args.workers)
    with tempfile.TemporaryDirectory(prefix="detops-drift-bench-") as tmp:
        folder = Path(tmp)
        paths = [folder / im["file_name"] for im in write_jpegs(folder, args.images)["images"]]
        embedder = Embedder(checkpoint(folder / "model.ckpt"))
        rows = []
        for label, workers, model in [("pixel features", 1, None), ("pixel features", args.workers, None),
                                      (f"+ embeddings ({embedder.model.config.backbone}, "
                                       f"{embedder.image_size} px)", args.workers, embedder)]:
            cache = FeatureCache(folder / f"cache-{workers}-{model is not None}")
            cold = timed(image_features, paths, cache, workers, model)
            warm = timed(image_features, paths, cache, workers, model)
            rows.append((label, workers, cold, warm))

    print(f"\n{args.images} JPEGs of {WIDTH}x{HEIGHT}, torch threads {args.workers}\n")
    print("| features | workers | empty cache (s) | images/s | cache filled (s) | images/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, workers, cold, warm in rows:
        n = args.images
        print(f"| {label} | {workers} | {cold:.1f} | {n / cold:.0f} | {warm:.2f} | {n / warm:.0f} |")


if __name__ == "__main__":
    main()
