"""The Prefect form's params overlay: an empty form changes nothing, set fields are laid over params.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

from detops.config.overlay import ParamsOverlay, changes_of


def test_an_empty_overlay_sets_nothing_and_set_fields_keep_their_section() -> None:
    assert changes_of(ParamsOverlay()) == {} and changes_of(None) == {}
    form = ParamsOverlay.model_validate({"train": {"epochs": 1}, "monitor": {"per_column": {}}})
    assert changes_of(form) == {"train": {"epochs": 1}, "monitor": {"per_column": {}}}  # {} is a value, kept


def test_the_form_defaults_to_an_empty_overlay_and_uses_params_yaml(tmp_path: Path) -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.retrain import retrain, workspace_for

    schema = parameter_schema(retrain.fn).model_dump_for_openapi()["properties"]["params"]
    assert isinstance(schema["default"], dict) and schema["default"]["train"]["epochs"] is None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": 3}}), encoding="utf-8")
    assert workspace_for(str(tmp_path), ParamsOverlay(), []).params.train.epochs == 3
    assert workspace_for(str(tmp_path), ParamsOverlay.model_validate({"train": {"epochs": 2}}), []
                         ).params.train.epochs == 2
