"""The one way to run a trained detector, whatever the artifact: checkpoint, ONNX (any precision), OpenVINO, TensorRT.

`load_predictor(path)` picks the runtime from the file; the ONNX path imports neither torch nor torchvision.
"""

from detops.inference.decode import Thresholds
from detops.inference.loading import load_predictor
from detops.inference.meta import ModelMeta
from detops.inference.predictor import Detections, ImageInput, Predictor

__all__ = ["Detections", "ImageInput", "ModelMeta", "Predictor", "Thresholds", "load_predictor"]
