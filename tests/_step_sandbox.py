"""Runs one pipeline step in a process of its own and records what it touched: `python _step_sandbox.py ROOT VERB
REPORT [OVERRIDE ...]` (tests/test_pipeline_graph.py).

A fresh interpreter per step, so every module of ours the step needs is imported by the step itself (in one
process, a module first imported by an earlier step would go unseen). Recorded, as JSON in REPORT:
- `reads`: every path under ROOT opened for reading, or listed (`open`, `os.listdir`, `os.scandir` audit events:
  every Python file open, including those by numpy, torch and PIL, goes through them);
- `sections`: the params sections the step read by attribute (`ParamsSpy`);
- `modules`: the modules in `sys.modules` when the step is done.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

READ_EVENTS = ("os.listdir", "os.scandir")


class ParamsSpy:
    """Wraps Params and records which sections a step reads by attribute. Whole-params dumps (`to_dict`,
    `flat`) are provenance (logged, hashed), not inputs, and are not counted."""

    def __init__(self, params: Any, reads: set[str]) -> None:
        self._params, self._reads = params, reads
        self._alias = {name: (info.alias or name) for name, info in type(params).model_fields.items()}

    def __getattr__(self, name: str) -> Any:
        if name in self._alias:
            self._reads.add(self._alias[name])
        return getattr(self._params, name)

    def __eq__(self, other: object) -> bool:
        return self._params == (other._params if isinstance(other, ParamsSpy) else other)

    __hash__ = None  # type: ignore[assignment]


def _opened_for_reading(mode: Any, flags: Any) -> bool:
    """`open` audit event: io.open passes a mode string, os.open None and its flags."""
    if isinstance(mode, str):
        return "r" in mode or "+" in mode
    return isinstance(flags, int) and (flags & os.O_ACCMODE) in (os.O_RDONLY, os.O_RDWR)


def main(root: Path, verb: str, report: Path, overrides: list[str]) -> None:
    prefix = str(root) + os.sep
    reads: set[str] = set()
    recording = True

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not recording or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        if event == "open" and not _opened_for_reading(*args[1:3]):
            return
        if event == "open" or event in READ_EVENTS:
            # a relative name is relative to a folder's descriptor (`dir_fd`, as shutil.rmtree opens) or to the
            # working directory, which the test keeps outside the workspace: never under ROOT by this name
            path = os.fsdecode(args[0])
            if os.path.isabs(path) and (path := os.path.normpath(path)).startswith(prefix):
                reads.add(path[len(prefix):])

    from detops.config import load_params
    from detops.steps.graph import STEPS
    from detops.workspace import Workspace

    sections: set[str] = set()
    params = load_params(root / "params.yaml", overrides)
    sys.addaudithook(hook)
    ws = Workspace(root, ParamsSpy(params, sections))  # type: ignore[arg-type]
    importlib.import_module(STEPS[verb].module).run(ws)
    recording = False
    report.write_text(json.dumps({"reads": sorted(reads), "sections": sorted(sections),
                                  "modules": sorted(sys.modules)}), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3]), sys.argv[4:])
