"""The OpenVINO tests (tests/test_openvino.py) in a pytest process of their own: OpenVINO loaded beside torch in the
suite's long-lived process died with a segmentation fault after other tests had run; alone, they pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.openvino


def test_the_openvino_tests_pass_in_their_own_process() -> None:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "DETOPS_OPENVINO_PROCESS": "1"}  # its tests are marked `openvino` too
    done = subprocess.run([sys.executable, "-m", "pytest", str(here / "test_openvino.py"), "-q", "-p",
                           "no:cacheprovider"], cwd=here.parent, env=env, capture_output=True, text=True,
                          timeout=1800)
    tail = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 7 and "skipped" not in done.stdout.splitlines()[-1], tail
