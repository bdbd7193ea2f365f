"""The file MLflow runs to build the registered model ("models from code"): the registry stores this script and
the detops code, never a pickled object, so loading a model executes no deserialised bytecode."""

from mlflow.models import set_model

from detops.registry.pyfunc import DetopsDetector

set_model(DetopsDetector())
