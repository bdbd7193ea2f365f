"""The Label Studio labelling config and box conversions: one image, one RectangleLabels control whose labels are
the dataset's classes. Label Studio stores boxes in percent of the image's original width and height."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

IMAGE, BOXES = "image", "label"  # the object (`$image` in each task's data) and the control names


def label_config(class_names: list[str]) -> str:
    """The XML config of a project: the image, then one label per class, in the dataset's order."""
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in class_names)
    return (f'<View>\n  <Image name="{IMAGE}" value="${IMAGE}"/>\n'
            f'  <RectangleLabels name="{BOXES}" toName="{IMAGE}">\n{labels}\n  </RectangleLabels>\n</View>\n')


def box_to_result(xywh: tuple[float, float, float, float], class_name: str, width: int, height: int,
                  score: float | None = None) -> dict[str, object]:
    """A pixel box [x, y, w, h] as a RectangleLabels result (percent of the original size)."""
    x, y, w, h = xywh
    value = {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width, "height": 100 * h / height,
             "rotation": 0, "rectanglelabels": [class_name]}
    result: dict[str, object] = {"from_name": BOXES, "to_name": IMAGE, "type": "rectanglelabels", "value": value,
                                 "original_width": width, "original_height": height}
    if score is not None:
        result["score"] = score
    return result


def result_to_box(result: dict[str, object]) -> tuple[list[float], list[str]] | None:
    """(pixel box [x, y, w, h], its labels) of a RectangleLabels result; None for another kind of result."""
    value = result.get("value")
    if result.get("type") != "rectanglelabels" or not isinstance(value, dict):
        return None
    width, height = float(result["original_width"]), float(result["original_height"])  # type: ignore[arg-type]
    box = [float(value["x"]) * width / 100, float(value["y"]) * height / 100,
           float(value["width"]) * width / 100, float(value["height"]) * height / 100]
    return box, [str(label) for label in value.get("rectanglelabels") or []]
