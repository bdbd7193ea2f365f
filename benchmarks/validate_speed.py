"""Benchmark: the validation gate's speed, and how much of it is Great Expectations overhead.

1. The GX part on an in-memory synthetic dataset (default 10,000 images, 100,000 boxes, 0.1 % bad
   boxes; images not decoded: a trusted integrity table), timed stage by stage, against the same
   rules written as plain pandas comparisons (the floor any engine pays).
2. The image integrity check on real-size files (default 1,000 640x480 JPEGs written to a temp dir),
   with 1 worker and with every core.

Prints markdown tables.

    .venv/bin/python benchmarks/validate_speed.py [--images 10000] [--boxes 100000] [--files 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WIDTH, HEIGHT = 640, 480


def synthetic_dataset(n_images: int, n_boxes: int, bad_fraction: float, seed: int = 0) -> dict[str, Any]:
    """Random boxes inside 640x480 images over 5 classes; a few zero-width, overflowing or unknown-class boxes."""
    rng = np.random.default_rng(seed)
    image_ids = rng.integers(1, n_images + 1, n_boxes)
    w = rng.uniform(4, 120, n_boxes)
    h = rng.uniform(4, 120, n_boxes)
    x = rng.uniform(0, WIDTH - w)
    y = rng.uniform(0, HEIGHT - h)
    categories = rng.integers(1, 6, n_boxes)
    bad = rng.choice(n_boxes, int(n_boxes * bad_fraction), replace=False)
    thirds = np.array_split(bad, 3)
    w[thirds[0]] = 0.0
    x[thirds[1]] = WIDTH - 2.0
    categories[thirds[2]] = 99
    return {
        "info": {"root": "/nonexistent"},
        "images": [
            {"id": i, "file_name": f"img_{i:06d}.jpg", "width": WIDTH, "height": HEIGHT, "sha1": ""}
            for i in range(1, n_images + 1)
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": int(image_ids[k]),
                "category_id": int(categories[k]),
                "bbox": [float(x[k]), float(y[k]), float(w[k]), float(h[k])],
                "area": float(w[k] * h[k]),
                "iscrowd": 0,
            }
            for k in range(n_boxes)
        ],
        "categories": [{"id": c, "name": f"class{c}", "supercategory": ""} for c in range(1, 6)],
    }


def gx_import_seconds() -> float:
    """`import great_expectations` in a fresh interpreter: paid once per `detops validate`."""
    code = "import time; t = time.perf_counter(); import great_expectations; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def pandas_floor(dataset: dict[str, Any], integrity: Any, params: Any) -> float:
    """The same rules as bare vectorised pandas masks on the same tables: what the checks cost without GX."""
    from detops.validation.table import annotation_table, category_table, image_table

    boxes = annotation_table(dataset, params.bbox_tolerance_px)
    images = image_table(dataset, integrity)
    started = time.perf_counter()
    known = {c["id"] for c in dataset["categories"]}
    masks = [
        boxes["ann_id"].duplicated(keep=False),
        ~boxes["image_found"],
        ~boxes["category_id"].isin(known),
        *(boxes[c].isna() for c in ("x", "y", "w", "h")),
        boxes["w"] <= 0,
        boxes["h"] <= 0,
        boxes["area"] < params.min_box_area,
        boxes["x"] < -params.bbox_tolerance_px,
        boxes["y"] < -params.bbox_tolerance_px,
        boxes["x2"] > boxes["width_limit"],
        boxes["y2"] > boxes["height_limit"],
    ]
    image_masks = [
        images["image_id"].duplicated(keep=False),
        ~images["readable"],
        images["n_boxes"] > params.max_boxes_per_image,
        images["width"].isna(),
        images["width"] < 1,
        images["width"] != images["file_width"],
    ]
    bad_boxes = set(np.flatnonzero(np.logical_or.reduce([m.to_numpy() for m in masks])).tolist())
    np.flatnonzero(np.logical_or.reduce([m.to_numpy() for m in image_masks]))
    kept = [a for pos, a in enumerate(dataset["annotations"]) if pos not in bad_boxes]
    classes = category_table(dataset, kept)
    (classes["n_boxes"] < params.min_instances_per_class).any()
    return time.perf_counter() - started


def gate_timings(n_images: int, n_boxes: int, repeat: int, docs: bool) -> tuple[dict[str, float], int]:
    """Best-of-`repeat` stage timings of `validate_dataset` (GX already imported)."""
    from detops.config.validate import ValidateParams
    from detops.validation.gate import validate_dataset
    from detops.validation.integrity import trusted_integrity

    dataset = synthetic_dataset(n_images, n_boxes, bad_fraction=0.001)
    integrity = trusted_integrity(dataset)
    params = ValidateParams(on_error="drop")
    best: dict[str, float] = {}
    problems = rules = 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            started = time.perf_counter()
            outcome = validate_dataset(dataset, integrity, params, docs_dir=Path(tmp) / "docs" if docs else None)
            total = time.perf_counter() - started
            if not best or total < best["total_s"]:
                best = {**outcome.timings, "total_s": total}
            problems, rules = len(outcome.problems), len(outcome.rules)
    best["pandas_floor_s"] = min(pandas_floor(dataset, integrity, params) for _ in range(repeat))
    best["rules"] = rules
    return best, problems


def write_jpegs(folder: Path, count: int) -> dict[str, Any]:
    """`count` photo-like 640x480 JPEGs (smooth gradients plus noise, ~quality 90) and their dataset."""
    rng = np.random.default_rng(0)
    from PIL import Image

    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, (xx + yy) * 255 // (WIDTH + HEIGHT)], axis=-1)
    images = []
    for i in range(count):
        noise = rng.integers(-24, 24, (HEIGHT, WIDTH, 3))
        pixels = np.clip(np.roll(base, i * 7, axis=1) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:05d}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"img_{i:05d}.jpg", "width": WIDTH, "height": HEIGHT})
    return {"images": images, "annotations": [], "categories": []}


def integrity_timings(count: int, worker_counts: list[int]) -> tuple[list[tuple[int, float]], float]:
    from detops.validation.integrity import check_images

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dataset = write_jpegs(folder, count)
        mean_kb = sum(p.stat().st_size for p in folder.glob("*.jpg")) / count / 1024
        check_images(dataset, folder, workers=1)  # warm the page cache so both runs read from memory
        rows = []
        for workers in worker_counts:
            started = time.perf_counter()
            table = check_images(dataset, folder, workers=workers)
            rows.append((workers, time.perf_counter() - started))
            assert bool(table["readable"].all())
    return rows, mean_kb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--boxes", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    import_s = gx_import_seconds()
    import great_expectations  # noqa: F401  (imported here so the gate timings below exclude it)

    print(f"## Gate on {args.images:,} images / {args.boxes:,} boxes (in memory, best of {args.repeat})\n")
    print("| stage | no Data Docs (s) | with Data Docs (s) |")
    print("| --- | ---: | ---: |")
    plain, problems = gate_timings(args.images, args.boxes, args.repeat, docs=False)
    docs, _ = gate_timings(args.images, args.boxes, args.repeat, docs=True)
    labels = {
        "tables_s": "build tables (pandas)",
        "gx_setup_s": "GX context + data source",
        "gx_validate_s": f"GX suites run (3 tables, {plain['rules']} expectations)",
        "reasons_s": "name offending rows, clean dataset",
        "hash_s": "dataset content hash (annotation_hash)",
        "gx_docs_s": "GX Data Docs HTML",
        "total_s": "**total validate_dataset**",
        "pandas_floor_s": "same rules as bare pandas masks (reference)",
    }
    for key, label in labels.items():
        print(f"| {label} | {plain.get(key, 0.0):.3f} | {docs.get(key, 0.0):.3f} |")
    print(f"| `import great_expectations` (fresh process, once per run) | {import_s:.3f} | {import_s:.3f} |")
    overhead = plain["gx_setup_s"] + plain["gx_validate_s"] - plain["pandas_floor_s"]
    print(
        f"\n{problems} offending boxes found. GX overhead over bare pandas: {overhead:.2f} s per run "
        f"(+ {import_s:.2f} s import, + {docs['gx_docs_s']:.2f} s Data Docs).\n"
    )

    rows, mean_kb = integrity_timings(args.files, sorted({1, cores}))
    print(f"## Image integrity check: {args.files:,} JPEGs 640x480 (~{mean_kb:.0f} KiB), full decode\n")
    print("| workers | seconds | images/s | speed-up |")
    print("| ---: | ---: | ---: | ---: |")
    for workers, seconds in rows:
        print(f"| {workers} | {seconds:.2f} | {args.files / seconds:,.0f} | {rows[0][1] / seconds:.2f}x |")
    print(f"\n{cores} CPU core(s) on this machine.")


if __name__ == "__main__":
    main()
