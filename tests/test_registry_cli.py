"""`detops registry list|rollback|prune`: tables and messages, clean errors, and a --help that never loads mlflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detops.cli import app
from detops.config import load_params
from detops.registry.client import connect
from detops.registry.decision import decide_promotion
from detops.workspace import Workspace

runner = CliRunner()


def test_help_does_not_import_mlflow() -> None:
    code = (
        "import sys\n"
        "from detops.cli import app\n"
        "for argv in (['--help'], ['registry', '--help'], ['registry', 'rollback', '--help']):\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (argv, exc.code)\n"
        "print('LOADED=' + ','.join(m for m in ('mlflow', 'prefect', 'filelock') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "registry" in out.stdout and "rollback" in out.stdout and "--reason" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED="


def _register(ws: Workspace, scores: list[float]) -> list[str]:
    """Versions with a file artifact each, promoted in order through the real gate rules."""
    from detops.registry.aliases import apply_decision

    client = connect(ws)
    name = ws.params.mlflow.registered_model
    client.create_registered_model(name)
    exp = client.create_experiment("cli", artifact_location=(ws.root / "mlartifacts").as_uri())
    versions, best = [], None
    for score in scores:
        run = client.create_run(exp)
        (ws.root / "w.txt").write_text(str(score))
        client.log_artifact(run.info.run_id, str(ws.root / "w.txt"), "model")
        client.log_metric(run.info.run_id, "test/map", score)
        client.set_tag(run.info.run_id, "data.content_hash", f"hash{score}")
        version = str(client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id).version)
        decision = decide_promotion({"test/map": score}, None if best is None else {"test/map": best},
                                    metric="test/map", min_improvement=0.005, min_metric=0.0)
        apply_decision(client, name, version, decision)
        best = score if decision.promote else best
        versions.append(version)
    return versions


def test_list_rollback_prune(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = Workspace.at(workspace, load_params(workspace / "params.yaml"))
    _register(ws, [0.5, 0.6, 0.601, 0.7])  # champion v4, previous v2, challenger v3
    base = ["--workspace", str(workspace), "registry"]

    listed = runner.invoke(app, [*base, "list"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "4 version(s)" in listed.output
    assert "champion" in listed.output and "previous-champion" in listed.output and "challenger" in listed.output
    assert "0.7000" in listed.output and "hash0.7" in listed.output

    rolled = runner.invoke(app, [*base, "rollback", "--reason", "night images regress"])
    assert rolled.exit_code == 0, rolled.output
    assert "champion -> version 2" in rolled.output and "previous-champion -> version 4" in rolled.output

    pruned = runner.invoke(app, [*base, "prune", "--keep", "1"])
    assert pruned.exit_code == 0, pruned.output
    assert "deleted version(s): 3, 1" in pruned.output or "deleted version(s): 3,1" in pruned.output

    again = runner.invoke(app, [*base, "rollback", "--reason", "x", "--to", "3"])
    assert again.exit_code == 2
    assert "has no version 3 (versions: 2, 4)" in again.output
    assert "Traceback" not in again.output


def test_errors_are_messages_not_tracebacks(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = ["--workspace", str(workspace)]
    empty = runner.invoke(app, [*base, "registry", "list"])
    assert empty.exit_code == 2 and "no registered model named 'detops-detector'" in empty.output
    bad_name = runner.invoke(app, [*base, "--set", "mlflow.registered_model=a/b", "registry", "list"])
    assert bad_name.exit_code == 2 and "invalid registered model name" in bad_name.output
    no_reason = runner.invoke(app, [*base, "registry", "rollback"])
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    for result in (empty, bad_name, no_reason):
        assert "Traceback" not in result.output
