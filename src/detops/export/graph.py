"""ONNX FP32 export: dynamic batch, simplified graph, checker-clean, metadata embedded; and graph queries.

onnxslim simplifies the graph: pure Python, no compiler, and on the detops graph it gives the same node
count and latency as onnxsim (benchmarks/onnx_simplifiers.py), which needs a C++ build on many platforms.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from detops.inference.meta import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, ModelMeta

if TYPE_CHECKING:
    import onnx
    import torch


def export_fp32(model: torch.nn.Module, path: Path, image_size: int, opset: int, meta: ModelMeta) -> None:
    """Trace the detector to ONNX with a dynamic batch axis, simplify it, check it, embed `meta`."""
    import onnx
    import onnxslim
    import torch

    example = torch.rand(1, 3, image_size, image_size)
    raw_path = path.with_suffix(".raw.onnx")
    with warnings.catch_warnings():  # GroupNorm's batch-size check traces as a constant: harmless here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, (example,), str(raw_path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    slim = onnxslim.slim(onnx.load(str(raw_path)))
    raw_path.unlink()
    set_metadata(slim, meta)
    onnx.checker.check_model(slim, full_check=True)
    onnx.save(slim, str(path))


def set_metadata(model: onnx.ModelProto, meta: ModelMeta) -> None:
    """Embed (or replace) the detops metadata, the one thing a consumer needs besides the file."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    model.producer_name = "detops"
    model.doc_string = f"detops detector, {meta.precision}: {', '.join(meta.class_names)}"


def decode_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes after the last convolution: the box decode (exp, scale, add the anchor points)
    and the concat of pixels with logits. They stay float: exp of a regression logit overflows float16,
    and quantizing coordinates in pixels would cost accuracy for no speed."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_conv: dict[int, bool] = {}
    for node in reversed(model.graph.node):  # ONNX nodes are topologically sorted: consumers come first here
        below = [c for out in node.output for c in consumers.get(out, [])]
        feeds_conv[id(node)] = any(c.op_type == "Conv" or feeds_conv[id(c)] for c in below)
    return [node.name for node in model.graph.node if node.op_type != "Conv" and not feeds_conv[id(node)]]
