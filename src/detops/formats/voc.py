"""Pascal VOC: `Annotations/*.xml`, `JPEGImages/`, and `ImageSets/Main/{train,val,test}.txt` when present.

Coordinates: the corners are read as box edges, `x = xmin`, `w = xmax - xmin`, as torchvision's
and MMDetection's VOC readers do, and the writer applies the exact inverse, so VOC -> canonical ->
VOC gives back the same numbers. The VOC devkit's own reading (1-based inclusive pixel indices:
`x = xmin - 1`, `w = xmax - xmin + 1`) differs by at most a pixel but turns a point annotation
(`xmin == xmax`, which BCCD has twice) into a 1x1 box that no area rule can tell from a real one;
with edges it is the zero-area box it is, and the validate step flags it.

Category ids: the object names found, sorted, numbered 1..N.

Splits: `train.txt`, `val.txt` and `test.txt` set `source_split`; `trainval.txt` is used (as
train) only when neither `train.txt` nor `val.txt` exists. Annotation files are parsed with
defusedxml, since a dataset is untrusted input.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from PIL import Image

from detops.dataset.canonical import SPLITS, Dataset
from detops.dataset.paths import safe_relative
from detops.errors import DataError
from detops.formats.layout import boxes_by_image, flat_file_names, number, place_image
from detops.formats.source import IMAGE_SUFFIXES, SourceBox, SourceDataset, SourceImage, finite_number, listing

ANNOTATIONS = "Annotations"
IMAGES = "JPEGImages"
IMAGE_SETS = Path("ImageSets") / "Main"
_CORNERS = ("xmin", "ymin", "xmax", "ymax")


def read_voc(root: Path, annotations: Path | None = None) -> SourceDataset:
    """`annotations` is unused: a VOC folder's layout says where everything is."""
    folder = root / ANNOTATIONS
    if not folder.is_dir():
        raise DataError(f"{root}: not a Pascal VOC folder ({ANNOTATIONS}/ not found).")
    xml_files = sorted(folder.glob("*.xml"))
    if not xml_files:
        raise DataError(f"{folder}: no *.xml annotation files.")
    notes: list[str] = []
    split_of = _image_sets(root, notes)
    images: list[SourceImage] = []
    named_boxes: list[tuple[SourceBox, str]] = []
    for xml_file in xml_files:
        image, objects = _read_xml(xml_file, root)
        image.source_split = split_of.pop(xml_file.stem, None)
        index = len(images)
        images.append(image)
        named_boxes += [(SourceBox(image=index, category_id=0, bbox=bbox), name) for name, bbox in objects]
    if split_of:
        notes.append(f"{len(split_of)} id(s) in {IMAGE_SETS} have no annotation file: {listing(sorted(split_of))}")
    ids = {name: i + 1 for i, name in enumerate(sorted({name for _, name in named_boxes}))}
    boxes = []
    for box, name in named_boxes:
        box.category_id = ids[name]
        boxes.append(box)
    categories = [{"id": cid, "name": name, "supercategory": ""} for name, cid in ids.items()]
    return SourceDataset(root=root, format="voc", images=images, boxes=boxes, categories=categories, notes=notes)


def _image_sets(root: Path, notes: list[str]) -> dict[str, str]:
    """Image id -> split from `ImageSets/Main`; an id listed twice keeps its first split."""
    folder = root / IMAGE_SETS
    files = {s: folder / f"{s}.txt" for s in SPLITS if (folder / f"{s}.txt").is_file()}
    if "train" not in files and "val" not in files and (folder / "trainval.txt").is_file():
        files["train"] = folder / "trainval.txt"
    split_of: dict[str, str] = {}
    clashes: list[str] = []
    for split, path in files.items():
        for line in path.read_text(encoding="utf-8").splitlines():
            image_id = line.split()[0] if line.split() else ""
            if not image_id:
                continue
            if image_id not in split_of:
                split_of[image_id] = split
            elif split_of[image_id] != split:
                clashes.append(f"{image_id} ({split_of[image_id]} and {split})")
    if clashes:
        notes.append(f"{len(clashes)} image(s) listed in more than one split, kept in the first: {listing(clashes)}")
    return split_of


