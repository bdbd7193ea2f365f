"""`detops.steplog`: a step's library output goes to its log, detops' consoles keep the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import logging, os, sys, warnings
from pathlib import Path
from detops.config import load_params
from detops.console import err_console, out_console
from detops.steplog import step_log
from detops.workspace import Workspace

ws = Workspace.at(Path(sys.argv[1]), load_params(None))
print("before the step")
with step_log(ws, "export") as path:
    print("a library's print")
    os.write(1, b"a C extension on fd 1\\n")
    os.write(2, b"a C extension on fd 2\\n")
    warnings.warn("a library's warning")
    handler = logging.StreamHandler()  # made during the step: it holds sys.stderr of the moment
    logging.getLogger("lib").addHandler(handler)
    logging.getLogger("lib").warning("a library's log line")
    out_console().print("our summary")
    err_console().print("our progress")
logging.getLogger("lib").warning("the library logs again after the step")
print("after the step")
"""


def test_library_output_goes_to_the_log_and_our_consoles_to_the_terminal(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stdout.splitlines() == ["before the step", "our summary", "after the step"]
    assert done.stderr.splitlines() == ["our progress", "the library logs again after the step"]  # no closed file
    log = (tmp_path / "reports" / "logs" / "export.log").read_text(encoding="utf-8")
    for line in ("a library's print", "a C extension on fd 1", "a C extension on fd 2", "UserWarning: a library's",
                 "a library's log line"):
        assert line in log
    assert "our" not in log


def test_extra_ranks_write_logs_of_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks of one run share reports/logs/ (another device on this machine, another node on the same volume):
    only the first writes `<step>.log`, which each would otherwise truncate at its start."""
    from detops.config import load_params
    from detops.steplog import log_path
    from detops.workspace import Workspace

    ws = Workspace.at(tmp_path, load_params(None))
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert log_path(ws, "train") == tmp_path / "reports/logs/train.log"
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's launcher on one machine
    assert log_path(ws, "train").name == "train.rank1.log"
    monkeypatch.setenv("RANK", "3")  # torchrun: the global rank
    assert log_path(ws, "train").name == "train.rank3.log"
    monkeypatch.setenv("RANK", "0")
    assert log_path(ws, "train").name == "train.log"
