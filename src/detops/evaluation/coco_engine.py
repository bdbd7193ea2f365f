"""Which COCOeval implementation scores detections: faster-coco-eval where installed, pycocotools otherwise.

faster-coco-eval runs COCOeval's matching and accumulation in C++ and keeps no per-image Python dicts, so scoring
a 100k-image split takes seconds and memory that grows with the detections, not with evalImgs (images x classes x
area ranges) as pycocotools' does. Its numbers equal pycocotools' (tests/test_coco_engine.py, 1e-6). The engine's
name and version are part of the evaluate step's cache key: both imports below are seen by `detops.codegraph`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any, Literal

EngineName = Literal["faster_coco_eval", "pycocotools"]


@dataclass(frozen=True)
class CocoEngine:
    """torchmetrics' backend name and the installed distribution's version."""

    name: EngineName
    version: str

    def iou_and_recall_thresholds(self) -> tuple[list[float], list[float], list[int]]:
        """COCOeval's own float64 IoU and recall thresholds and max detections, from the engine's Params."""
        params = _params_class(self.name)(iouType="bbox")
        return params.iouThrs.tolist(), params.recThrs.tolist(), list(params.maxDets)


@cache
def coco_engine() -> CocoEngine:
    """faster-coco-eval when it imports, else pycocotools (a dependency, so always there)."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return CocoEngine("pycocotools", metadata.version("pycocotools"))
    return CocoEngine("faster_coco_eval", metadata.version("faster-coco-eval"))


def engine_named(name: EngineName) -> CocoEngine:
    """A given engine (the parity test runs both); ImportError where it is not installed."""
    _params_class(name)
    return CocoEngine(name, metadata.version("faster-coco-eval" if name == "faster_coco_eval" else "pycocotools"))


def _params_class(name: EngineName) -> Any:
    if name == "faster_coco_eval":
        from faster_coco_eval.core.cocoeval import Params
    else:
        from pycocotools.cocoeval import Params
    return Params