def _read_xml(path: Path, root: Path) -> tuple[SourceImage, list[tuple[str, tuple[float, float, float, float]]]]:
    try:
        tree = SafeET.parse(path)
    except ET.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(": line")[0]
        raise DataError(f"{path}: not valid XML at line {line}, column {column + 1} ({reason}).") from None
    except DefusedXmlException as exc:
        raise DataError(
            f"{path}: refused unsafe XML ({type(exc).__name__}); VOC annotations need no DTD or entities."
        ) from None
    node = tree.getroot()
    if node.tag != "annotation":
        raise DataError(f"{path}: not a VOC annotation (root element <{node.tag}>, expected <annotation>).")
    size = node.find("size")
    image = SourceImage(
        file_name=_image_file(node.findtext("filename"), path, root),
        where=str(path),
        width=_size(size, "width", path),
        height=_size(size, "height", path),
    )
    objects = []
    for k, obj in enumerate(node.findall("object"), 1):
        where = f"{path}: object {k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{where}: missing <name>.")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{where} ({name}): missing <bndbox>.")
        xmin, ymin, xmax, ymax = (_coordinate(box, key, f"{where} ({name})") for key in _CORNERS)
        objects.append((name, (xmin, ymin, xmax - xmin, ymax - ymin)))
    return image, objects


def _image_file(filename: str | None, xml_file: Path, root: Path) -> str:
    """`JPEGImages/<filename>`, else the image named like the xml file (some tools drop or change
    the extension); `filename` as given when neither exists, so the missing file is reported."""
    declared = f"{IMAGES}/{safe_relative(filename.strip(), str(xml_file))}" if filename and filename.strip() else None
    if declared and (root / declared).is_file():
        return declared
    for candidate in sorted((root / IMAGES).glob(f"{xml_file.stem}.*")):
        if candidate.suffix.lower() in IMAGE_SUFFIXES:
            return f"{IMAGES}/{candidate.name}"
    return declared or f"{IMAGES}/{xml_file.stem}.jpg"


def _size(size: ET.Element | None, key: str, path: Path) -> int | None:
    """Declared size, or None when absent or 0 (some exporters write 0 when they do not know it)."""
    text = size.findtext(key) if size is not None else None
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: <size><{key}> is {text!r}, not a number.") from None
    return int(value) if value > 0 and math.isfinite(value) else None


def _coordinate(box: ET.Element, key: str, where: str) -> float:
    text = box.findtext(key)
    if text is None:
        raise DataError(f"{where}: <bndbox> has no <{key}>.")
    return finite_number(text, f"{where}: <{key}>")


def write_voc(dataset: Dataset, image_paths: dict[int, Path], out: Path) -> list[str]:
    """One xml per image, images in `JPEGImages/` with their own extension, and `ImageSets/Main`
    files for the source splits present (`trainval.txt` too, as VOC tools expect). Crowd regions
    have no VOC equivalent and are left out (a note says how many)."""
    names = flat_file_names(dataset["images"])
    category = {int(c["id"]): str(c["name"]) for c in dataset["categories"]}
    boxes = boxes_by_image(dataset)
    (out / ANNOTATIONS).mkdir(parents=True)
    members: dict[str, list[str]] = {s: [] for s in SPLITS}
    crowd = 0
    for im in dataset["images"]:
        image_id = int(im["id"])
        name = names[image_id]
        source = image_paths[image_id]
        place_image(source, out / IMAGES / name)
        objects = [(category[int(a["category_id"])], a) for a in boxes[image_id] if not a.get("iscrowd")]
        crowd += len(boxes[image_id]) - len(objects)
        xml = _annotation_xml(im, name, _depth(source), objects)
        stem = Path(name).stem
        ET.ElementTree(xml).write(out / ANNOTATIONS / f"{stem}.xml", encoding="utf-8")
        if im.get("source_split") in members:
            members[im["source_split"]].append(stem)
    (out / IMAGE_SETS).mkdir(parents=True)
    members["trainval"] = members["train"] + members["val"]
    for split, stems in members.items():
        if stems:
            (out / IMAGE_SETS / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")
    return [f"{crowd} crowd region(s) left out: VOC has no crowd boxes."] if crowd else []


def _depth(path: Path) -> int:
    with Image.open(path) as img:
        return len(img.getbands())


def _annotation_xml(
    image: dict[str, Any], name: str, depth: int, objects: list[tuple[str, dict[str, Any]]]
) -> ET.Element:
    node = ET.Element("annotation")
    ET.SubElement(node, "folder").text = IMAGES
    ET.SubElement(node, "filename").text = name
    size = ET.SubElement(node, "size")
    for key, value in (("width", image["width"]), ("height", image["height"]), ("depth", depth)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(node, "segmented").text = "0"
    for label, ann in objects:
        x, y, w, h = (float(v) for v in ann["bbox"])
        obj = ET.SubElement(node, "object")
        ET.SubElement(obj, "name").text = label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for key, value in zip(_CORNERS, (x, y, x + w, y + h), strict=True):
            ET.SubElement(box, key).text = number(value)
    ET.indent(node, space="\t")
    return node
