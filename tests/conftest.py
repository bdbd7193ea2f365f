"""Shared fixtures: a throwaway workspace, a small sample dataset, and ../shared when present.

Tests marked `chromium`, `shared` or `openvino` skip when the machine lacks it, or fail saying so where CI requires
it (`DETOPS_REQUIRE_CHROMIUM=1`, `DETOPS_REQUIRE_SHARED=1`, `DETOPS_REQUIRE_OPENVINO=1`): one rule,
`_requirements.require_or_skip`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _requirements import SHARED, require_chromium, require_openvino, require_shared

pytest_plugins = ("_s3",)  # the S3 API on loopback (moto's server): fixtures `s3_endpoint`, `s3`

REPO = Path(__file__).resolve().parents[1]
# No telemetry calls to a network the tests may not have.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """gpu tests skip without CUDA."""
    has_cuda = False
    if any("gpu" in item.keywords for item in items):
        import torch

        has_cuda = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture is built: a `chromium`, `shared` or `openvino` test skips, or fails where CI requires it."""
    if item.get_closest_marker("chromium"):
        require_chromium()
    if item.get_closest_marker("openvino"):
        require_openvino()
    if item.get_closest_marker("shared"):
        require_shared()


@pytest.fixture
def shared() -> Path:
    """The ../shared folder (datasets, weights): a test using it needs it, marked `shared` or not."""
    require_shared()
    return SHARED


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace with the repository's params.yaml."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(REPO / "params.yaml", ws / "params.yaml")
    return ws


@pytest.fixture(scope="session")
def labelling_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint that has learned the easy sample (`_labelling_model`: a few CPU seconds of `train`), trained once
    for the audit and selection tests, which need a model whose answers mean something."""
    from _labelling_model import train_labelling_model

    return train_labelling_model(tmp_path_factory.mktemp("labelling-model"))
