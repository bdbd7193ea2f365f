"""What some tests need from the machine (chromium, ../shared, PostgreSQL, OpenVINO), and the one rule for its absence.

On a developer's machine a missing requirement skips the test, saying what is missing. CI (`.ci/run`) sets
`DETOPS_REQUIRE_<WHAT>=1` for each requirement it provides, so there a missing one fails the test instead: CI cannot
go green by skipping the tests that are its point.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DETOPS_SHARED", REPO.parent / "shared"))

CHROMIUM_ENV, SHARED_ENV, POSTGRES_ENV = "DETOPS_REQUIRE_CHROMIUM", "DETOPS_REQUIRE_SHARED", "DETOPS_REQUIRE_POSTGRES"
OPENVINO_ENV = "DETOPS_REQUIRE_OPENVINO"


def require_or_skip(available: bool, what: str, env: str) -> None:
    """Nothing when `available`; else fail when `env` is `1` (CI provides it), skip otherwise. `what` says what
    is missing and how to get it."""
    if available:
        return
    if os.environ.get(env) == "1":
        pytest.fail(f"{env}=1 but {what}", pytrace=False)
    pytest.skip(what)


def require_chromium() -> None:
    from detops.monitoring.browser import NAMES, find_chromium

    require_or_skip(find_chromium() is not None,
                    f"chromium is not installed (none of {', '.join(NAMES)} on PATH; apt-get install -y chromium, "
                    "as .ci/run does): cannot render HTML", CHROMIUM_ENV)


def require_shared() -> None:
    require_or_skip(SHARED.is_dir(), f"the shared folder {SHARED} is absent (only the developers' checkout has it; "
                    "DETOPS_SHARED names another place)", SHARED_ENV)


def require_openvino() -> None:
    from detops.inference.openvino_runtime import openvino_installed  # asks without importing it

    require_or_skip(openvino_installed(), "openvino is not installed (pip install -e '.[openvino]', as `make test` "
                    "does)", OPENVINO_ENV)
