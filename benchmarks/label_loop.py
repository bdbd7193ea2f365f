"""Benchmark: the labelling loop. (a) `label select` against random picks at equal budget, (b) the label audit on
planted errors, (c) the time of both per 1,000 images.

(a) Per dataset (the sample; BCCD's train split from ../shared) and seed: a model is trained on `--initial` of the
train split (the pool); from the rest, with labels hidden (copied as an unlabelled batch), `--add` of it is chosen
by `label select` (that model as label.model) and, separately, at random; each is added to the initial part and a
model is retrained with the same settings and seed; the test mAP difference (select - random) is reported per seed
with its mean and standard deviation. CPU noise can exceed the effect: it is a measurement, not a pass mark.
(b) BCCD val + test (the sample's when BCCD is absent), `--error-share` of the images given each error kind
(`detops.labeling.inject`), audited with a model trained on the full train split: per kind, recall within the top K
(K = images injected, all kinds) and median rank among all images; the top of the list as found.

    .venv/bin/python benchmarks/label_loop.py [--datasets sample,bccd] [--seeds 0,1,2] [--set train.epochs=8 ...]
    tiny check: --datasets sample --seeds 0 --set sample.num_images=60 --set train.epochs=1 --set train.image_size=64
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_bccd import OVERRIDES as BCCD_OVERRIDES
from train_bccd import SHARED
from train_demo import make_workspace, prepare, test_map

BATCH = "pool"


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/detops-bench/label_loop"))
    parser.add_argument("--datasets", default="sample,bccd", help="comma-separated: sample, bccd")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (>= 3 for a spread)")
    parser.add_argument("--initial", type=float, default=0.25, help="share of the pool the initial model sees")
    parser.add_argument("--add", type=float, default=0.25, help="share of the rest of the pool added")
    parser.add_argument("--error-share", type=float, default=0.05, help="images per error kind, as a share")
    parser.add_argument("--skip-selection", action="store_true", help="only the audit (b) and its timing")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params override")
    return parser.parse_args()


def workspace(args: argparse.Namespace, name: str, overrides: tuple[str, ...] = ()) -> Any:
    base = BCCD_OVERRIDES if name == "bccd" else []
    return make_workspace(args.workspace / name, [*base, *args.overrides, *overrides])


def prepared(args: argparse.Namespace, name: str) -> Any:
    """The dataset's workspace with its splits (made once, then reused)."""
    ws = workspace(args, name)
    if not ws.split_json("train").is_file():
        prepare(ws, with_sample=name == "sample")
    return ws


def train_on(ws: Any, dataset: dict[str, Any], keep: Path) -> Path:
    """Train with `dataset` as the train split; the best checkpoint is copied to `keep`."""
    from detops.dataset.canonical import write_dataset
    from detops.steps import train

    write_dataset(ws.split_json("train"), dataset)
    train.run(ws)
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ws.checkpoint(), keep)
    return keep


def as_batch(ws: Any, dataset: dict[str, Any]) -> dict[str, int]:
    """The images of `dataset` copied flat into an unlabelled landing batch; batch file name -> image id."""
    from detops.dataset.canonical import image_path

    folder = ws.resolve(ws.params.monitor.landing) / BATCH
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = {}
    for image in dataset["images"]:
        source = image_path(dataset, image, ws.root)
        name = f"{image['id']}_{source.name}"
        shutil.copy(source, folder / name)
        names[name] = int(image["id"])
    (folder / ws.params.monitor.manifest).touch()
    return names


def selection_round(args: argparse.Namespace, name: str, seed: int, timings: dict[str, list[float]]
                    ) -> dict[str, Any]:
    import numpy as np

    from detops.dataset.canonical import read_dataset, subset
    from detops.labeling.select import select_batch

    ws = prepared(args, name)
    pool_file = ws.split_json("train").with_name("pool.json")
    if not pool_file.is_file():
        shutil.copy(ws.split_json("train"), pool_file)
    pool = read_dataset(pool_file)
    rng = np.random.default_rng(seed)
    ids = [int(im["id"]) for im in pool["images"]]
    order = rng.permutation(ids).tolist()
    initial = order[: round(args.initial * len(ids))]
    rest = order[len(initial):]
    budget = max(1, round(args.add * len(rest)))
    ws = workspace(args, name, (f"train.seed={seed}",))
    folder = ws.root / f"runs/seed{seed}"
    first = train_on(ws, subset(pool, initial), folder / "initial.ckpt")
    names = as_batch(ws, subset(pool, rest))
    chooser = workspace(args, name, (f"train.seed={seed}", f"label.model={first}"))
    started = time.perf_counter()
    chosen = select_batch(chooser, BATCH, budget)
    timings["select"].append((time.perf_counter() - started) / len(rest) * 1000)
    picked = {"select": [names[c.file_name] for c in chosen.selected],
              "random": rng.choice(rest, budget, replace=False).tolist()}
    scores = {}
    for strategy, added in picked.items():
        model = train_on(ws, subset(pool, initial + added), folder / f"{strategy}.ckpt")
        scores[strategy] = test_map(ws, model)["map"]
    shutil.copy(pool_file, ws.split_json("train"))
    return {"dataset": name, "seed": seed, "pool": len(ids), "initial": len(initial), "added": budget, **scores,
            "difference": scores["select"] - scores["random"]}


