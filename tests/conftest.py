"""Shared fixtures: a throwaway workspace, a small sample dataset, and ../shared when present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# No telemetry calls to a network the tests may not have.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SHARED = Path(os.environ.get("DETOPS_SHARED", REPO.parent / "shared"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """gpu tests skip without CUDA; tests marked `shared` skip when ../shared is absent."""
    has_cuda = False
    if any("gpu" in item.keywords for item in items):
        import torch

        has_cuda = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "shared" in item.keywords and not SHARED.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"{SHARED} is absent (only the developers' checkout has it)"))


@pytest.fixture
def shared() -> Path:
    return SHARED


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace with the repository's params.yaml."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(REPO / "params.yaml", ws / "params.yaml")
    return ws
