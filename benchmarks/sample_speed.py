"""Benchmark: how fast `generate_sample` writes the default synthetic dataset (400 images at 256 px).

Runs it with one worker process and with one per core (the default), checks both wrote the same bytes,
and prints a markdown table. Target: the default under 20 s on 2 cores.

    .venv/bin/python benchmarks/sample_speed.py [--images 400] [--set image_size=512 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path


def digest(root: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            sha.update(str(path.relative_to(root)).encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def main() -> None:
    from detops.config.loader import apply_override, validate_params
    from detops.sample.generate import generate_sample

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="Override sample.num_images.")
    parser.add_argument("--set", action="append", default=[], help="sample.KEY=VALUE override (repeatable).")
    args = parser.parse_args()

    raw: dict[str, object] = {}
    for item in args.set:
        apply_override(raw, item if item.startswith("sample.") else f"sample.{item}")
    if args.images is not None:
        apply_override(raw, f"sample.num_images={args.images}")
    base = validate_params(raw).sample
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    print(f"## `generate_sample`: {base.num_images} images, {base.image_size} px, {cores} cores\n")
    print("| workers | seconds | images/s | MB written | boxes | same bytes as 1 worker |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    reference = None
    for workers in (1, 0):
        params = base.model_copy(update={"workers": workers})
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            annotations = generate_sample(Path(tmp), params)
            seconds = time.perf_counter() - start
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 1e6
            boxes = annotations.read_text(encoding="utf-8").count('"bbox"')
            fingerprint = digest(Path(tmp))
        reference = reference or fingerprint
        label = f"{workers}" if workers else f"0 (= {cores})"
        same = "yes" if fingerprint == reference else "NO"
        print(f"| {label} | {seconds:.2f} | {params.num_images / seconds:.0f} | {size:.1f} | {boxes} | {same} |")


if __name__ == "__main__":
    main()
