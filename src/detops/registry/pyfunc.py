"""The registered model as an MLflow pyfunc: image bytes in, one row per detection out, through `detops.inference`.

Input: a pandas DataFrame with one column `image`, each cell the encoded bytes of one image file (PNG, JPEG,
BMP, ...). Bytes rather than paths, because a served model does not see the caller's files; over REST the
column is base64, as MLflow encodes every `binary` column (`{"dataframe_split": {"columns": ["image"],
"data": [["iVBORw0..."]]}}`).

Output: a DataFrame with one row per detection: `image` (row position in the input), `category_id` and
`class_name` (the dataset's), `score`, and the box as `x`, `y`, `width`, `height` in the image's own pixels
(COCO order). An image without detections has no row.

The model runs the artifact named by its `serve` config (the deployable CPU export, else the checkpoint) with the
score threshold it was promoted with; `mlflow.pyfunc.load_model(uri, model_config={"score_threshold": 0.1})`
overrides it. This module is shipped inside the model (code_paths), so it imports only the inference path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

INPUT_COLUMN = "image"
OUTPUT_COLUMNS = {  # name -> MLflow type, in order
    "image": "long", "category_id": "long", "class_name": "string", "score": "double",
    "x": "double", "y": "double", "width": "double", "height": "double",
}


class DetopsDetector(PythonModel):
    """Loads one artifact with `load_predictor` and turns its detections into a flat table."""

    def load_context(self, context: Any) -> None:
        from detops.inference import load_predictor

        config = context.model_config
        self._predictor = load_predictor(context.artifacts[config["serve"]]).with_thresholds(
            score_threshold=float(config["score_threshold"]))
        self._batch_size = int(config["batch_size"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        images = image_bytes(model_input)
        detections = self._predictor.predict(images, batch_size=self._batch_size)
        return detections_frame(detections, self._predictor.meta.class_ids, self._predictor.meta.class_names)


def image_bytes(model_input: Any) -> list[bytes]:
    """The `image` column as a list of bytes; anything else is a DataError naming the expected input."""
    from detops.errors import DataError

    if not isinstance(model_input, pd.DataFrame) or INPUT_COLUMN not in model_input.columns:
        got = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
        raise DataError(f"the detops model takes a DataFrame with an {INPUT_COLUMN!r} column of encoded image bytes;"
                        f" got {got}.")
    out = []
    for row, value in enumerate(model_input[INPUT_COLUMN]):
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise DataError(f"row {row} of column {INPUT_COLUMN!r} is {type(value).__name__}, not image bytes "
                            "(read the file in binary mode; over REST, base64-encode it).")
        out.append(bytes(value))
    return out


def detections_frame(detections: list[Any], class_ids: list[int], class_names: list[str]) -> pd.DataFrame:
    """One row per detection, columns and dtypes as `OUTPUT_COLUMNS` declares."""
    rows: dict[str, list[Any]] = {name: [] for name in OUTPUT_COLUMNS}
    for index, det in enumerate(detections):
        for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            rows["image"].append(index)
            rows["category_id"].append(class_ids[int(label)])
            rows["class_name"].append(class_names[int(label)])
            rows["score"].append(float(score))
            rows["x"].append(x0)
            rows["y"].append(y0)
            rows["width"].append(x1 - x0)
            rows["height"].append(y1 - y0)
    dtypes = {"long": np.int64, "double": np.float64, "string": object}
    return pd.DataFrame({name: np.asarray(rows[name], dtype=dtypes[kind]) for name, kind in OUTPUT_COLUMNS.items()})


def signature() -> Any:
    """The declared input (one binary column) and output (the detection table) of the model."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", INPUT_COLUMN)]),
        outputs=Schema([ColSpec(kind, name) for name, kind in OUTPUT_COLUMNS.items()]),
    )


def input_example() -> pd.DataFrame:
    """A 64 x 48 grey PNG: small, and no image of the user's dataset ends up inside the model."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (114, 114, 114)).save(buffer, format="PNG")
    return pd.DataFrame({INPUT_COLUMN: [buffer.getvalue()]})
