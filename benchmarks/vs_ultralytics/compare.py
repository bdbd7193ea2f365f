"""Benchmark: our detector vs Ultralytics YOLO11n, both from scratch, same BCCD split, same image size,
same wall-clock training budget on this CPU; test mAP side by side, both scored by OUR evaluator
(Ultralytics' own val numbers in an extra column).

Steps, one after the other (never both trainings at once):
1. prepare: import (VOC) -> validate (drop the zero-area boxes) -> split (70/20/10, seed 0) with the
   library's steps in a benchmark workspace, then export that same split as a YOLO dataset.
2. ours: `detops.steps.train.run` (from scratch, time budget) then `detops.steps.evaluate.run` on test.
3. theirs: `ultralytics_side.py` in benchmarks/.venv-ultralytics (run setup.sh first), offline; its test
   detections are scored here by the scorer `evaluate` uses (`detops.evaluation.scorer`).

    .venv/bin/python benchmarks/vs_ultralytics/compare.py [--image-size 320] [--minutes 6] [--sides ours,theirs]
    .venv/bin/python benchmarks/vs_ultralytics/compare.py --smoke --sides theirs   # proves the offline setup

Writes benchmarks/runs/vs_ultralytics/ (workspace, YOLO export, per-side results) and
benchmarks/runs/vs_ultralytics.json; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "benchmarks" / "runs"
ULTRALYTICS_PYTHON = REPO / "benchmarks" / ".venv-ultralytics" / "bin" / "python"
BCCD = REPO.parent / "shared" / "datasets" / "bccd" / "BCCD"  # the developers' checkout: ../shared
SIDES = ("ours", "theirs")


# --- data -------------------------------------------------------------------------------------------

def workspace(root: Path, overrides: list[str]) -> Any:
    from detops.config import load_params
    from detops.workspace import Workspace

    root.mkdir(parents=True, exist_ok=True)
    base = [
        "import.format=voc", f"import.source={BCCD}", "validate.on_error=drop", "validate.data_docs=false",
        "split.train=0.7", "split.val=0.2", "split.test=0.1", "split.seed=0",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
    ]
    return Workspace.at(root, load_params(None, [*base, *overrides]))


def prepare(ws: Any, yolo_dir: Path) -> dict[str, Any]:
    """Import, validate, split with the library steps; export the same split for Ultralytics.

    Returns the split sizes and the paths the Ultralytics side needs (data.yaml, the test index).
    """
    import shutil

    from detops.dataset.canonical import SPLITS, read_dataset, write_dataset
    from detops.formats.layout import flat_file_names
    from detops.steps import export_dataset, import_, split, validate

    import_.run(ws)
    validate.run(ws)
    split.run(ws)

    # One json holding every validated image with its split as `source_split`: the YOLO writer puts
    # each image in <split>/images by that field.
    split_of = {int(im["id"]): name for name in SPLITS for im in read_dataset(ws.split_json(name))["images"]}
    combined = read_dataset(ws.validated_json)
    combined["images"] = [{**im, "source_split": split_of[int(im["id"])]} for im in combined["images"]
                          if int(im["id"]) in split_of]
    combined_path = write_dataset(ws.prepared / "yolo_export.json", combined)
    shutil.rmtree(yolo_dir, ignore_errors=True)
    export_dataset.run(ws, fmt="yolo", out=yolo_dir, dataset=combined_path)

    # The writer's own naming rule, applied to the same image list, gives each test image's file.
    names = flat_file_names(combined["images"])
    test = read_dataset(ws.split_json("test"))
    index = {
        "category_ids": sorted(int(c["id"]) for c in combined["categories"]),  # YOLO class i -> category id
        "images": [{"image_id": int(im["id"]), "path": str(yolo_dir / "test" / "images" / names[int(im["id"])])}
                   for im in test["images"]],
    }
    index_path = yolo_dir.parent / "test_index.json"
    index_path.write_text(json.dumps(index, indent=1), encoding="utf-8")
    return {
        "data_yaml": yolo_dir / "data.yaml",
        "test_index": index_path,
        "test_json": ws.split_json("test"),
        "images": {name: sum(1 for v in split_of.values() if v == name) for name in SPLITS},
        "boxes_test": len(test["annotations"]),
    }


# --- the two sides --------------------------------------------------------------------------------

def run_ours(root: Path, image_size: int, minutes: float, epochs: int, extra: list[str]) -> dict[str, Any]:
    """`train.max_minutes` fits our epoch count and cosine to the budget, as Ultralytics' `time=` does."""
    import torch

    from detops.steps import evaluate, train

    ws = workspace(root, [
        "train.pretrained=false", f"train.image_size={image_size}", f"train.max_minutes={minutes}",
        f"train.epochs={epochs}", "train.patience=0", *extra,
    ])
    started = time.perf_counter()
    train.run(ws)
    wall = time.perf_counter() - started
    evaluate.run(ws)
    summary = json.loads(ws.output("train", "metrics").read_text(encoding="utf-8"))
    metrics = json.loads(ws.output("evaluate", "metrics").read_text(encoding="utf-8"))
    return {
        "model": f"detops {ws.params.train.backbone}-FPN",
        "parameters": summary["parameters"],
        "image_size": image_size,
        "budget_minutes": minutes,
        "epochs": summary["epochs"],
        "train_seconds": summary["train_seconds"],
        "images_per_second": summary["images_per_second"],
        "fit_wall_seconds": round(wall, 1),
        "torch_threads": torch.get_num_threads(),
        "test_map": metrics["test/map"],
        "test_map_50": metrics["test/map_50"],
        "overrides": [*extra],
    }