def audit_round(args: argparse.Namespace, name: str, timings: dict[str, list[float]]) -> dict[str, Any]:
    import numpy as np

    from detops.dataset.canonical import read_dataset
    from detops.inference.loading import load_predictor
    from detops.labeling.audit import audit_dataset
    from detops.labeling.inject import KINDS, inject_errors

    ws = prepared(args, name)
    model = ws.root / "runs/full.ckpt"
    if not model.is_file():
        pool_file = ws.split_json("train").with_name("pool.json")
        pool = read_dataset(pool_file if pool_file.is_file() else ws.split_json("train"))
        train_on(ws, pool, model)
    val, test = read_dataset(ws.split_json("val")), read_dataset(ws.split_json("test"))
    offset = max(int(im["id"]) for im in val["images"])
    both = {**val, "images": val["images"] + [{**im, "id": int(im["id"]) + offset} for im in test["images"]],
            "annotations": val["annotations"] + [{**a, "id": int(a["id"]) + 10**7, "image_id": int(a["image_id"])
                                                  + offset} for a in test["annotations"]]}
    noisy, kinds = inject_errors(both, args.error_share, seed=0)
    started = time.perf_counter()
    audit, _ = audit_dataset(ws, noisy, load_predictor(model), f"{name} val+test", str(model))
    timings["audit"].append((time.perf_counter() - started) / len(noisy["images"]) * 1000)
    rank = {image.image_id: image.rank for image in audit.images}
    k = len(kinds)
    per_kind = {}
    for kind in KINDS:
        ranks = [rank[i] for i, kk in kinds.items() if kk == kind]
        if ranks:
            per_kind[kind] = {"injected": len(ranks), f"recall_top{k}": sum(r <= k for r in ranks) / len(ranks),
                              "median_rank": float(np.median(ranks)),
                              "named_right": sum(audit.images[rank[i] - 1].issue == kind
                                                 for i, kk in kinds.items() if kk == kind) / len(ranks)}
    untouched = [image.rank for image in audit.images if image.image_id not in kinds]
    top = [{"rank": i.rank, "file_name": i.file_name, "quality": i.quality, "issue": i.issue,
            "injected": kinds.get(i.image_id, "")} for i in audit.images[:15]]
    return {"dataset": name, "images": len(noisy["images"]), "injected": k, "per_kind": per_kind,
            "untouched_median_rank": float(np.median(untouched)), "top": top}


def main() -> int:
    args = options()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if "bccd" in datasets and not SHARED.is_dir():
        print(f"bccd skipped: {SHARED} is absent")
        datasets.remove("bccd")
    seeds = [int(s) for s in args.seeds.split(",")]
    timings: dict[str, list[float]] = {"select": [], "audit": []}
    rounds = [] if args.skip_selection else [selection_round(args, d, s, timings) for d in datasets for s in seeds]
    audit = audit_round(args, "bccd" if "bccd" in datasets else datasets[0], timings)
    print("\n(a) selection vs random, test mAP")
    for d in datasets:
        diffs = [r["difference"] for r in rounds if r["dataset"] == d]
        for r in (r for r in rounds if r["dataset"] == d):
            print(f"  {d} seed {r['seed']}: initial {r['initial']} + {r['added']} of {r['pool']}: select "
                  f"{r['select']:.4f}, random {r['random']:.4f}, difference {r['difference']:+.4f}")
        if diffs:
            spread = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            print(f"  {d}: mean difference {statistics.mean(diffs):+.4f} (sd {spread:.4f}, {len(diffs)} seeds)")
    print(f"\n(b) audit of {audit['dataset']} ({audit['images']} images, {audit['injected']} injected; untouched "
          f"median rank {audit['untouched_median_rank']:.0f})")
    for kind, row in audit["per_kind"].items():
        print(f"  {kind}: {json.dumps(row)}")
    print("  top of the list:")
    for row in audit["top"]:
        print(f"    {row['rank']:>3} {row['quality']:.3f} {row['issue']:<10} {row['injected'] or '(not injected)':<14} "
              f"{row['file_name']}")
    print("\n(c) seconds per 1,000 images (no training): "
          + ", ".join(f"{k} {statistics.mean(v):.1f}" for k, v in timings.items() if v))
    print(json.dumps({"selection": rounds, "audit": audit, "timings_per_1000": timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
