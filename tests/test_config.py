"""params.yaml is the one source of defaults; the loader is strict and names the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detops.config import Params, dump_defaults, load_params
from detops.errors import ParamsError

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_equals_the_model_defaults() -> None:
    """The committed params.yaml is generated from the model: no default lives in two places."""
    assert (REPO / "params.yaml").read_text(encoding="utf-8").strip() == dump_defaults().strip()
    assert load_params(REPO / "params.yaml") == Params()


def test_every_verb_has_a_section() -> None:
    sections = yaml.safe_load((REPO / "params.yaml").read_text())
    for verb in ("sample", "import", "validate", "split", "train", "evaluate", "export", "promote", "monitor"):
        assert verb in sections
    assert {"mlflow", "paths"} <= set(sections)


def test_override_keeps_types(tmp_path: Path) -> None:
    params = load_params(None, ["train.epochs=3", "train.pretrained=true", "split.box_count_bins=[1, 2]"])
    assert params.train.epochs == 3
    assert params.train.pretrained is True
    assert params.split.box_count_bins == [1, 2]
    assert load_params(None, ["train.pretrained=/w/x.safetensors"]).train.pretrained == "/w/x.safetensors"


def test_unknown_override_names_path_and_allowed_keys() -> None:
    with pytest.raises(ParamsError, match=r"'train\.epoch'.*allowed: .*epochs"):
        load_params(None, ["train.epoch=3"])
    with pytest.raises(ParamsError, match=r"'nope' is not in top level"):
        load_params(None, ["nope.x=1"])


def test_unknown_key_in_file_names_dotted_path(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  augment:\n    hflipp: 0.5\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert "train.augment.hflipp: unknown key" in str(err.value)
    assert "hflip" in str(err.value)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.lr=abc", "train.lr"),
        ("train.epochs=0", "train.epochs"),
        ("split.train=0.9", "sum to 1"),
        ("validate.on_error=ignore", "validate.on_error"),
        ("train.epochs", "expected KEY=VALUE"),
    ],
)
def test_bad_values_are_clear(override: str, fragment: str) -> None:
    with pytest.raises(ParamsError, match=fragment.replace(".", r"\.")):
        load_params(None, [override])


def test_missing_and_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_flat_uses_yaml_names() -> None:
    flat = Params().flat()
    assert flat["import.format"] == "coco"
    assert flat["train.augment.hflip"] == 0.5