def run_theirs(root: Path, data: dict[str, Any], project: Path, image_size: int, minutes: float,
               smoke: bool) -> dict[str, Any]:
    from detops.dataset.canonical import read_dataset
    from detops.evaluation.scorer import Scorer

    if not ULTRALYTICS_PYTHON.is_file():
        sys.exit(f"{ULTRALYTICS_PYTHON} not found: run benchmarks/vs_ultralytics/setup.sh first.")
    out = project / "result.json"
    out.unlink(missing_ok=True)
    command = [
        str(ULTRALYTICS_PYTHON), str(Path(__file__).with_name("ultralytics_side.py")),
        "--data", str(data["data_yaml"]), "--test-index", str(data["test_index"]), "--project", str(project),
        "--out", str(out), "--imgsz", str(image_size),
        *(["--minutes", "0", "--epochs", "1", "--fraction", "0.05"] if smoke else ["--minutes", str(minutes)]),
    ]
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "YOLO_CONFIG_DIR": str(project / "config")}
    subprocess.run(command, check=True, env=env)
    result = json.loads(out.read_text(encoding="utf-8"))
    detections = result.pop("detections")
    gt = read_dataset(Path(data["test_json"]))
    ours = Scorer.of(workspace(root, []), gt, split="test").measure(detections).metrics
    return {**result, "test_map": ours["test/map"], "test_map_50": ours["test/map_50"],
            "detections": len(detections)}


# --- report ---------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "python": platform.python_version()}


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _num(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(rows: dict[str, dict[str, Any]]) -> str:
    header = ("| model | params (M) | image size | budget (min) | epochs done | train images/s | "
              "test mAP | test mAP@0.5 | Ultralytics' own test mAP / mAP@0.5 |")
    lines = [header, "|" + " --- |" * 9]
    for row in rows.values():
        own = (f"{_num(row['ultralytics_test_map'])} / {_num(row['ultralytics_test_map_50'])}"
               if "ultralytics_test_map" in row else "—")
        lines.append(
            f"| {row['model']} | {row['parameters'] / 1e6:.2f} | {row['image_size']} | {row['budget_minutes']:g} | "
            f"{row['epochs']} | {row['images_per_second']:.1f} | {_num(row['test_map'])} | "
            f"{_num(row['test_map_50'])} | {own} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=RUNS / "vs_ultralytics")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget of each side")
    parser.add_argument("--epochs", type=int, default=1000, help="our epoch cap: large, so the budget stops it")
    parser.add_argument("--sides", default="ours,theirs",
                        help="comma-separated: ours, theirs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra params override for our side, e.g. train.lr=0.003")
    parser.add_argument("--smoke", action="store_true", help="Ultralytics side: 1 epoch on 5%% of train images")
    parser.add_argument("--skip-prepare", action="store_true", help="reuse the workspace's split and export")
    args = parser.parse_args(argv)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"--sides: unknown {', '.join(sorted(unknown))}; use {', '.join(SIDES)}")

    workdir = args.workdir.resolve()
    root, yolo_dir = workdir / "workspace", workdir / "yolo"
    if args.skip_prepare:
        data = json.loads((workdir / "prepared.json").read_text(encoding="utf-8"))
    else:
        data = prepare(workspace(root, []), yolo_dir)
        data = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
        (workdir / "prepared.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(f"split: {data['images']} images, {data['boxes_test']} test boxes")

    settings = {"image_size": args.image_size, "minutes": args.minutes, "smoke": args.smoke}
    results_dir = workdir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    for side in sides:
        before = load_average()
        if side == "ours":
            row = run_ours(root, args.image_size, args.minutes, args.epochs, args.overrides)
        else:
            row = run_theirs(root, data, workdir / "ultralytics", args.image_size, args.minutes, args.smoke)
        row["load_average_before"], row["load_average_after"] = before, load_average()
        row["settings"] = settings
        (results_dir / f"{side}.json").write_text(json.dumps(row, indent=1), encoding="utf-8")

    # Rows of earlier invocations join the table only when measured with the same settings.
    saved = {side: json.loads((results_dir / f"{side}.json").read_text(encoding="utf-8"))
             for side in SIDES if (results_dir / f"{side}.json").is_file()}
    rows = {side: row for side, row in saved.items() if row.get("settings") == settings}
    report = {"machine": machine(), "load_average_end": load_average(), "split": data["images"],
              "test_boxes": data["boxes_test"], "smoke": args.smoke, "rows": rows}
    (workdir.parent / f"{workdir.name}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    m = report["machine"]
    print(f"\nMachine: {m['cpu']}, {m['cores']} cores; load average (1/5/15 min) at the end: "
          f"{' '.join(map(str, report['load_average_end']))}\n")
    print(table(rows))
    for side, row in rows.items():
        print(f"- {side}: load average before {row['load_average_before']}, after {row['load_average_after']}; "
              f"{row['torch_threads']} torch threads; fit wall {row['fit_wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
