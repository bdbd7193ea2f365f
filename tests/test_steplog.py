"""`detops.steplog`: a step's library output goes to its log, detops' consoles keep the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
