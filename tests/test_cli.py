"""The CLI maps flags to params, prints user errors without a traceback, and stays light to import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detops.cli import app

runner = CliRunner()


def test_help_lists_every_verb() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("sample", "import", "validate", "split", "train", "evaluate", "export", "promote", "monitor"):
        assert verb in result.output


def test_cli_import_does_not_load_heavy_libraries() -> None:
    """`detops --help` must stay fast: torch, mlflow, prefect & co. are imported by the steps only."""
    code = (
        "import sys, detops.cli, detops.config, detops.workspace\n"
        "heavy = [m for m in ('torch', 'mlflow', 'prefect', 'great_expectations', 'evidently', 'pandas')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_paths_typed_on_the_command_line_are_relative_to_the_shell(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`detops --workspace W import SRC`: SRC is where the user typed it from, not inside W."""
    from detops.config import load_params
    from detops.steps import sample
    from detops.workspace import Workspace

    shell = tmp_path / "shell"
    sample.run(Workspace.at(shell, load_params(None, ["sample.num_images=4", "sample.image_size=64",
                                                       "sample.max_object_size=32", "paths.raw=."])))
    monkeypatch.chdir(shell)
    result = runner.invoke(app, ["--workspace", str(workspace), "import", "--format", "coco", "sample"])
    assert result.exit_code == 0, result.output
    info = json.loads((workspace / "data/prepared/dataset.json").read_text())["info"]
    assert Path(info["root"]) == shell / "sample"


def test_bad_override_is_an_error_not_a_traceback(workspace: Path) -> None:
    result = runner.invoke(app, ["--workspace", str(workspace), "--set", "train.epoch=2", "train"])
    assert result.exit_code == 2
    assert "unknown key 'train.epoch'" in result.output
    assert "Traceback" not in result.output


def test_missing_explicit_params_file(workspace: Path) -> None:
    result = runner.invoke(app, ["--workspace", str(workspace), "--params", "other.yaml", "params"])
    assert result.exit_code == 2
    assert "other.yaml: params file not found" in result.output


def test_params_command_applies_overrides(workspace: Path) -> None:
    result = runner.invoke(app, ["--workspace", str(workspace), "--set", "train.epochs=7", "params"])
    assert result.exit_code == 0
    assert "epochs: 7" in result.output


@pytest.mark.parametrize("module", ["detops.cli", "flows.retrain", "flows.drift_check", "tasks.steps"])
def test_every_entry_point_switches_telemetry_off_in_code(module: str) -> None:
    """An offline machine must not see Prefect's or MLflow's telemetry errors, whether or not `make` set the
    variables: importing any entry point sets them (a user's own setting wins)."""
    import os

    names = ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "MLFLOW_DISABLE_TELEMETRY")
    env = {k: v for k, v in os.environ.items() if k not in names}
    code = f"import os, {module}\nprint(' '.join(os.environ.get(n, '-') for n in {names!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["1", "false", "true"]
    mine = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"}, cwd=Path(__file__).resolve().parents[1])
    assert mine.stdout.split() == ["1", "false", "false"]
