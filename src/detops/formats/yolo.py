"""YOLO txt labels (Ultralytics `data.yaml` layout, or a plain folder with `classes.txt`).

Category ids: YOLO class `i` becomes category id `i + 1`, named from `names`. COCO reserves no id,
but most COCO tooling (and torchvision detectors) treat 0 as background, so 1-based ids keep the
canonical json usable as plain COCO; the writer maps ids back to 0-based class indices in
category order.

Layout rules, as Ultralytics applies them:
- `train`/`val`/`test` (also `valid`) name image folders, lists of folders, or txt files listing
  images; relative entries resolve against `path` (relative to the yaml, when that folder
  exists) or the yaml's folder, and an entry starting `../` that does not exist is retried
  without it (Roboflow exports write `../train/images` next to the yaml). Without split keys, or
  with `classes.txt`, every image under the root is imported, its split read from its folders.
- An image's labels are in the file named like it, with the last `images` folder of its path
  replaced by `labels` and a `.txt` suffix (beside the image when its path has no `images`).
  A missing label file means an image without boxes.
- A label line is `class cx cy w h` (shares of the displayed image, i.e. after EXIF rotation),
  or a polygon `class x1 y1 x2 y2 ...` whose enclosing box is taken.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from detops.dataset.canonical import SPLITS, Dataset
from detops.dataset.paths import resolve_inside, safe_relative
from detops.errors import DataError
from detops.formats.layout import boxes_by_image, flat_file_names, number, place_image
from detops.formats.source import (
    IMAGE_SUFFIXES,
    SourceBox,
    SourceDataset,
    SourceImage,
    finite_number,
    listing,
    split_from_parts,
)

_SPLIT_KEYS = {"train": "train", "val": "val", "valid": "val", "test": "test"}


def find_annotations(root: Path) -> Path:
    """`data.yaml`, else the root's only `*.yaml`, else `classes.txt`."""
    if (root / "data.yaml").is_file():
        return root / "data.yaml"
    yamls = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    if len(yamls) == 1:
        return yamls[0]
    if (root / "classes.txt").is_file():
        return root / "classes.txt"
    found = ", ".join(p.name for p in yamls) or "none"
    raise DataError(
        f"{root}: no data.yaml or classes.txt that names the YOLO classes (*.yaml found: {found}). "
        "Pass --annotations FILE."
    )


def read_yolo(root: Path, annotations: Path | None = None) -> SourceDataset:
    spec = annotations or find_annotations(root)
    notes: list[str] = []
    if spec.suffix.lower() in (".yaml", ".yml"):
        data = _load_yaml(spec)
        names = _names(data, spec)
        listed = _listed_images(data, spec, root, notes)
    else:
        names = _classes_txt(spec)
        listed = None
    found = listed if listed is not None else _scan(root)
    if not found:
        raise DataError(f"{root}: no image files found for the YOLO dataset described by {spec}.")

    images: list[SourceImage] = []
    boxes: list[SourceBox] = []
    unlabelled = 0
    for file_name, split in found:
        label_rel = label_path_for(file_name)
        label = resolve_inside(root, label_rel, f"{spec} (labels of {file_name})")
        index = len(images)
        images.append(SourceImage(file_name=file_name, where=f"{spec} ({split or 'images'})", source_split=split))
        if label.is_file():
            boxes.extend(_read_labels(label, index, names, spec))
        else:
            unlabelled += 1
    if unlabelled:
        notes.append(f"{unlabelled} image(s) have no label file; imported without boxes (as Ultralytics does).")
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in sorted(names.items())]
    return SourceDataset(root=root, format="yolo", images=images, boxes=boxes, categories=categories, notes=notes)


def label_path_for(file_name: str) -> str:
    """Ultralytics' rule: the last `images` folder becomes `labels`, the suffix becomes `.txt`."""
    parts = list(PurePosixPath(file_name).parts)
    folders = parts[:-1]
    if "images" in folders:
        folders[len(folders) - 1 - folders[::-1].index("images")] = "labels"
    return str(PurePosixPath(*folders, PurePosixPath(parts[-1]).stem + ".txt"))


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with `names` and the split folders.")
    return data


def _names(data: dict[str, Any], path: Path) -> dict[int, str]:
    raw = data.get("names")
    count = data.get("nc")
    if isinstance(raw, list):
        names = {i: str(n) for i, n in enumerate(raw)}
    elif isinstance(raw, dict):
        names = {}
        for key, value in raw.items():
            try:
                names[int(key)] = str(value)
            except (TypeError, ValueError):
                raise DataError(f"{path}: names key {key!r} is not a class index.") from None
    elif raw is None and isinstance(count, int) and count > 0:
        names = {i: f"class{i}" for i in range(count)}
    else:
        raise DataError(f"{path}: `names` must be a list or a mapping of class index to name.")
    if not names:
        raise DataError(f"{path}: `names` is empty.")
    if min(names) < 0:
        raise DataError(f"{path}: class indices must be >= 0, got {min(names)}.")
    if isinstance(count, int) and count != len(names):
        raise DataError(f"{path}: nc is {count} but names lists {len(names)} classes; make them agree.")
    return names


def _classes_txt(path: Path) -> dict[int, str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}).") from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names (one per line expected).")
    return dict(enumerate(names))


