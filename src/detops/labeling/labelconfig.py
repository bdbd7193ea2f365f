"""The Label Studio labelling config and box conversions: one image, one RectangleLabels control whose labels are
the dataset's classes. Label Studio stores boxes in percent of the image's width and height.

Boxes are axis-aligned: the config turns rotation off (`canRotate="false"`; Label Studio lets a labeller rotate a
box by default), and a result that is rotated all the same (a project whose config was edited, an image rotated in
the editor) is refused by `result_to_box`, never read as if it were not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

IMAGE, BOXES = "image", "label"  # the object (`$image` in each task's data) and the control names
RECTANGLE = "rectanglelabels"  # the result type of a RectangleLabels control


def label_config(class_names: list[str]) -> str:
    """The XML config of a project: the image, then one label per class, in the dataset's order; boxes cannot be
    rotated."""
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in class_names)
    return (f'<View>\n  <Image name="{IMAGE}" value="${IMAGE}"/>\n'
            f'  <RectangleLabels name="{BOXES}" toName="{IMAGE}" canRotate="false">\n{labels}\n'
            '  </RectangleLabels>\n</View>\n')


def box_to_result(xywh: tuple[float, float, float, float], class_name: str, width: int, height: int,
                  score: float | None = None) -> dict[str, object]:
    """A pixel box [x, y, w, h] as a RectangleLabels result (percent of the image's size)."""
    x, y, w, h = xywh
    value = {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width, "height": 100 * h / height,
             "rotation": 0, "rectanglelabels": [class_name]}
    result: dict[str, object] = {"from_name": BOXES, "to_name": IMAGE, "type": RECTANGLE, "value": value,
                                 "original_width": width, "original_height": height}
    if score is not None:
        result["score"] = score
    return result


@dataclass(frozen=True)
class Refused:
    """Why a result is not a box: `loses_a_box` when it is one detops cannot read (rotated, no label, another
    image size), so taking the rest would leave that object unlabelled; otherwise it is not a box at all."""

    reason: str
    loses_a_box: bool


def result_to_box(result: dict[str, Any], width: int, height: int) -> tuple[list[float], list[str]] | Refused:
    """(pixel box [x, y, w, h], its labels) of a RectangleLabels result on an image of `width` x `height` pixels
    (the size push used), or why it is refused."""
    value = result.get("value")
    if result.get("type") != RECTANGLE or not isinstance(value, dict):
        return Refused(f"not a rectangle (a {result.get('type') or 'typeless'} result of "
                       f"{result.get('from_name') or 'an unnamed control'})", False)
    labels = [str(label) for label in value.get("rectanglelabels") or []]
    if not labels:
        return Refused("a box with no label", True)
    if float(value.get("rotation") or 0) != 0:
        return Refused(f"a box rotated by {value['rotation']} degrees (boxes must be axis-aligned)", True)
    if float(result.get("image_rotation") or 0) != 0:
        return Refused(f"a box drawn on the image rotated by {result['image_rotation']} degrees in the editor", True)
    seen_width, seen_height = result.get("original_width"), result.get("original_height")
    if seen_width is not None and seen_height is not None and (int(seen_width), int(seen_height)) != (width, height):
        return Refused(f"a box drawn on a {seen_width}x{seen_height} image, but the image is {width}x{height} "
                       "(EXIF orientation or a changed file?)", True)
    try:
        x, y, w, h = (float(value[key]) for key in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        return Refused(f"a box without a readable x, y, width, height ({value})", True)
    return [x * width / 100, y * height / 100, w * width / 100, h * height / 100], labels
