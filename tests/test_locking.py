"""One run at a time per workspace (`detops.locking`): a second run waits for the first, while the extra ranks of
the run that holds it (another device on this machine, another node sharing the workspace's volume) go on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detops.locking import WorkspaceBusy, workspace_lock

HOLD = """
import sys, time
from pathlib import Path
from detops.locking import workspace_lock
with workspace_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_waits_and_the_ranks_of_the_holding_run_do_not(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceBusy, match="another detops run holds the workspace"), \
                workspace_lock(tmp_path, timeout=0.3):
            pass
        for name in ("RANK", "LOCAL_RANK"):  # node 1 of a num_nodes run; device 1 on this node
            monkeypatch.setenv(name, "1")
            with workspace_lock(tmp_path, timeout=0.3):
                pass
            monkeypatch.delenv(name)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with workspace_lock(tmp_path, timeout=5):  # freed when its holder died
        pass
