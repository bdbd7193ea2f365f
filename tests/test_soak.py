"""The soak (benchmarks/soak.py) in its short form: every server real (S3, MLflow on PostgreSQL, Prefect server and
worker, Label Studio, two `detops serve` replicas), traffic, one loop from drift to a new champion, and one fault of
each kind; every invariant must hold. The long runs and their tables are in benchmarks/README.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _label_studio_server
import _mlflow_server
import pytest
from _requirements import POSTGRES_ENV, require_or_skip

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_short_soak_keeps_every_invariant(tmp_path: Path) -> None:
    try:
        _mlflow_server.postgres_bindir()
    except _mlflow_server.Unavailable as exc:
        require_or_skip(False, f"the soak's MLflow server needs PostgreSQL: {exc}", POSTGRES_ENV)
    try:
        _label_studio_server.label_studio_venv()
    except _label_studio_server.Unavailable as exc:
        require_or_skip(False, f"the soak needs Label Studio: {exc}", _label_studio_server.REQUIRE_ENV)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--minutes", "4", "--rate", "10",
                           "--seed", "1", "--drain-minutes", "10", "--workdir", str(tmp_path / "soak")],
                          capture_output=True, text=True, timeout=1800)
    out = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, out[-8000:]
    table = out[out.rindex("| invariant | holds | count |"):]
    assert "| NO |" not in table and table.count("| yes |") >= 12, table
