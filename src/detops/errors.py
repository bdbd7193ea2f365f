"""Errors a user can cause. The CLI prints them without a traceback and exits non-zero."""

from __future__ import annotations


class DetopsError(Exception):
    """Base class for every error caused by data, params or files a user controls."""

    exit_code = 2


class ParamsError(DetopsError):
    """params.yaml or a `--set` override is invalid."""


class DataError(DetopsError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file and object."""


class ClassSetMismatch(DataError):
    """Two class sets that must agree do not (`detops.dataset.classes`): a model's and the split it is scored on, a
    batch's and the dataset's, ... `difference` says what the reference has that the other lacks, and the reverse."""

    def __init__(self, message: str, difference: str) -> None:
        super().__init__(message)
        self.difference = difference


class ValidationFailed(DetopsError):
    """The data quality gate found offending rows and the policy is `fail`."""

    exit_code = 3


class TrainingError(DetopsError):
    """Training cannot start or diverged (empty split, NaN loss, bad image size)."""


class ExportError(DetopsError):
    """An export cannot be made or is broken (the FP32 ONNX file fails the accuracy gate, TensorRT required
    but absent)."""




class RegistryError(DetopsError):
    """The MLflow model registry is unreachable, or a model, version or alias it was asked for is missing."""


class PromotionError(RegistryError):
    """The promotion gate cannot decide (unknown metric, missing score) or the promotion lock is unavailable."""


class DeployError(DetopsError):
    """No Prefect server to deploy to, or the server refused a work pool, deployment or automation."""


class LabelStudioError(DetopsError):
    """The Label Studio server is down, refuses the token, or answers something the label round trip cannot use;
    nothing is written and the batch stays as it was."""


class LabelStudioUnreachable(LabelStudioError):
    """The Label Studio server does not answer at all (down, wrong URL): `detops status` says so and goes on."""