def _listed_images(data: dict[str, Any], spec: Path, root: Path, notes: list[str]) -> list[tuple[str, str]] | None:
    """(file_name, split) for every image the yaml's split keys name; None when it names none."""
    keys = [k for k in _SPLIT_KEYS if data.get(k)]
    if not keys:
        return None
    base = spec.parent
    if data.get("path"):
        candidate = Path(str(data["path"])).expanduser()
        candidate = candidate if candidate.is_absolute() else spec.parent / candidate
        base = candidate if candidate.is_dir() else base
    split_of: dict[str, str] = {}
    order: list[str] = []
    clashes: list[str] = []
    for key in keys:
        split = _SPLIT_KEYS[key]
        entries = data[key] if isinstance(data[key], list) else [data[key]]
        for entry in entries:
            for file_name in _entry_images(str(entry), base, root, f"{spec}: {key}"):
                if file_name not in split_of:
                    split_of[file_name] = split
                    order.append(file_name)
                elif split_of[file_name] != split:
                    clashes.append(f"{file_name} ({split_of[file_name]} and {split})")
    if clashes:
        notes.append(f"{len(clashes)} image(s) listed in more than one split, kept in the first: {listing(clashes)}")
    notes.extend(_left_out_splits(keys, base, root, spec))
    return [(name, split_of[name]) for name in order]


def _left_out_splits(keys: list[str], base: Path, root: Path, spec: Path) -> list[str]:
    """A split folder with images that data.yaml does not name is not imported: say so, and how to include it."""
    named = {_SPLIT_KEYS[k] for k in keys}
    notes = []
    folders = sorted({f for parent in {base, root} for f in parent.iterdir() if f.is_dir()})
    for folder in folders:
        split = _SPLIT_KEYS.get(folder.name.lower())
        images = folder / "images"
        if split and split not in named and images.is_dir() and any(
                f.suffix.lower() in IMAGE_SUFFIXES for f in images.iterdir()):
            key = "val" if split == "val" else split
            rel = os.path.relpath(images, base)
            notes.append(f"warning: {folder} holds images but {spec.name} has no `{key}:` entry, so they are not "
                         f"imported; add `{key}: {rel}` to {spec} to include them.")
    return notes


def _entry_images(entry: str, base: Path, root: Path, where: str) -> list[str]:
    path = _resolve_entry(entry, base, where)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    else:
        files = _txt_listing(path, where)
    return [_relative_to_root(p, root, where) for p in files]


def _resolve_entry(entry: str, base: Path, where: str) -> Path:
    path = Path(entry).expanduser()
    tried = [path if path.is_absolute() else base / path]
    if entry.startswith("../") and not tried[0].exists():
        tried.append(base / entry[3:])
    for candidate in tried:
        if candidate.exists():
            return candidate
    raise DataError(
        f"{where}: {entry!r} not found (looked for {' and '.join(str(p) for p in tried)}). Point it at the "
        "image folder, or remove the key (pass a corrected copy of the yaml with --annotations)."
    )


def _txt_listing(path: Path, where: str) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read the image list {path}: {exc}") from None
    return [path.parent / line.strip() for line in lines if line.strip()]


def _relative_to_root(path: Path, root: Path, where: str) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise DataError(
            f"{where}: image {path} is outside the dataset root {root}; import the folder that holds all splits."
        ) from None
    return safe_relative(rel, where)


def _scan(root: Path) -> list[tuple[str, str | None]]:
    """Every image under the root (not under a `labels` folder), its split read from its folders."""
    out: list[tuple[str, str | None]] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() in IMAGE_SUFFIXES and "labels" not in rel.parts[:-1] and path.is_file():
            out.append((rel.as_posix(), split_from_parts(rel.parts[:-1])))
    return out


def _read_labels(path: Path, image: int, names: dict[int, str], spec: Path) -> list[SourceBox]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); is it a YOLO label file?") from None
    boxes = []
    for line_no, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {line_no}"
        n = len(fields)
        if n != 5 and (n < 7 or n % 2 == 0):
            raise DataError(
                f"{where}: expected 5 values `class cx cy w h` (or a polygon `class x1 y1 x2 y2 ...`), "
                f"got {n}: {line.strip()!r}"
            )
        values = [finite_number(v, where) for v in fields]
        if not values[0].is_integer() or int(values[0]) not in names:
            raise DataError(
                f"{where}: class id {fields[0]} is not in {spec} (classes {min(names)}..{max(names)}); "
                "fix the label or add the class to the names."
            )
        if n == 5:
            bbox = (values[1], values[2], values[3], values[4])
        else:
            xs, ys = values[1::2], values[2::2]
            bbox = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys))
        boxes.append(SourceBox(image=image, category_id=int(values[0]) + 1, bbox=bbox, normalized_center=True))
    return boxes


def write_yolo(dataset: Dataset, image_paths: dict[int, Path], out: Path) -> list[str]:
    """`<split>/images`, `<split>/labels` and `data.yaml`; images without a source split go to train.

    Class indices follow the categories in id order. Crowd regions have no YOLO equivalent and are
    left out (a note says how many).
    """
    categories = sorted(dataset["categories"], key=lambda c: int(c["id"]))
    class_of = {int(c["id"]): i for i, c in enumerate(categories)}
    names = flat_file_names(dataset["images"])
    boxes = boxes_by_image(dataset)
    used_splits: set[str] = set()
    crowd = 0
    for im in dataset["images"]:
        image_id = int(im["id"])
        split = im.get("source_split") or "train"
        used_splits.add(split)
        name = names[image_id]
        place_image(image_paths[image_id], out / split / "images" / name)
        lines = []
        for ann in boxes[image_id]:
            if ann.get("iscrowd"):
                crowd += 1
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            shares = ((x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"], h / im["height"])
            lines.append(" ".join([str(class_of[int(ann["category_id"])]), *(number(v) for v in shares)]))
        label = out / split / "labels" / (PurePosixPath(name).stem + ".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    spec: dict[str, Any] = {s: f"{s}/images" for s in SPLITS if s in used_splits}
    spec["nc"] = len(categories)
    spec["names"] = [c["name"] for c in categories]
    (out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return [f"{crowd} crowd region(s) left out: YOLO has no crowd boxes."] if crowd else []
