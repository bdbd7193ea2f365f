"""The one typed model of `params.yaml`: every default lives in that file, validated here."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from detops.config.base import Section
from detops.config.deploy import DeployParams
from detops.config.evaluate import EvaluateParams
from detops.config.export import ExportParams
from detops.config.import_ import ImportParams
from detops.config.label import LabelParams
from detops.config.label_studio import LabelStudioParams
from detops.config.mlflow import MlflowParams
from detops.config.monitor import MonitorParams
from detops.config.paths import PathsParams
from detops.config.predict import PredictParams
from detops.config.promote import PromoteParams
from detops.config.sample import SampleParams
from detops.config.serve import ServeParams
from detops.config.split import SplitParams
from detops.config.train import TrainParams
from detops.config.validate import ValidateParams

VERBS = ("sample", "import", "validate", "split", "train", "evaluate", "export", "promote", "monitor")


class Params(Section):
    """All pipeline params. `import` is a Python keyword, so its field is `import_` (alias `import`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    paths: PathsParams = Field(default_factory=PathsParams)
    mlflow: MlflowParams = Field(default_factory=MlflowParams)
    sample: SampleParams = Field(default_factory=SampleParams)
    import_: ImportParams = Field(default_factory=ImportParams, alias="import")
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    export: ExportParams = Field(default_factory=ExportParams)
    predict: PredictParams = Field(default_factory=PredictParams)
    promote: PromoteParams = Field(default_factory=PromoteParams)
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    deploy: DeployParams = Field(default_factory=DeployParams)
    serve: ServeParams = Field(default_factory=ServeParams)
    label: LabelParams = Field(default_factory=LabelParams)
    label_studio: LabelStudioParams = Field(default_factory=LabelStudioParams)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the `params.yaml` key names (aliases)."""
        return self.model_dump(mode="json", by_alias=True)

    def flat(self) -> dict[str, Any]:
        """Dotted keys (`train.lr`), as logged to MLflow."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(f"{prefix}.{key}" if prefix else key, value)
            else:
                out[prefix] = node

        walk("", self.to_dict())
        return out
