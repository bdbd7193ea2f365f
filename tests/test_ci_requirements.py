"""CI cannot go green by skipping: with `DETOPS_REQUIRE_CHROMIUM=1` (set by `.ci/run`) a test that renders HTML fails
when chromium is missing, naming it; without the variable it skips, saying why. The requirement is checked before
the test's fixtures are built, so neither run costs more than pytest's start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RENDERING_TEST = "tests/test_monitoring_report.py::test_a_screenshot_is_kept_beside_the_report"


def run_without_chromium(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """pytest on one chromium test, in a child whose PATH holds no browser (an empty folder)."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETOPS_REQUIRE_")}
    env |= {"PATH": str(empty), **extra}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", RENDERING_TEST],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("required", [True, False], ids=["ci", "developer"])
def test_a_missing_chromium_fails_where_ci_requires_it_and_skips_elsewhere(tmp_path: Path, required: bool) -> None:
    done = run_without_chromium(tmp_path, **({"DETOPS_REQUIRE_CHROMIUM": "1"} if required else {}))
    output = done.stdout + done.stderr
    assert "chromium is not installed" in output, output[-3000:]
    if required:
        assert done.returncode != 0 and "DETOPS_REQUIRE_CHROMIUM=1 but chromium is not installed" in output
        assert "1 skipped" not in output
    else:
        assert done.returncode == 0 and "1 skipped" in output, output[-3000:]
